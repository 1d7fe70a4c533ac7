/**
 * LoRA at SD 1.5 size: merging into the weights (what denoise does) against applying the adapters
 * on the fly in every U-Net call (what PEFT/diffusers do by default), on the current adapter.
 *
 * The model is the full-size SD 1.5 U-Net and text encoder with random weights; the LoRA is a
 * typical kohya one (every attention, feed-forward and projection layer of the U-Net, the text
 * encoder's attention and MLP; rank 32 by default; `--locon` adds the U-Net's conv layers). Times:
 * reading the file, the first merge (matching, keeping the originals, one GEMM per layer),
 * switching the weight (recompute from the originals), removing it (restore). On the fly, each
 * adapted U-Net layer costs two extra GEMMs per call (x·downᵀ, then ·upᵀ added to the output) at
 * the layer's real token count for `--res` with the CFG batch of 2: those are timed on their own,
 * with the same kernels. Break-even = merge / extra per call.
 *
 * ```sh
 * deno run -A bench/lora.ts [--res 512] [--rank 32] [--locon] [--dtype f16|f32] [--model DIR]
 *   [--repeats N] [--json FILE]
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ldmTensors } from "./make_checkpoint.ts";
import { RandomWeights } from "./random_weights.ts";
import { unetFlops } from "./flops.ts";
import type { DType } from "../src/gpu/device.ts";
import { Runtime } from "../src/gpu/runtime.ts";
import { ClipTextModel } from "../src/models/clip.ts";
import { UNet2DConditionModel } from "../src/models/unet.ts";
import { linear } from "../src/ops/gemm.ts";
import type { Pipeline } from "../src/pipeline/load.ts";
import { applyLoras } from "../src/pipeline/lora.ts";
import { SD15 } from "../src/weights/configs.ts";
import { loadLora, matchLora } from "../src/weights/lora.ts";
import { mapSingleFileKeys } from "../src/weights/names.ts";
import { makeLora, modelShapes } from "../tests/pipeline/addon_files.ts";
import { openModelSource } from "../src/weights/source.ts";

/** SD 1.5's U-Net and text-encoder parameter shapes, from the LDM layout. */
function sd15Shapes(): { unet: Map<string, number[]>; text_encoder: Map<string, number[]> } {
  const shapes = new Map(ldmTensors("sd15").map((t) => [t.name, { shape: t.shape }]));
  const { entries } = mapSingleFileKeys(shapes, {
    unet: SD15.unet,
    vae: SD15.vae,
    textEncoder: SD15.text_encoder,
  });
  const out = { unet: new Map<string, number[]>(), text_encoder: new Map<string, number[]>() };
  for (const e of entries) {
    if (e.target.component !== "vae") out[e.target.component].set(e.target.key, e.shape);
  }
  return out;
}

