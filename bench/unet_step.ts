/**
 * The U-Net step benchmark: one `UNet2DConditionModel.forward` (a denoising step; batch 2 = with
 * classifier-free guidance) timed by wall clock around `rt.sync()`, then one extra profiled step
 * whose per-dispatch GPU timestamps are grouped by the block and part (resnet, attention, sampler)
 * that recorded them, the top kernels with their share, the effective TFLOP/s from the FLOP count
 * of `flops.ts`, and the pool's peak GPU memory.
 *
 * Block attribution: during the profiled step the `forward` methods of the model's blocks and
 * their resnets, transformers and samplers are wrapped (on the instances, restored afterwards) to
 * note the runtime's dispatch counter on entry and exit; the timestamp entries arrive in dispatch
 * order, so dispatch i belongs to the innermost module whose span holds i. Nothing in `src/`
 * changes; the benchmark checks that every dispatch got exactly one timestamp entry.
 *
 * The host side (`unet_host.ts`): the CPU cost of recording a call, per dispatch, and the
 * dispatches and bind groups per call, for the current code or, with `--compare`, for a ladder of
 * variants measured in turn in one process. `--steps 0` measures only the host side.
 *
 * usage: deno run -A bench/unet_step.ts [--arch sd15|sd21|tiny] [--base 768|512]
 *   [--checkpoint PATH] [--res PX] [--batch 1|2] [--dtype f16|f32] [--steps N] [--warmup N]
 *   [--seed N] [--top N] [--rounds N] [--json FILE] [--compare FILE.json|ladder|FEATURES]
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { DType } from "../src/gpu/device.ts";
import { Profiler, type ProfileRow } from "../src/gpu/profiler.ts";
import { Runtime } from "../src/gpu/runtime.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { UNet2DConditionModel } from "../src/models/unet.ts";
import { cloneConfigs, SD15, SD21, type UNet2DConditionConfig } from "../src/weights/configs.ts";
import { closeModelSource, openModelSource, readComponent } from "../src/weights/source.ts";
import { cpuClockSource, threadCpuMs } from "./cpu_time.ts";
import { blockOf, type FlopSummary, paramShapes, partOf, unetFlops, unetLayers } from "./flops.ts";
import { randomNormal, RandomWeights } from "./random_weights.ts";
import { HOST_FEATURES, type HostVariant, hostVariants, measureHost } from "./unet_host.ts";
import { compareReports, formatReport } from "./unet_step_report.ts";

/** The architectures the benchmark can build with random weights. */
export const ARCHS = ["sd15", "sd21", "tiny"] as const;
/** An architecture name. */
export type Arch = typeof ARCHS[number];

const TINY_CONFIG = new URL("../tests/fixtures/models/tiny-sd15/unet/config.json", import.meta.url);

/** Options of {@link benchUnetStep}. */
export interface UnetStepOptions {
  /** Architecture with random weights (default `sd15`); ignored with `checkpoint`. */
  arch?: Arch;
  /** SD 2.1 variant: 768 (v, default) or 512 (2.1-base / SD-Turbo). */
  base?: 512 | 768;
  /** A diffusers folder or single-file checkpoint to load instead of random weights. */
  checkpoint?: string;
  /** Image size in pixels (default: the config's sample size × 8). */
  res?: number;
  /** 1, or 2 for classifier-free guidance (default 2). */
  batch?: number;
  /** Compute dtype (default: f16 where the adapter has shader-f16). */
  dtype?: DType;
  /** Timed steps (default 10). */
  steps?: number;
  /** Untimed steps first (default 2); the first compiles the pipelines. */
  warmup?: number;
  /** Seed of the random weights and inputs (default 0). */
  seed?: number;
  /** How many of the top kernels to keep (default 15). */
  top?: number;
  /** Host-side variants to measure (`unet_host.ts`): `ladder` or features to switch off. */
  compare?: string;
  /** Rounds of host-side recordings per variant (default 10). */
  rounds?: number;
}

/** Host-side counters of one timed step (a `forward` plus its submit), once warm. */
export interface StepCounters {
  /** Compute dispatches. */
  dispatches: number;
  /** Bind groups created. */
  bindGroups: number;
  /** Uniform bytes written. */
  uniformBytes: number;
  /** Queue submits. */
  submits: number;
}

