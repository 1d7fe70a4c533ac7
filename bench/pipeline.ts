/**
 * The end-to-end benchmark: load a model, then (per run) encode the prompt, denoise N steps,
 * decode with the VAE and write a PNG, timing each stage. The first run compiles the GPU
 * pipelines (cold); later runs are warm. In the `--runs` runs each step is synced (`rt.sync()`)
 * so its time is the GPU's, which serialises host recording with GPU work: their denoise total is
 * an upper bound. The `--free-runs` runs after them sample as `generate()` does, recording step
 * i+1 while the GPU runs step i: their total is the end-to-end time a user sees, and their "step"
 * is the interval between the sampler's yields.
 *
 * usage: deno run -A bench/pipeline.ts [--model PATH] [--steps N] [--res PX] [--runs N]
 *   [--free-runs N] [--cfg X] [--seed N] [--dtype auto|f16|f32] [--prompt TEXT] [--out FILE.png]
 *   [--json FILE] [--tokenizer PATH (for single-file checkpoints)]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writePngFile } from "../src/io/png.ts";
import { decodeLatents } from "../src/pipeline/decode.ts";
import { encodePrompt } from "../src/pipeline/encode.ts";
import { loadPipeline } from "../src/pipeline/load.ts";
import { sampleLatents } from "../src/pipeline/sample.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { unetFlops, vaeDecodeFlops } from "./flops.ts";

/** The tiny test model the benchmark uses by default. */
export const TINY_MODEL: string = decodeURIComponent(
  new URL("../tests/fixtures/models/tiny-sd15", import.meta.url).pathname,
);

/** Options of {@link benchPipeline}. */
export interface PipelineBenchOptions {
  /** A diffusers folder or single-file checkpoint (default: the tiny-sd15 fixture). */
  model?: string;
  /** Denoising steps (default 20). */
  steps?: number;
  /** Image size in pixels (default: the model's). */
  res?: number;
  /** Runs after loading, each step synced (default 2: one cold, one warm). */
  runs?: number;
  /** Runs after those with no per-step sync, host and GPU overlapping (default 0). */
  freeRuns?: number;
  /** Guidance scale (default 7.5; ≤ 1 runs batch 1). */
  cfg?: number;
  /** Noise seed (default 0). */
  seed?: number;
  /** Compute dtype (default auto). */
  dtype?: "auto" | "f16" | "f32";
  /** The prompt. */
  prompt?: string;
  /** Where the PNG goes (default: a temporary file, removed afterwards). */
  out?: string;
  /** A tokenizer folder or CLIP merges file, for single-file checkpoints. */
  tokenizer?: string;
}

/** Stage times of one run, in milliseconds. */
export interface PipelineRun {
  /** Prompt and negative prompt through the text encoder. */
  encodeMs: number;
  /** All denoising steps. */
  denoiseMs: number;
  /** Each U-Net step, synced (a free run: the interval between yields); PNDM makes one more call. */
  stepMs: number[];
  /** U-Net steps the sampler announced (`SampleStep.total`). */
  calls: number;
  /** The median step. */
  stepMedianMs: number;
  /** VAE decode, read back and conversion to RGBA. */
  decodeMs: number;
  /** PNG encoding and writing. */
  pngMs: number;
  /** Encode + denoise + decode + PNG. */
  totalMs: number;
  /** Whether each step was synced (false: a free run, host and GPU overlapping). */
  synced: boolean;
}

/** Everything the pipeline benchmark measured. */
export interface PipelineReport {
  /** The adapter's name. */
  adapter: string;
  /** ISO date of the run. */
  date: string;
  /** The command line. */
  command: string;
  /** The model path. */
  model: string;
  /** Compute dtype. */
  dtype: string;
  /** Image size. */
  res: number;
  /** Denoising steps. */
  steps: number;
  /** Guidance scale (batch 2 when > 1). */
  cfg: number;
  /** Seconds to load the model onto the GPU. */
  loadSeconds: number;
  /** FLOPs of one denoising step and of the decode. */
  flops: { step: number; decode: number };
  /** One entry per run; the first is cold. */
  runs: PipelineRun[];
  /** Peak pool bytes over the runs (weights included). */
  peakBytes: number;
  /** The PNG's path when kept. */
  png?: string;
}

