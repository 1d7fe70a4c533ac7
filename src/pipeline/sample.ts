/**
 * `sampleLatents`: the denoising loop. The scheduler (pure TypeScript) hands out scalars and a plan
 * of linear combinations; the U-Net call, classifier-free guidance and the latent update run on the
 * GPU. Yields after every step so callers can time, preview or stop.
 *
 * Host and GPU overlap: step i+1 is recorded while the GPU runs step i and submitted when the GPU
 * is (predicted to be) done with it; the wait sleeps on a timer (`Runtime.idle`), so the event
 * loop runs during every step after the first — timers fire, and an abort stops the loop before
 * the next U-Net call reaches the GPU. Nothing here reads GPU data back.
 *
 * @module
 */
import type { Runtime } from "../gpu/runtime.ts";
import { bindScope, chain, trackTensor } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { RgbaImage } from "../io/png.ts";
import { binary, lincomb, unary } from "../ops/elementwise.ts";
import { batchConcat, batchSlice, concatChannels } from "../ops/layout.ts";
import { type Rng, torchRandn } from "../rng/torch_randn.ts";
import {
  createScheduler,
  type Scheduler,
  type SchedulerConfig,
  type SigmaScheduleName,
  type StepPlan,
} from "../schedulers/mod.ts";
import type { UNetForwardOptions } from "../models/unet.ts";
import {
  type Conditioning,
  defaultStrength,
  prepareConditioning,
  strengthSchedule,
} from "./condition.ts";
import type { PromptEmbeds } from "./encode.ts";
import { latentFactor, type Pipeline } from "./load.ts";
import { syncLoras } from "./lora.ts";

/** Options for {@link sampleLatents}. */
export interface SampleOptions {
  /** Denoising steps (default 20). */
  steps?: number;
  /** Classifier-free guidance scale (default 7.5); ≤ 1 runs the cond batch only. */
  guidance?: number;
  /**
   * The sampler: a registry name (`"euler_a"`, `"dpmpp_2m"`, … — see `SAMPLERS`), an A1111 name
   * ("Euler a", "DPM++ 2M Karras"), a stable-diffusion.cpp name ("dpm++2m"), a diffusers class
   * name, or a diffusers scheduler config object (`{ _class_name, ...config }`, what
   * `scheduler_config.json` holds; overlaid on the model's config as diffusers' `from_config`).
   * Default: the model's own scheduler.
   */
  scheduler?: string | SchedulerConfig;
  /** Karras noise levels (the samplers whose registry row lists `"karras"`). */
  karras?: boolean;
  /** The σ schedule of a sigma sampler: `"discrete"`, `"karras"` or `"exponential"` (sd.cpp's `--schedule`). */
  schedule?: SigmaScheduleName;
  /** DDIM's η. */
  eta?: number;
  /** Image width in pixels (default: the U-Net's sample size × the VAE's latent factor). */
  width?: number;
  /** Image height in pixels. */
  height?: number;
  /** The seed of the default rng, `torchRandn(seed)` (default: random). */
  seed?: number | bigint;
  /** The Gaussian source: every draw (initial latents first, then each sampler draw) goes through it. */
  rng?: Rng;
  /** Start from these latents `[1, 4, h, w]` instead of drawing them (not scaled by init sigma). */
  latents?: Float32Array;
  /**
   * img2img / inpainting: the init image, RGBA as `decodePng` returns it, of the run's size (the
   * default size becomes the image's). Needs the VAE encoder (`loadPipeline(…, { vaeEncoder: true })`).
   */
  image?: RgbaImage;
  /** Inpainting: the mask, same size as `image`; white (≥ 50 % grey) is repainted. */
  mask?: RgbaImage;
  /**
   * How much of the schedule to rerun from the image, (0, 1]: `int(steps·strength)` steps run
   * (default 0.8 for img2img, 1 for inpainting, as diffusers).
   */
  strength?: number;
  /**
   * Stops the loop cleanly (the generator returns) and frees its buffers; the latents yielded last
   * stay valid.
   */
  signal?: AbortSignal;
  /** Options passed to every U-Net call (for example the `attentionProbs` hook of the notebooks). */
  unet?: Omit<UNetForwardOptions, "timestep" | "encoderHiddenStates">;
}