/** GPU time of one block, split by part. */
export interface BlockTime {
  /** `down_blocks.N`, `mid_block`, `up_blocks.N` or `other` (embeddings, conv_in/out). */
  block: string;
  /** Milliseconds per part: resnet, attention, sampler, other. */
  parts: Record<"resnet" | "attention" | "sampler" | "other", number>;
  /** All of the block's milliseconds. */
  ms: number;
  /** Share of the profiled step's GPU time, 0–1. */
  share: number;
  /** FLOPs of the block. */
  flops: number;
  /** The block's FLOPs over its GPU time, in TFLOP/s. */
  tflops: number;
}

/** A profiled step, grouped. */
export interface StepProfile {
  /** GPU milliseconds of all dispatches. */
  gpuMs: number;
  /** Wall milliseconds of the profiled step (timestamps split every dispatch into a pass). */
  wallMs: number;
  /** Dispatches in the step. */
  dispatches: number;
  /** Per block, in execution order. */
  blocks: BlockTime[];
  /** The top kernels by GPU time (labels with shapes). */
  kernels: ProfileRow[];
  /** GPU time per kernel family (template stem). */
  families: { kernel: string; count: number; totalMs: number; share: number }[];
}

/** Everything the benchmark measured. */
export interface UnetStepReport {
  /** The adapter's name. */
  adapter: string;
  /** ISO date of the run. */
  date: string;
  /** The command line. */
  command: string;
  /** `sd15`, `sd21-768`, `sd21-512`, `tiny`, or the checkpoint's path. */
  model: string;
  /** `random (seed N)` or `checkpoint`. */
  weights: string;
  /** Image size in pixels. */
  res: number;
  /** Latent size. */
  latent: number;
  /** Batch size. */
  batch: number;
  /** Compute dtype. */
  dtype: DType;
  /** Timed steps. */
  steps: number;
  /** Warm-up steps. */
  warmup: number;
  /** Seconds to generate (or read) and upload the weights. */
  loadSeconds: number;
  /** FLOPs of one call at this shape. */
  flops: FlopSummary;
  /** Wall-clock step times (ms) and their statistics. */
  step: {
    times: number[];
    medianMs: number;
    p90Ms: number;
    minMs: number;
    /** Median thread CPU ms of `forward` (recording). */
    recordMs: number;
    /** Median thread CPU ms of the submit (`rt.flush()`, GPU idle before it). */
    submitMs: number;
  };
  /** Counters of the last timed step; null with `--steps 0`. */
  counters: StepCounters | null;
  /** The host side: CPU cost of recording a call, per variant. */
  host: { clock: string; rounds: number; variants: HostVariant[] };
  /** FLOPs over the median step time, in TFLOP/s. */
  tflops: number;
  /**
   * Bytes: the parameters' exact size, the pool's bytes for them (exact-size buffers), and
   * the pool's peak while stepping (weights included).
   */
  memory: { paramBytes: number; weightsBytes: number; peakBytes: number };
  /** The profiled step; null when the adapter lacks timestamp-query. */
  profile: StepProfile | null;
  /** The last output: values that are not finite, and the largest magnitude. */
  output: { nonFinite: number; maxAbs: number } | null;
}

class UsageError extends Error {}

/**
 * The U-Net config of an architecture: SD 1.5, SD 2.1 (768-v or 512-base) or the tiny fixture.
 *
 * @example
 * ```ts
 * import { archConfig } from "./unet_step.ts";
 * const config = await archConfig("sd21", { base: 512 });
 * console.log(config.sample_size); // 64
 * ```
 */
export async function archConfig(
  arch: Arch,
  options: { base?: 512 | 768 } = {},
): Promise<UNet2DConditionConfig> {
  if (options.base !== undefined && arch !== "sd21") {
    throw new UsageError(`--base applies to --arch sd21 only (SD 2.1 768-v or 512-base)`);
  }
  switch (arch) {
    case "sd15":
      return cloneConfigs(SD15).unet;
    case "sd21": {
      const unet = cloneConfigs(SD21).unet;
      const base = options.base ?? 768;
      if (base !== 512 && base !== 768) {
        throw new UsageError(`--base must be 768 or 512, got ${base}`);
      }
      unet.sample_size = base / 8;
      return unet;
    }
    case "tiny":
      return JSON.parse(await Deno.readTextFile(TINY_CONFIG));
    default:
      throw new UsageError(`unknown --arch ${arch}: use ${ARCHS.join(", ")}`);
  }
}

