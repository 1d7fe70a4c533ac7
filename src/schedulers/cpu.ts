/**
 * A plain CPU executor for scheduler plans: float32 buffers, each lincomb summed in float64 and
 * rounded once, clamps exact. Tests use it, and so can anyone sampling on the CPU.
 *
 * @module
 */
import type { BufferName, Scheduler, StepPlan } from "./common.ts";

/**
 * A source of `n` standard-normal float32 values (the run's generator).
 *
 * @example
 * ```ts
 * import type { RandnFn } from "@denoise/sd/schedulers";
 * import { torchRandn } from "@denoise/sd";
 * const rng = torchRandn(0);
 * const randn: RandnFn = (n) => rng.randn([n]);
 * ```
 */
export type RandnFn = (n: number) => Float32Array;

/**
 * Runs one plan over named float32 buffers. `buffers` must hold `"sample"` and `"model_output"`;
 * the plan's destinations are written in place when present (and allocated otherwise), so owned
 * slots persist in the map between steps. Returns the buffer named by `plan.output`.
 *
 * @example
 * ```ts
 * import { runPlanCpu } from "@denoise/sd/schedulers";
 * const buffers = new Map([
 *   ["sample", new Float32Array([1, 2])],
 *   ["model_output", new Float32Array([10, 20])],
 * ]);
 * const plan = {
 *   ops: [{ op: "lincomb" as const, dst: "prev_sample", terms: [
 *     { src: "sample", coef: 1 }, { src: "model_output", coef: 0.5 },
 *   ] }],
 *   output: "prev_sample",
 * };
 * console.log(runPlanCpu(plan, buffers, (n) => new Float32Array(n))); // [6, 12]
 * ```
 */
export function runPlanCpu(
  plan: StepPlan,
  buffers: Map<BufferName, Float32Array>,
  randn: RandnFn,
): Float32Array {
  const sample = buffers.get("sample");
  if (!sample) throw new Error('runPlanCpu: the "sample" buffer is missing; put the latents there');
  const n = sample.length;
  const target = (dst: BufferName) => {
    let out = buffers.get(dst);
    if (!out || out.length !== n) {
      out = new Float32Array(n);
      buffers.set(dst, out);
    }
    return out;
  };
  for (const op of plan.ops) {
    if (op.op === "randn") {
      const z = randn(n);
      if (z.length !== n) {
        throw new Error(`runPlanCpu: randn(${n}) returned ${z.length} values; it must return ${n}`);
      }
      target(op.dst).set(z);
      continue;
    }
    if (op.op === "clamp") {
      const src = buffers.get(op.src);
      if (!src || src.length !== n) throw new Error(`runPlanCpu: buffer "${op.src}" is missing`);
      const out = target(op.dst);
      for (let i = 0; i < n; i++) out[i] = Math.min(op.max, Math.max(op.min, src[i]));
      continue;
    }
    const srcs = op.terms.map(({ src }) => {
      const b = buffers.get(src);
      if (!b || b.length !== n) {
        throw new Error(
          `runPlanCpu: buffer "${src}" is ${b ? `${b.length} long, not ${n}` : "missing"}; ` +
            'provide "sample" and "model_output" of one length and keep the map between steps',
        );
      }
      return b;
    });
    const coefs = op.terms.map(({ coef }) => coef);
    const out = target(op.dst);
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let k = 0; k < srcs.length; k++) acc += coefs[k] * srcs[k][i];
      out[i] = acc;
    }
  }
  const result = buffers.get(plan.output);
  if (!result) throw new Error(`runPlanCpu: the plan never wrote its output "${plan.output}"`);
  return result;
}

/**
 * Options of {@link sampleCpu}.
 *
 * @example
 * ```ts
 * import type { SampleCpuOptions } from "@denoise/sd/schedulers";
 * const o: SampleCpuOptions = {
 *   model: (x) => new Float32Array(x.length),
 *   randn: (n) => new Float32Array(n),
 * };
 * ```
 */
export interface SampleCpuOptions {
  /** The guided U-Net output for the scaled latents at `timestep` (call `index`). */
  model: (input: Float32Array, timestep: number, index: number) => Float32Array;
  /** The generator for the schedulers' in-step noise. */
  randn: RandnFn;
  /**
   * Called with the latents after each call (a live buffer: copy it to keep it, or change it in
   * place, as inpainting's blend does).
   */
  onStep?: (index: number, latents: Float32Array) => void;
  /** Start at this call (img2img's begin index; the scheduler is reset to it). Default 0. */
  begin?: number;
  /** The start latents as they are (img2img's noised image latents), instead of noise·σ_init. */
  start?: Float32Array;
}

/**
 * Runs a whole sampling loop on the CPU: latents = `noise`·`initNoiseSigma` (or `start`), then for
 * each call from `begin` the model sees `latents·scaleModelInput(i)` and the plan updates the
 * latents. Returns the final latents. The scheduler must be fresh (or `reset()`).
 *
 * @example
 * ```ts
 * import { createScheduler } from "@denoise/sd/schedulers";
 * import { sampleCpu } from "@denoise/sd/schedulers";
 * const s = createScheduler("DDIM", { clip_sample: false }, { steps: 2 });
 * const out = sampleCpu(s, new Float32Array(16).fill(1), {
 *   model: (x) => new Float32Array(x.length), // a U-Net that predicts zero noise
 *   randn: (n) => new Float32Array(n),
 * });
 * ```
 */
export function sampleCpu(
  scheduler: Scheduler,
  noise: Float32Array,
  options: SampleCpuOptions,
): Float32Array {
  const n = noise.length;
  const buffers = new Map<BufferName, Float32Array>();
  const begin = options.begin ?? 0;
  if (begin !== 0) scheduler.reset(begin);
  buffers.set("sample", options.start?.slice() ?? noise.map((v) => v * scheduler.initNoiseSigma));
  for (let i = begin; i < scheduler.timesteps.length; i++) {
    const latents = buffers.get("sample")!;
    const scale = scheduler.scaleModelInput(i);
    const output = options.model(latents.map((v) => v * scale), scheduler.timesteps[i], i);
    if (output.length !== n) {
      throw new Error(`sampleCpu: the model returned ${output.length} values for ${n} latents`);
    }
    buffers.set("model_output", output);
    const plan = scheduler.step(i);
    const next = runPlanCpu(plan, buffers, options.randn);
    buffers.set(plan.output, latents); // swap, as a GPU executor would
    buffers.set("sample", next);
    options.onStep?.(i, next);
  }
  return buffers.get("sample")!;
}