/** What the sampler yields after each step. */
export interface SampleStep {
  /** The U-Net call, from 0 (two-call samplers make two per step; img2img starts late). */
  index: number;
  /** How many U-Net calls the run makes in all. */
  total: number;
  /** The timestep the U-Net saw. */
  timestep: number;
  /**
   * Steps finished after this U-Net call, counted as diffusers' progress bar (and A1111) count
   * them: PNDM's extra first call and the first call of a two-call (Heun, DPM2) step do not finish
   * a step. See {@link stepCounts}.
   */
  step: number;
  /** The steps the run makes in all (what `steps` asked for). */
  steps: number;
  /**
   * The latents after this step, f32 `[1, C, h, w]`. Valid until the loop takes its next step; the
   * last latents yielded (after the final step, a `break`, an abort or an error) stay valid and
   * belong to the caller: free them with `dispose()` or `using` (inside `rt.scope`, the scope does).
   * The step is yielded once it is queued on the GPU: reading the latents waits for it.
   */
  latents: Tensor;
}

/**
 * The pixel sizes a pipeline accepts are multiples of this: the VAE's latent factor (8 for SD, as
 * diffusers). The U-Net takes any latent size: its down path rounds odd sides up and its up path
 * cuts back to the skips' sizes (diffusers' `forward_upsample_size`), so 136×72 or 768×432 work.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline, sizeFactor } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * console.log(sizeFactor(pipe)); // 8
 * ```
 */
export function sizeFactor(pipe: Pick<Pipeline, "configs">): number {
  return latentFactor(pipe);
}

/**
 * Builds the scheduler a run uses: the model's own, unless `options.scheduler` names another or
 * gives a diffusers config object.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline, schedulerFor } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * const s = schedulerFor(pipe, { steps: 20, scheduler: "DPM++ 2M Karras" });
 * console.log(s.timesteps.length); // 20
 * ```
 */
export function schedulerFor(
  pipe: Pick<Pipeline, "schedulerConfig">,
  options: SampleOptions,
): Scheduler {
  let config = pipe.schedulerConfig;
  let name = options.scheduler;
  if (name !== undefined && typeof name === "object") {
    if (name === null || typeof name._class_name !== "string") {
      throw new TypeError(
        "scheduler: a config object needs _class_name (e.g. { _class_name: " +
          '"EulerDiscreteScheduler", ... }, what scheduler_config.json holds)',
      );
    }
    config = { ...config, ...name };
    name = name._class_name;
  }
  name ??= String(config._class_name ?? "PNDMScheduler");
  return createScheduler(name as string, config, {
    steps: options.steps ?? 20,
    eta: options.eta,
    karras: options.karras,
    schedule: options.schedule,
  });
}

/**
 * Runs the denoising loop, yielding `{ index, timestep, latents }` after every U-Net call. With
 * `image` it is img2img (the image encoded, noised to the begin index `strength` gives, the rest
 * of the schedule run), with `image` and `mask` inpainting (a 9-channel inpainting U-Net gets the
 * mask and the masked image's latents; a regular one has the kept region blended back after every
 * call), all as diffusers' pipelines with their generator order.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline } from "@denoise/sd";
 * import { encodePrompt } from "@denoise/sd";
 * import { sampleLatents } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * const embeds = await encodePrompt(pipe, "a photo of an astronaut riding a horse on mars");
 * let latents;
 * for await (const step of sampleLatents(pipe, embeds, { steps: 4, seed: 0 })) {
 *   latents = step.latents;
 * }
 * ```
 */