/** Module names and instances whose `forward` the profiled step wraps. */
function modulesOf(unet: UNet2DConditionModel): [string, object][] {
  const out: [string, object][] = [];
  const blocks = [
    ...unet.down_blocks.map((b, i) => [`down_blocks.${i}`, b] as const),
    ["mid_block", unet.mid_block] as const,
    ...unet.up_blocks.map((b, i) => [`up_blocks.${i}`, b] as const),
  ];
  for (const [name, b] of blocks) {
    out.push([name, b]);
    b.resnets.forEach((r, j) => out.push([`${name}.resnets.${j}`, r]));
    b.attentions?.forEach((a, j) => out.push([`${name}.attentions.${j}`, a]));
    if ("downsamplers" in b && b.downsamplers) {
      out.push([`${name}.downsamplers.0.conv`, b.downsamplers[0].conv]);
    }
    if ("upsamplers" in b && b.upsamplers) {
      out.push([`${name}.upsamplers.0.conv`, b.upsamplers[0].conv]);
    }
  }
  return out;
}

/**
 * Runs `fn` with the model's blocks instrumented; returns its result and, for each dispatch
 * recorded meanwhile (from the first), the innermost module that recorded it (`other` if none).
 */
function withOwners<T>(rt: Runtime, unet: UNet2DConditionModel, fn: () => T): [T, string[]] {
  const spans: { name: string; start: number; end: number }[] = [];
  const patched: object[] = [];
  for (const [name, target] of modulesOf(unet)) {
    const orig = (target as { forward: (...a: unknown[]) => unknown }).forward;
    Object.defineProperty(target, "forward", {
      configurable: true,
      value: (...args: unknown[]) => {
        const span = { name, start: rt.dispatchCount, end: -1 };
        spans.push(span);
        try {
          return orig.apply(target, args);
        } finally {
          span.end = rt.dispatchCount;
        }
      },
    });
    patched.push(target);
  }
  const base = rt.dispatchCount;
  let result: T;
  try {
    result = fn();
  } finally {
    for (const t of patched) delete (t as { forward?: unknown }).forward;
  }
  const owners: string[] = Array(rt.dispatchCount - base).fill("other");
  for (const s of spans) for (let d = s.start; d < s.end; d++) owners[d - base] = s.name;
  return [result, owners];
}