function median(v: readonly number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

/**
 * Loads the model and times `runs` text-to-image generations stage by stage.
 *
 * @example
 * ```ts
 * import { benchPipeline } from "./pipeline.ts";
 * const report = await benchPipeline({ steps: 4, runs: 1 });
 * console.log(report.runs[0].totalMs);
 * ```
 */
export async function benchPipeline(options: PipelineBenchOptions = {}): Promise<PipelineReport> {
  const model = options.model ?? TINY_MODEL;
  const steps = options.steps ?? 20;
  const runs = options.runs ?? 2;
  const freeRuns = options.freeRuns ?? 0;
  const counts = [["steps", steps, 1], ["runs", runs, 1], ["free-runs", freeRuns, 0]] as const;
  for (const [name, v, min] of counts) {
    if (!Number.isInteger(v) || v < min) {
      throw new Error(`--${name} must be a whole number ≥ ${min}, got ${v}`);
    }
  }
  const cfg = options.cfg ?? 7.5;
  const t0 = performance.now();
  const pipe = await loadPipeline(model, {
    dtype: options.dtype ?? "auto",
    tokenizer: options.tokenizer,
  });
  const rt = pipe.rt;
  try {
    await rt.sync();
    const loadSeconds = (performance.now() - t0) / 1000;
    const res = options.res ?? Number(pipe.configs.unet.sample_size ?? 64) * 8;
    const latent = { height: res / 8, width: res / 8 };
    const flops = {
      step: unetFlops(pipe.configs.unet, { ...latent, batch: cfg > 1 ? 2 : 1 }).total,
      decode: vaeDecodeFlops(pipe.configs.vae, latent).total,
    };
    const temp = options.out ? undefined : await Deno.makeTempFile({ suffix: ".png" });
    const out = options.out ?? temp!;
    rt.pool.resetPeak();
    const results: PipelineRun[] = [];
    try {
      for (let r = 0; r < runs + freeRuns; r++) {
        results.push(await runOnce(out, { ...options, steps, cfg, res }, r < runs));
      }
    } finally {
      if (temp) await Deno.remove(temp).catch(() => {});
    }
    return {
      adapter: rt.gpu.adapterName,
      date: new Date().toISOString(),
      command: "",
      model,
      dtype: pipe.dtype,
      res,
      steps,
      cfg,
      loadSeconds,
      flops,
      runs: results,
      peakBytes: rt.pool.stats().peakBytes,
      ...(options.out ? { png: options.out } : {}),
    };
  } finally {
    pipe.dispose();
  }

  async function runOnce(
    path: string,
    o: PipelineBenchOptions & { steps: number; cfg: number; res: number },
    synced: boolean,
  ): Promise<PipelineRun> {
    const a = performance.now();
    const embeds = await encodePrompt(pipe, o.prompt ?? "a photo of an astronaut riding a horse");
    await rt.sync();
    const b = performance.now();
    const stepMs: number[] = [];
    let last: Tensor | undefined;
    let calls = 0;
    let s0 = performance.now();
    for await (
      const s of sampleLatents(pipe, embeds, {
        steps: o.steps,
        guidance: o.cfg,
        seed: o.seed ?? 0,
        width: o.res,
        height: o.res,
      })
    ) {
      if (synced) await rt.sync();
      const now = performance.now();
      stepMs.push(now - s0);
      s0 = now;
      last = s.latents;
      calls = s.total;
    }
    embeds.dispose();
    const c = performance.now();
    const image = await decodeLatents(pipe, last!);
    last!.dispose();
    const d = performance.now();
    await writePngFile(path, image, { overwrite: true });
    const e = performance.now();
    return {
      encodeMs: b - a,
      denoiseMs: c - b,
      stepMs,
      calls,
      stepMedianMs: median(stepMs),
      decodeMs: d - c,
      pngMs: e - d,
      totalMs: e - a,
      synced,
    };
  }
}

/**
 * The report as text: load time, then each run's stages with effective TFLOP/s.
 *
 * @example
 * ```ts
 * import { benchPipeline, formatPipelineReport } from "./pipeline.ts";
 * console.log(formatPipelineReport(await benchPipeline({ steps: 2, runs: 1 })));
 * ```
 */
export function formatPipelineReport(r: PipelineReport): string {
  const f = (v: number) => v.toFixed(v >= 100 ? 0 : 1);
  const tf = (flop: number, ms: number) => (flop / (ms * 1e9)).toPrecision(3);
  const lines = [
    `pipeline: ${r.model} · ${r.res}² · ${r.steps} steps · cfg ${r.cfg} · ${r.dtype} · ` +
    `${r.adapter} · ${r.date}`,
    `load: ${r.loadSeconds.toFixed(2)} s · FLOPs: step ${
      (r.flops.step / 1e12).toFixed(4)
    } TFLOP, ` +
    `decode ${(r.flops.decode / 1e12).toFixed(4)} TFLOP · peak GPU memory ` +
    `${(r.peakBytes / 1e9).toFixed(3)} GB`,
  ];
  const head = [
    "run",
    "encode ms",
    "denoise ms",
    "step ms (median)",
    "decode ms",
    "png ms",
    "total ms",
  ];
  const rows = r.runs.map((run, i) => [
    `${i + 1}${i === 0 ? " (cold)" : run.synced ? "" : " (free)"}`,
    f(run.encodeMs),
    f(run.denoiseMs),
    `${f(run.stepMedianMs)} (${tf(r.flops.step, run.stepMedianMs)} TFLOP/s)`,
    `${f(run.decodeMs)} (${tf(r.flops.decode, run.decodeMs)} TFLOP/s)`,
    f(run.pngMs),
    f(run.totalMs),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (c: string[]) =>
    c.map((v, i) => i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i])).join("  ");
  lines.push(line(head), ...rows.map(line));
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      steps: { type: "string" },
      res: { type: "string" },
      runs: { type: "string" },
      "free-runs": { type: "string" },
      cfg: { type: "string" },
      seed: { type: "string" },
      dtype: { type: "string" },
      prompt: { type: "string" },
      out: { type: "string" },
      json: { type: "string" },
      tokenizer: { type: "string" },
    },
  });
  const num = (v: string | undefined) => v === undefined ? undefined : Number(v);
  if (values.dtype && !["auto", "f16", "f32"].includes(values.dtype)) {
    console.error(`--dtype ${values.dtype}: use auto, f16 or f32`);
    Deno.exit(2);
  }
  const report = await benchPipeline({
    model: values.model,
    steps: num(values.steps),
    res: num(values.res),
    runs: num(values.runs),
    freeRuns: num(values["free-runs"]),
    cfg: num(values.cfg),
    seed: num(values.seed),
    dtype: values.dtype as PipelineBenchOptions["dtype"],
    prompt: values.prompt,
    out: values.out,
    tokenizer: values.tokenizer,
  });
  report.command = ["deno run -A bench/pipeline.ts", ...Deno.args].join(" ");
  console.log(formatPipelineReport(report));
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
}