export async function* sampleLatents(
  pipe: Pipeline,
  embeds: PromptEmbeds,
  options: SampleOptions = {},
): AsyncGenerator<SampleStep, void, undefined> {
  const rt = pipe.rt;
  const { height, width } = checkSize(pipe, options);
  const guidance = options.guidance ?? 7.5;
  if (!Number.isFinite(guidance)) throw new Error(`guidance must be a number, got ${guidance}`);
  const cfg = guidance > 1;
  const scheduler = schedulerFor(pipe, options);
  const rng = options.rng ?? torchRandn(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  const f = latentFactor(pipe);
  const shape = [1, pipe.configs.vae.latent_channels, height / f, width / f];
  const n = shape.reduce((a, b) => a * b, 1);
  if (options.latents && options.latents.length !== n) {
    throw new Error(`latents have ${options.latents.length} values; [${shape}] needs ${n}`);
  }
  checkConditioning(pipe, options, { scheduler, shape });
  if (options.image && !pipe.vae.encoder) {
    throw new Error(
      "img2img and inpainting encode the image with the VAE encoder: load the pipeline with " +
        "{ vaeEncoder: true }",
    );
  }
  if (embeds.loras !== undefined) await syncLoras(pipe, embeds.loras); // the prompt's LoRA set
  const unet = bindHooks(options.unet);
  // The loop's own tensors are kept out of the caller's scopes and freed here; the last latents
  // it yields are handed to the caller (and to the caller's scope, if any) when the loop ends.
  const state = new Map<string, Tensor>();
  let latents: Tensor | undefined;
  let context: Tensor | undefined;
  let yielded: Tensor | undefined;
  const kind = `unet step [${cfg ? 2 : 1},${shape.slice(1)}]`;
  let cond: Conditioning | undefined;
  try {
    // 1. start latents: noise · init sigma, the caller's, or the image's (img2img, inpainting)
    if (options.image) {
      cond = rt.keep(prepareConditioning(pipe, scheduler, {
        image: options.image,
        mask: options.mask,
        strength: defaultStrength(options),
        steps: options.steps ?? 20,
        rng,
        shape,
      }));
      latents = cond.latents;
    } else {
      latents = rt.keep(
        options.latents
          ? rt.upload(options.latents, shape)
          : rt.scope(() =>
            lincomb([rt.upload(rng.randn(shape), shape)], [scheduler.initNoiseSigma])
          ),
      ); // [1, C, h, w]
    }
    // 2. the text context: [2, L, D] (uncond, cond) with guidance, else [1, L, D]
    context = rt.keep(
      cfg
        ? batchConcat([embeds.uncond, embeds.cond])
        : batchSlice(embeds.cond, { start: 0, count: 1 }),
    );
    const calls = scheduler.timesteps.length, begin = scheduler.beginIndex;
    // img2img runs steps − begin/order of them, as diffusers' progress bar counts
    const runSteps = (options.steps ?? 20) - Math.floor(begin / scheduler.order);
    const counts = stepCounts(calls - begin, runSteps, scheduler.order);
    for (let i = begin; i < calls; i++) {
      if (options.signal?.aborted) return;
      const t = scheduler.timesteps[i];
      const sample: Tensor = latents;
      const next = rt.keep(rt.scope(() => {
        const x = chain(
          // 3. model input: latents · scale in the model dtype (+ mask and masked latents), doubled
          () => modelInput(pipe, sample, { scale: scheduler.scaleModelInput(i), cond, cfg }),
          // 4. U-Net; guidance u + g·(c − u) is folded into the scheduler's lincombs below
          (x) => pipe.unet.forward(x, { ...unet, timestep: t, encoderHiddenStates: context! }), // [B, C, h, w]
        );
        const guided: [Tensor, number][] = cfg
          ? [
            [batchSlice(x, { start: 0, count: 1 }), 1 - guidance], // [1, C, h, w] uncond
            [batchSlice(x, { start: 1, count: 1 }), guidance], // [1, C, h, w] cond
          ]
          : [[x, 1]];
        // 5. scheduler update on the GPU, each read of model_output a read of u and c
        state.set("sample", sample);
        let updated: Tensor;
        try {
          updated = runPlan(rt, scheduler.step(i), { state, rng, shape, modelOutput: guided });
        } finally {
          state.delete("sample");
        }
        //    inpainting with a regular U-Net: the kept region back at the next call's noise level
        return cond?.blendMask ? blendKnown(updated, cond, scheduler.noiseCoefs(i + 1)) : updated;
      }));
      // 6. hand the step to the GPU once it has (probably) finished the previous one, which ran
      //    while this one was recorded; the wait sleeps on a timer, so timers and an abort run
      if (i > begin) await rt.idle(kind, options.signal);
      if (options.signal?.aborted) {
        rt.discard(); // this step's U-Net call never reaches the GPU
        next.dispose();
        return; // `latents` is still the step yielded last
      }
      latents = next;
      await rt.flush(`step ${i}`);
      sample.dispose(); // the latents yielded last are valid until the next step
      yielded = latents;
      yield {
        index: i - begin,
        total: calls - begin,
        timestep: t,
        step: counts[i - begin],
        steps: counts[counts.length - 1],
        latents,
      };
    }
  } finally {
    for (const t of state.values()) t.dispose();
    context?.dispose();
    cond?.dispose();
    if (latents && latents === yielded) trackTensor(latents); // the caller's now
    else latents?.dispose();
  }
}

/**
 * The image options against each other and the model: mask and strength need an image; image
 * and mask are RGBA of the run's size; a 9-channel U-Net needs a mask; the strength leaves at
 * least one step.
 */
function checkConditioning(
  pipe: Pick<Pipeline, "configs">,
  options: SampleOptions,
  run: { scheduler: Scheduler; shape: number[] },
): void {
  const unetIn = pipe.configs.unet.in_channels;
  const latentIn = pipe.configs.vae.latent_channels;
  if (options.mask && !options.image) {
    throw new Error("mask needs image: pass the init image too ({ image, mask })");
  }
  if (options.strength !== undefined && !options.image) {
    throw new Error("strength applies to img2img and inpainting: pass { image } too");
  }
  if (unetIn !== latentIn && !options.mask) {
    throw new Error(
      `this U-Net takes ${unetIn} input channels (an inpainting model): pass { image, mask }`,
    );
  }
  if (!options.image) return;
  if (options.latents) throw new Error("pass either latents or image, not both");
  const f = latentFactor(pipe);
  const [h, w] = [run.shape[2] * f, run.shape[3] * f];
  for (const [name, img] of [["image", options.image], ["mask", options.mask]] as const) {
    if (!img) continue;
    if (!img.data || img.data.length !== img.width * img.height * 4) {
      throw new TypeError(`${name} must be an RGBA image as decodePng returns it`);
    }
    if (img.width !== w || img.height !== h) {
      throw new Error(
        `${name} is ${img.width}×${img.height} but the run is ${w}×${h}: resize it first ` +
          `(resizeImage, gen.ts --resize) or pass width/height of the image`,
      );
    }
  }
  strengthSchedule(options.steps ?? 20, defaultStrength(options), run.scheduler.order);
}

/** `latents·scale` in the U-Net dtype, with the 9-channel extras (a scope frees the parts). */
function modelInput(
  pipe: Pipeline,
  latents: Tensor,
  o: { scale: number; cond?: Conditioning; cfg: boolean },
): Tensor {
  const rt = pipe.rt;
  return rt.scope(() => {
    const scaled = lincomb([latents], [o.scale], { out: rt.empty(latents.shape, pipe.dtype) });
    const x = o.cond?.unetExtra ? concatChannels(scaled, o.cond.unetExtra) : scaled; // [1, C, h, w]
    return o.cfg ? batchConcat([x, x]) : x; // [B, C, h, w]
  });
}

/**
 * diffusers' 4-channel inpainting blend: `(1 − m)·known + m·latents` with `known` the image
 * latents noised to the next call (`a·image + b·noise`), computed as `known + m·(latents − known)`.
 */
function blendKnown(latents: Tensor, cond: Conditioning, [a, b]: [number, number]): Tensor {
  const rt = latents.rt;
  return rt.scope(() => {
    const known = lincomb([cond.imageLatents!, cond.noise!], [a, b], {
      out: rt.empty(latents.shape),
    });
    const diff = lincomb([latents, known], [1, -1], { out: rt.empty(latents.shape) });
    const kept = binary(diff, cond.blendMask!, { op: "mul" }); // m·(latents − known)
    return lincomb([known, kept], [1, 1], { out: rt.empty(latents.shape) });
  });
}

/**
 * How many steps are finished after each of `calls` U-Net calls of a run of `steps` steps with
 * `order` calls per step, as diffusers' pipelines advance their progress bar: after the last call,
 * and after every `order`-th call past the warm-up (`calls − steps·order`, PNDM's repeated first
 * call). PNDM with 4 steps makes 5 calls and counts 4, as A1111's PLMS does.
 *
 * @example
 * ```ts
 * import { stepCounts } from "./sample.ts";
 * console.log(stepCounts(5, 4, 1)); // [0, 1, 2, 3, 4]: PNDM
 * console.log(stepCounts(7, 4, 2)); // [0, 1, 1, 2, 2, 3, 4]: Heun
 * ```
 */
export function stepCounts(calls: number, steps: number, order: number): number[] {
  const warmup = calls - steps * order;
  const counts: number[] = [];
  let done = 0;
  for (let i = 0; i < calls; i++) {
    if (i === calls - 1 || (i + 1 > warmup && (i + 1) % order === 0)) done++;
    counts.push(done);
  }
  return counts;
}

/** The U-Net hooks of `options.unet`, bound to the caller's scope (they run inside the loop's). */
function bindHooks(unet: SampleOptions["unet"]): SampleOptions["unet"] {
  if (!unet) return unet;
  const { capture, attentionProbs } = unet;
  return {
    ...unet,
    capture: capture && bindScope(capture),
    attentionProbs: attentionProbs && bindScope(attentionProbs),
  };
}

/** What {@link checkSampleOptions} needs of a pipeline: its configs and the GPU's limits. */
export type SampleTarget = Pick<Pipeline, "configs" | "schedulerConfig"> & {
  readonly rt: {
    readonly gpu: { readonly limits: Pick<GPUSupportedLimits, "maxStorageBufferBindingSize"> };
  };
};

/**
 * Checks what {@link sampleLatents} would refuse — the size against the model's factors and the
 * GPU's limits, the sampler and its options, the steps, the guidance — without running anything,
 * so a caller can refuse bad input before loading weights (pass `inspectModel`'s configs and a
 * runtime). Returns the size that will be used.
 *
 * @example
 * ```ts no-run
 * import { checkSampleOptions, inspectModel } from "@denoise/sd";
 * import { Runtime } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * const info = await inspectModel("tests/fixtures/models/tiny-sd15");
 * checkSampleOptions({ ...info, rt }, { width: 64, height: 64, steps: 20 });
 * ```
 */
export function checkSampleOptions(
  pipe: SampleTarget,
  options: SampleOptions,
): { height: number; width: number } {
  const size = checkSize(pipe, options);
  const guidance = options.guidance ?? 7.5;
  if (!Number.isFinite(guidance)) throw new Error(`guidance must be a number, got ${guidance}`);
  const scheduler = schedulerFor(pipe, options);
  const f = latentFactor(pipe);
  const shape = [1, pipe.configs.vae.latent_channels, size.height / f, size.width / f];
  checkConditioning(pipe, options, { scheduler, shape });
  return size;
}

function checkSize(pipe: SampleTarget, options: SampleOptions): { height: number; width: number } {
  const latent = latentFactor(pipe);
  const def = Number(pipe.configs.unet.sample_size ?? 64) * latent;
  const width = options.width ?? options.image?.width ?? def;
  const height = options.height ?? options.image?.height ?? def;
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`${name} must be a positive whole number, got ${v}`);
    }
    if (v % latent !== 0) {
      const lo = Math.max(latent, v - (v % latent));
      throw new Error(
        `${name} ${v} is not a multiple of ${latent} (the VAE's latent factor); try ${lo}`,
      );
    }
  }
  const maxBinding = pipe.rt.gpu.limits.maxStorageBufferBindingSize;
  const c0 = pipe.configs.unet.block_out_channels[0];
  const biggest = 2 * c0 * (height / latent) * (width / latent) * 4 * 2; // GEGLU inner, f32, batch 2
  if (biggest > maxBinding) {
    throw new Error(
      `${width}×${height} needs buffers of ${biggest} bytes, beyond this GPU's ` +
        `maxStorageBufferBindingSize (${maxBinding}); use a smaller size`,
    );
  }
  return { height, width };
}