/** Groups profiled entries by block and part, in execution order. */
function groupBlocks(
  entries: readonly { ms: number }[],
  owners: readonly string[],
  flops: FlopSummary,
): BlockTime[] {
  const map = new Map<string, BlockTime>();
  const total = entries.reduce((s, e) => s + e.ms, 0) || 1;
  entries.forEach((e, i) => {
    const block = blockOf(owners[i]);
    let row = map.get(block);
    if (!row) {
      const parts = { resnet: 0, attention: 0, sampler: 0, other: 0 };
      map.set(block, row = { block, parts, ms: 0, share: 0, flops: 0, tflops: 0 });
    }
    row.parts[partOf(owners[i])] += e.ms;
    row.ms += e.ms;
  });
  const rows = [...map.values()];
  const other = rows.findIndex((r) => r.block === "other");
  if (other >= 0) rows.push(...rows.splice(other, 1));
  for (const r of rows) {
    r.share = r.ms / total;
    r.flops = flops.byBlock[r.block] ?? 0;
    r.tflops = r.ms > 0 ? r.flops / (r.ms * 1e9) : 0;
  }
  return rows;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function whole(name: string, v: number | undefined, min: number): number | undefined {
  if (v !== undefined && (!Number.isInteger(v) || v < min)) {
    throw new UsageError(`--${name} must be a whole number ≥ ${min}, got ${v}`);
  }
  return v;
}

/** A model to build: its config, names, and how to load it. */
interface ModelPlan {
  config: UNet2DConditionConfig;
  model: string;
  weights: string;
  load: (dtype: DType) => Promise<UNet2DConditionModel>;
}

/** Plans the model: random weights for `arch`, or a checkpoint's (its config read first). */
async function planModel(rt: Runtime, options: UnetStepOptions, seed: number): Promise<ModelPlan> {
  const path = options.checkpoint;
  if (path && (options.arch || options.base)) {
    throw new UsageError(
      `give --arch/--base or --checkpoint, not both (a checkpoint has its own config)`,
    );
  }
  if (path) {
    const probe = await openModelSource(path);
    closeModelSource(probe);
    return {
      config: probe.configs.unet,
      model: path,
      weights: "checkpoint",
      load: async (dtype) => {
        const src = await openModelSource(path);
        try {
          const tensors = await readComponent(src, "unet");
          return UNet2DConditionModel.load(rt, { tensors, config: src.configs.unet, dtype });
        } finally {
          closeModelSource(src);
        }
      },
    };
  }
  const arch = options.arch ?? "sd15";
  const config = await archConfig(arch, { base: options.base });
  const shapes = paramShapes(unetLayers(config, { height: 8, width: 8 }));
  return {
    config,
    model: arch === "sd21" ? `sd21-${options.base ?? 768}` : arch,
    weights: `random (seed ${seed})`,
    load: (dtype) =>
      Promise.resolve(
        UNet2DConditionModel.load(rt, {
          tensors: new RandomWeights(shapes, { seed, dtype }),
          config,
          dtype,
        }),
      ),
  };
}

/**
 * Builds the U-Net and benchmarks its step: warm-up, timed steps, one profiled step.
 *
 * @example
 * ```ts
 * import { Runtime } from "../src/gpu/runtime.ts";
 * import { benchUnetStep } from "./unet_step.ts";
 * const rt = await Runtime.create();
 * const report = await benchUnetStep(rt, { arch: "tiny", res: 64, steps: 3, warmup: 1 });
 * console.log(report.step.medianMs, report.tflops);
 * ```
 */
export async function benchUnetStep(
  rt: Runtime,
  options: UnetStepOptions = {},
): Promise<UnetStepReport> {
  const batch = options.batch ?? 2;
  if (batch !== 1 && batch !== 2) {
    throw new UsageError(`--batch must be 1 or 2 (2 = classifier-free guidance), got ${batch}`);
  }
  const steps = whole("steps", options.steps, 0) ?? 10;
  const rounds = whole("rounds", options.rounds, 1) ?? 10;
  const variants = options.compare
    ? hostVariantsOrUsage(options.compare)
    : [HOST_FEATURES.map((f) => f.name)];
  const warmup = whole("warmup", options.warmup, 0) ?? 2;
  const seed = whole("seed", options.seed, 0) ?? 0;
  const dtype = options.dtype ?? rt.preferredDType;
  if (dtype !== "f16" && dtype !== "f32") throw new UsageError(`--dtype must be f16 or f32`);
  rt.assertDType(dtype);
  const plan = await planModel(rt, options, seed);
  const { config, model, weights } = plan;
  const m = 8 * 2 ** (config.block_out_channels.length - 1);
  const res = whole("res", options.res, 1) ?? Number(config.sample_size) * 8;
  if (res % m !== 0) {
    throw new UsageError(
      `--res ${res} is not a multiple of ${m} (8× VAE, and the U-Net halves the latent ` +
        `${config.block_out_channels.length - 1} times): try ${
          Math.max(m, Math.round(res / m) * m)
        }`,
    );
  }
  const latent = res / 8;
  let paramBytes = 0;
  for (const shape of paramShapes(unetLayers(config, { height: m / 8, width: m / 8 })).values()) {
    paramBytes += shape.reduce((a, b) => a * b, 1) * (dtype === "f16" ? 2 : 4);
  }
  const t0 = performance.now();
  const before = rt.pool.stats().inUseBytes;
  const unet = await plan.load(dtype);
  try {
    await rt.sync();
    const loadSeconds = (performance.now() - t0) / 1000;
    const weightsBytes = rt.pool.stats().inUseBytes - before;
    const flops = unetFlops(config, { batch, height: latent, width: latent });
    const sampleShape = [batch, config.in_channels, latent, latent];
    const ctxShape = [batch, 77, config.cross_attention_dim];
    const sample = rt.upload(
      randomNormal(batch * config.in_channels * latent ** 2, seed + 1),
      sampleShape,
      { dtype },
    );
    const context = rt.upload(
      randomNormal(batch * 77 * config.cross_attention_dim, seed + 2),
      ctxShape,
      { dtype },
    );
    const timestep = 500;
    const forward = () => unet.forward(sample, { timestep, encoderHiddenStates: context });
    const host = measureHost(rt, unet, { variants, rounds, record: forward });
    rt.pool.resetPeak();
    const times: number[] = [];
    const records: number[] = [];
    const submits: number[] = [];
    let counters: StepCounters | null = null;
    for (let i = 0; i < (steps > 0 ? warmup + steps : 0); i++) {
      const s0 = rt.stats();
      const a = performance.now();
      const c0 = threadCpuMs();
      const out = forward();
      const c1 = threadCpuMs();
      await rt.flush();
      const c2 = threadCpuMs();
      await rt.sync();
      const c = performance.now();
      const s1 = rt.stats();
      out.dispose();
      if (i >= warmup) {
        times.push(c - a);
        records.push(c1 - c0);
        submits.push(c2 - c1);
        counters = {
          dispatches: s1.dispatches - s0.dispatches,
          bindGroups: s1.bindGroups - s0.bindGroups,
          uniformBytes: s1.uniformBytes - s0.uniformBytes,
          submits: s1.submits - s0.submits,
        };
      }
    }
    const peakBytes = rt.pool.stats().peakBytes;
    const profile = steps > 0
      ? await profileStep(rt, unet, { sample, timestep, context, flops, top: options.top ?? 15 })
      : { profile: null, output: null }; // --steps 0: nothing runs on the GPU
    const sorted = [...times].sort((x, y) => x - y);
    const med = (v: number[]) => v.length ? percentile([...v].sort((x, y) => x - y), 0.5) : 0;
    const medianMs = med(times);
    sample.dispose();
    context.dispose();
    return {
      adapter: rt.gpu.adapterName,
      date: new Date().toISOString(),
      command: "",
      model,
      weights,
      res,
      latent,
      batch,
      dtype,
      steps,
      warmup,
      loadSeconds,
      flops,
      step: {
        times,
        medianMs,
        p90Ms: sorted.length ? percentile(sorted, 0.9) : 0,
        minMs: sorted[0] ?? 0,
        recordMs: med(records),
        submitMs: med(submits),
      },
      counters,
      host: { clock: cpuClockSource(), rounds, variants: host },
      tflops: medianMs > 0 ? flops.total / (medianMs * 1e9) : 0,
      memory: { paramBytes, weightsBytes, peakBytes },
      profile: profile.profile,
      output: profile.output,
    };
  } finally {
    unet.dispose();
    rt.trim();
  }
}

/** Reads (and frees) a step's output: how many values are not finite, the largest magnitude. */
async function checkOutput(out: Tensor): Promise<{ nonFinite: number; maxAbs: number }> {
  const values = await out.read();
  out.dispose();
  let nonFinite = 0, maxAbs = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) nonFinite++;
    else maxAbs = Math.max(maxAbs, Math.abs(v));
  }
  return { nonFinite, maxAbs };
}