/** Latent side of the U-Net level a key belongs to, at `res` pixels. */
function levelSide(key: string, res: number): number {
  const r = /^(down_blocks|up_blocks)\.(\d)/.exec(key);
  const level = r === null ? 3 : r[1] === "down_blocks" ? Number(r[2]) : 3 - Number(r[2]);
  return res / 8 / 2 ** level;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Options of {@link benchLora}. */
export interface BenchLoraOptions {
  /** Image size in pixels (512). */
  res?: number;
  /** LoRA rank (32). */
  rank?: number;
  /** Adapt the U-Net's conv layers too (LoCon). */
  locon?: boolean;
  /** Compute dtype (the adapter's preferred). */
  dtype?: DType;
  /** Timed repeats of the on-the-fly work (3). */
  repeats?: number;
  /** A diffusers folder whose configs and shapes replace SD 1.5's (the tiny models, for tests). */
  model?: string;
}

/**
 * Measures merging a LoRA against applying it on the fly (see the module doc).
 *
 * @example
 * ```ts
 * import { Runtime } from "../src/gpu/runtime.ts";
 * import { benchLora } from "./lora.ts";
 * const rt = await Runtime.create();
 * const report = await benchLora(rt, { model: "tests/fixtures/models/tiny-sd15", res: 64, rank: 4 });
 * console.log(report.switchMs, report.onTheFly.extraMsPerCall);
 * ```
 */
export async function benchLora(rt: Runtime, options: BenchLoraOptions = {}) {
  const res = options.res ?? 512, rank = options.rank ?? 32, repeats = options.repeats ?? 3;
  const dtype = options.dtype ?? rt.preferredDType;
  const locon = options.locon ?? false;
  const configs = options.model ? (await openModelSource(options.model)).configs : SD15;
  // 1. the model (random weights) and a kohya LoRA file for it
  const shapes = options.model ? await modelShapes(options.model) : sd15Shapes();
  const unet = UNet2DConditionModel.load(rt, {
    tensors: new RandomWeights(shapes.unet, { seed: 1, dtype }),
    config: configs.unet,
    dtype,
  });
  const textEncoder = ClipTextModel.load(rt, {
    tensors: new RandomWeights(shapes.text_encoder, { seed: 2, dtype }),
    config: configs.text_encoder,
    dtype,
  });
  await rt.sync();
  const pipe = { rt, unet, textEncoder, configs, dtype } as unknown as Pipeline;
  const { bytes } = makeLora(shapes, {
    format: "kohya",
    dtype: "F16",
    rank,
    alpha: rank / 2,
    seed: 3,
    layers: locon ? "locon" : "attention",
    magnitude: 0.01,
  });
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  await Deno.writeFile(path, bytes);

  // 2. merging: load, first merge, switch the weight, remove
  let lora!: Awaited<ReturnType<typeof loadLora>>;
  const loadMs = await time(async () => lora = await loadLora(path));
  const firstMs = await time(() => applyLoras(pipe, [{ lora, weight: 0.8 }]));
  const switchMs = await time(() => applyLoras(pipe, [{ lora, weight: 0.5 }]));
  const removeMs = await time(() => applyLoras(pipe, []));
  const info = {
    unet: new Map([...unet.params].map(([k, t]) => [k, t.shape])),
    textEncoder: new Map([...textEncoder.params].map(([k, t]) => [k, t.shape])),
    unetConfig: configs.unet,
  };
  const { targets } = matchLora(lora, info);
  let mergeFlop = 0, adapted = 0;
  for (const t of targets) {
    adapted += t.module.up.shape[0] * (t.module.down.data.length / t.module.rank);
    mergeFlop += 2 * t.module.up.data.length * (t.module.down.data.length / t.module.rank);
  }

  // 3. on the fly: the two extra GEMMs of every adapted U-Net linear per call (batch 2)
  const unetTargets = targets.filter((t) => t.component === "unet");
  const linears = unetTargets.filter((t) =>
    t.module.down.data.length === rank * t.module.down.shape[1]
  );
  const convs = unetTargets.length - linears.length;
  const work = linears.map((t) => {
    const side = levelSide(t.key, res);
    const tokens = /attn2\.to_[kv]\./.test(t.key) ? 2 * 77 : 2 * side * side;
    const out = t.module.up.shape[0], inp = t.module.down.shape[1];
    return {
      x: rt.upload(new Float32Array(tokens * inp).fill(0.01), [tokens, inp], { dtype }),
      down: rt.upload(new Float32Array(t.module.down.data), [rank, inp], { dtype }),
      up: rt.upload(new Float32Array(t.module.up.data), [out, rank], { dtype }),
      y: rt.upload(new Float32Array(tokens * out), [tokens, out], { dtype }),
      flop: 2 * tokens * rank * (inp + out),
    };
  });
  await rt.sync();
  const fly: number[] = [];
  for (let k = 0; k < repeats; k++) {
    fly.push(
      await time(async () => {
        for (const w of work) {
          const h = linear(w.x, w.down); // [tokens, r]
          const y = linear(h, w.up, { residual: w.y }); // [tokens, out]
          h.dispose();
          y.dispose();
        }
        await rt.sync();
      }),
    );
  }
  fly.sort((a, b) => a - b);
  const flyMs = fly[Math.floor(fly.length / 2)];
  const flyFlop = work.reduce((a, w) => a + w.flop, 0);
  const base = unetFlops(configs.unet, { height: res / 8, width: res / 8, batch: 2 });
  const report = {
    adapter: rt.gpu.adapterName,
    dtype,
    rank,
    locon,
    res,
    layers: targets.length,
    adaptedParams: adapted,
    fileMB: bytes.byteLength / 1e6,
    loadMs,
    firstMergeMs: firstMs,
    switchMs,
    removeMs,
    mergeGflop: mergeFlop / 1e9,
    onTheFly: {
      layers: linears.length,
      convLayersNotTimed: convs,
      extraDispatchesPerCall: 2 * linears.length,
      extraGflopPerCall: flyFlop / 1e9,
      baseUnetGflopPerCall: base.total / 1e9,
      extraMsPerCall: flyMs,
    },
    breakEvenCalls: switchMs / flyMs,
  };
  for (const w of work) for (const t of [w.x, w.down, w.up, w.y]) t.dispose();
  unet.dispose();
  textEncoder.dispose();
  await Deno.remove(path);
  return report;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      res: { type: "string", default: "512" },
      rank: { type: "string", default: "32" },
      locon: { type: "boolean", default: false },
      dtype: { type: "string" },
      model: { type: "string" },
      json: { type: "string" },
      repeats: { type: "string", default: "3" },
    },
  });
  const rt = await Runtime.create();
  const options: BenchLoraOptions = {
    res: Number(values.res),
    rank: Number(values.rank),
    locon: values.locon,
    dtype: values.dtype as DType | undefined,
    repeats: Number(values.repeats),
    model: values.model,
  };
  const what = values.model ?? "SD 1.5";
  console.log(
    `adapter: ${rt.gpu.adapterName}; ${what}, LoRA rank ${options.rank}` +
      `${options.locon ? " + LoCon convs" : ""}`,
  );
  const report = await benchLora(rt, options);
  console.log(JSON.stringify(report, null, 2));
  const fly = report.onTheFly;
  console.log(
    `merge: first ${(report.firstMergeMs / 1000).toFixed(1)} s, switch ` +
      `${(report.switchMs / 1000).toFixed(1)} s, remove ${
        (report.removeMs / 1000).toFixed(1)
      } s; ` +
      `on the fly: +${(fly.extraMsPerCall / 1000).toFixed(1)} s per U-Net call at ${report.res}² ` +
      `(+${(100 * fly.extraGflopPerCall / fly.baseUnetGflopPerCall).toFixed(1)} % FLOPs, ` +
      `+${fly.extraDispatchesPerCall} dispatches); a switch pays for itself after ` +
      `${report.breakEvenCalls.toFixed(2)} U-Net calls`,
  );
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
}

if (import.meta.main) await main();