/**
 * Runs a scheduler plan on GPU tensors: `randn` draws through `rng`, `lincomb` runs in f32 (in
 * chunks of four terms, the kernel's width), `clamp` clamps. Returns the new latents;
 * scheduler-owned buffers stay in `state`.
 *
 * @example
 * ```ts
 * import { torchRandn } from "@denoise/sd";
 * import { Runtime } from "@denoise/sd/gpu";
 * import { createScheduler } from "@denoise/sd/schedulers";
 * import { runPlanGpu } from "@denoise/sd/pipeline";
 * const rt = await Runtime.create();
 * const s = createScheduler("euler", {}, { steps: 4 });
 * const state = new Map([
 *   ["sample", rt.upload(new Float32Array(16), [1, 4, 2, 2])],
 *   ["model_output", rt.upload(new Float32Array(16), [1, 4, 2, 2])],
 * ]);
 * const next = runPlanGpu(rt, s.step(0), state, torchRandn(0), [1, 4, 2, 2]);
 * ```
 */
export function runPlanGpu(
  rt: Runtime,
  plan: StepPlan,
  state: Map<string, Tensor>,
  rng: Rng,
  shape: number[],
): Tensor {
  return runPlan(rt, plan, { state, rng, shape });
}

/**
 * {@link runPlanGpu}, with `model_output` given as terms Σ coef·x when `modelOutput` is set (the
 * CFG combine `(1 − g)·u + g·c` of the U-Net's two halves): each lincomb reading it reads the
 * terms instead, so the combine costs no dispatch of its own.
 */