function hostVariantsOrUsage(spec: string): string[][] {
  try {
    return hostVariants(spec);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** One extra step with timestamp queries, grouped by block; also checks the output. */
async function profileStep(
  rt: Runtime,
  unet: UNet2DConditionModel,
  args: {
    sample: Tensor;
    timestep: number;
    context: Tensor;
    flops: FlopSummary;
    top: number;
  },
): Promise<{ profile: StepProfile | null; output: { nonFinite: number; maxAbs: number } }> {
  const profiler = new Profiler();
  const timed = rt.gpu.hasTimestamps;
  if (timed) rt.profiler = profiler;
  const t0 = performance.now();
  let out: Tensor;
  let owners: string[];
  try {
    [out, owners] = withOwners(
      rt,
      unet,
      () =>
        unet.forward(args.sample, { timestep: args.timestep, encoderHiddenStates: args.context }),
    );
    await rt.sync();
  } finally {
    rt.profiler = null;
  }
  const wallMs = performance.now() - t0;
  const output = await checkOutput(out);
  if (!timed) return { profile: null, output };
  const entries = profiler.entries;
  if (entries.length !== owners.length) {
    throw new Error(
      `profiled step: ${owners.length} dispatches but ${entries.length} timestamp entries; ` +
        `per-block attribution needs one entry per dispatch`,
    );
  }
  const gpuMs = profiler.totalMs;
  const families = new Map<
    string,
    { kernel: string; count: number; totalMs: number; share: number }
  >();
  for (const e of entries) {
    const f = families.get(e.kernel) ?? { kernel: e.kernel, count: 0, totalMs: 0, share: 0 };
    f.count++;
    f.totalMs += e.ms;
    families.set(e.kernel, f);
  }
  for (const f of families.values()) f.share = f.totalMs / (gpuMs || 1);
  return {
    profile: {
      gpuMs,
      wallMs,
      dispatches: entries.length,
      blocks: groupBlocks(entries, owners, args.flops),
      kernels: profiler.rows().slice(0, args.top),
      families: [...families.values()].sort((a, b) => b.totalMs - a.totalMs),
    },
    output,
  };
}

const HELP = `U-Net step benchmark

usage: deno run -A bench/unet_step.ts [flags]

  --arch NAME        sd15, sd21 (SD 2.1 / SD-Turbo) or tiny, with random weights (sd15)
  --base 768|512     SD 2.1 variant: 768-v or 512-base / SD-Turbo (768)
  --checkpoint PATH  a diffusers folder or single .safetensors instead of random weights
  --res PX           image size (the model's: 512, 768 or 128)
  --batch 1|2        2 = classifier-free guidance (2)
  --dtype f16|f32    compute dtype (f16 where the adapter has shader-f16)
  --steps N          timed steps (10); 0 measures the host side only
  --warmup N         untimed steps first (2)
  --rounds N         host-side recordings per variant (10)
  --seed N           seed of the random weights and inputs (0)
  --top N            kernels listed (15)
  --json FILE        write the report as JSON
  --compare X        X.json: print the change against an earlier --json report;
                     ladder: measure the host side of every variant (plain, then one more
                     change each: ${HOST_FEATURES.map((f) => f.name).join(", ")}) in one run;
                     a comma list of those names: measure them off against all on
`;

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      arch: { type: "string" },
      base: { type: "string" },
      checkpoint: { type: "string" },
      res: { type: "string" },
      batch: { type: "string" },
      dtype: { type: "string" },
      steps: { type: "string" },
      warmup: { type: "string" },
      seed: { type: "string" },
      top: { type: "string" },
      rounds: { type: "string" },
      json: { type: "string" },
      compare: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return console.log(HELP);
  if (values.arch && !(ARCHS as readonly string[]).includes(values.arch)) {
    throw new UsageError(`unknown --arch ${values.arch}: use ${ARCHS.join(", ")}`);
  }
  const num = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`--${name} ${JSON.stringify(v)} is not a number`);
    return n;
  };
  const file = values.compare?.endsWith(".json") ? values.compare : undefined;
  const before = file ? JSON.parse(await Deno.readTextFile(file)) as UnetStepReport : undefined;
  const rt = await Runtime.create();
  const report = await benchUnetStep(rt, {
    arch: values.arch as Arch | undefined,
    base: num("base", values.base) as 512 | 768 | undefined,
    checkpoint: values.checkpoint,
    res: num("res", values.res),
    batch: num("batch", values.batch),
    dtype: values.dtype as DType | undefined,
    steps: num("steps", values.steps),
    warmup: num("warmup", values.warmup),
    seed: num("seed", values.seed),
    top: num("top", values.top),
    rounds: num("rounds", values.rounds),
    compare: file ? undefined : values.compare,
  });
  report.command = ["deno run -A bench/unet_step.ts", ...args].join(" ");
  console.log(formatReport(report));
  if (before) console.log(`\n${compareReports(report, before)}`);
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`unet_step: ${e.message}\n\n${HELP}`);
    Deno.exit(2);
  }
}