function runPlan(
  rt: Runtime,
  plan: StepPlan,
  o: { state: Map<string, Tensor>; rng: Rng; shape: number[]; modelOutput?: [Tensor, number][] },
): Tensor {
  const { state, rng, shape, modelOutput } = o;
  const terms = (src: string, coef: number): [Tensor, number][] =>
    src === "model_output" && modelOutput
      ? modelOutput.map(([t, c]) => [t, c * coef])
      : [[stateGet(state, src), coef]];
  const produced: string[] = [];
  for (const op of plan.ops) {
    let value: Tensor;
    if (op.op === "randn") {
      value = rt.upload(rng.randn(shape), shape);
    } else if (op.op === "clamp") {
      using whole = op.src === "model_output" && modelOutput
        ? lincombWide(rt, modelOutput, shape)
        : undefined;
      value = unary(whole ?? stateGet(state, op.src), "clamp", {
        alpha: op.min,
        beta: op.max,
        out: rt.empty(shape, "f32"),
      });
    } else {
      value = lincombWide(rt, op.terms.flatMap((x) => terms(x.src, x.coef)), shape);
    }
    const old = state.get(op.dst);
    if (old && op.dst !== "sample" && op.dst !== "model_output") old.dispose();
    state.set(op.dst, rt.keep(value)); // scheduler slots live across steps
    produced.push(op.dst);
  }
  const out = state.get(plan.output);
  if (!out) throw new Error(`denoise: scheduler plan has no "${plan.output}"`);
  state.delete(plan.output);
  // one-off values (noise, prev_sample) are freed; scheduler slots stay for the next step
  for (const name of ["noise", "prev_sample"]) {
    if (name !== plan.output && produced.includes(name)) {
      state.get(name)?.dispose();
      state.delete(name);
    }
  }
  return out;
}

function stateGet(state: Map<string, Tensor>, name: string): Tensor {
  const t = state.get(name);
  if (!t) throw new Error(`denoise: scheduler plan reads "${name}" before writing it`);
  return t;
}

/** Σ coef·x over any number of terms, four at a time (the lincomb kernel's width), in f32. */
function lincombWide(rt: Runtime, terms: [Tensor, number][], shape: number[]): Tensor {
  let acc = lincomb(terms.slice(0, 4).map((t) => t[0]), terms.slice(0, 4).map((t) => t[1]), {
    out: rt.empty(shape, "f32"),
  });
  for (let k = 4; k < terms.length; k += 3) {
    const chunk = terms.slice(k, k + 3);
    const next = lincomb([acc, ...chunk.map((t) => t[0])], [1, ...chunk.map((t) => t[1])], {
      out: rt.empty(shape, "f32"),
    });
    acc.dispose();
    acc = next;
  }
  return acc;
}
