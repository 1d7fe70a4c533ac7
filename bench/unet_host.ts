/**
 * The host side of a U-Net step: what recording one call costs the CPU, measured for a ladder of
 * variants in one process. Each variant switches on one more host-side change (recorder caches,
 * dispatch fusions) than the one before; the variants are recorded in turn, round after round,
 * so load on a shared machine falls on all of them alike, and each is reported against the
 * previous one.
 *
 * A recording is `unet.forward(...)` on the JavaScript thread, timed in thread CPU time
 * (`cpu_time.ts`), then dropped with `rt.discard()`: nothing is submitted, so the GPU stays idle
 * and slow software adapters cost nothing here. The first recording compiles the pipelines and is
 * not counted.
 *
 * @module
 */
import type { Runtime } from "../src/gpu/runtime.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import type { UNetFusions } from "../src/models/transformer_2d.ts";
import type { UNet2DConditionModel } from "../src/models/unet.ts";
import { threadCpuMs } from "./cpu_time.ts";

/** A host-side change that can be switched off to measure it. */
export interface HostFeature {
  /** Short name used by `--compare`. */
  name: string;
  /** What it changes. */
  description: string;
  /** Switches it on or off. */
  set(rt: Runtime, unet: UNet2DConditionModel, on: boolean): void;
}

/** The U-Net's dispatch fusion `name` as a host-side change. */
function fusion(name: keyof UNetFusions, description: string): HostFeature {
  return { name, description, set: (_rt, unet, on) => unet.fusions[name] = on };
}

/** Every host-side change, in the order they were made (the ladder of `--compare ladder`). */
export const HOST_FEATURES: readonly HostFeature[] = [
  {
    name: "uniforms",
    description: "uniform blocks kept in slots by content, written once",
    set: (rt, _unet, on) => rt.recorder.reuseUniforms = on,
  },
  {
    name: "bindgroups",
    description: "bind groups cached by pipeline, uniform slot and buffer ranges",
    set: (rt, _unet, on) => rt.recorder.cacheBindGroups = on,
  },
  fusion("qkv", "q, k, v (cross-attention: k, v) from one GEMM on joined weights"),
  fusion("temb", "every resnet's time_emb_proj in one GEMM, added in conv1's epilogue"),
  fusion("tokens", "GroupNorm writes tokens, proj_out writes NCHW + residual (no permutes)"),
  fusion("geglu", "GEGLU in the epilogue of the feed-forward's input GEMM"),
  fusion("concat", "up blocks' skip concatenation read in place by norm1 and the shortcut conv"),
  fusion("ln", "the transformer block's LayerNorms in the prologue of the GEMMs that read them"),
  fusion("reduce", "norm2 reads conv1's split-K partial sums in place of the reduce pass"),
  fusion("kv", "every cross-attention's k, v from one GEMM on the text context"),
];

/** One variant of the ladder and what recording a call cost with it. */
export interface HostVariant {
  /** `plain`, or `+name` of the feature it adds. */
  name: string;
  /** Features on. */
  features: string[];
  /** Dispatches per call. */
  dispatches: number;
  /** Bind groups created per call, once warm. */
  bindGroups: number;
  /** Thread CPU milliseconds per recording, every round. */
  recordMs: number[];
  /** Median of `recordMs`. */
  medianMs: number;
  /** Median CPU microseconds per dispatch. */
  usPerDispatch: number;
}

/**
 * The variants `--compare` names: `ladder` (plain, then one more feature each), or a comma list
 * of features to measure off against all on.
 *
 * @example
 * ```ts
 * import { hostVariants } from "./unet_host.ts";
 * hostVariants("bindgroups"); // [["uniforms"], ["uniforms", "bindgroups"]]
 * ```
 */
export function hostVariants(spec: string): string[][] {
  const all = HOST_FEATURES.map((f) => f.name);
  if (spec === "ladder") return all.map((_, i) => all.slice(0, i)).concat([all]);
  const off = spec.split(",").map((s) => s.trim()).filter((s) => s);
  for (const name of off) {
    if (!all.includes(name)) {
      throw new Error(`--compare: unknown feature "${name}"; use ladder or ${all.join(", ")}`);
    }
  }
  return [all.filter((n) => !off.includes(n)), all];
}

/** Switches the features of `on` on and every other off. */
export function applyFeatures(rt: Runtime, unet: UNet2DConditionModel, on: string[]): void {
  for (const f of HOST_FEATURES) f.set(rt, unet, on.includes(f.name));
}

/**
 * Records `record()` for each variant, `rounds` times in turn, and reports the CPU cost.
 * `record` returns the call's output, which is freed before the recording is dropped.
 *
 * @example
 * ```ts
 * import type { Runtime } from "../src/gpu/runtime.ts";
 * import type { UNetFusions } from "../src/models/transformer_2d.ts";
import type { UNet2DConditionModel } from "../src/models/unet.ts";
 * import type { Tensor } from "../src/gpu/tensor.ts";
 * import { hostVariants, measureHost } from "./unet_host.ts";
 * declare const rt: Runtime, unet: UNet2DConditionModel, sample: Tensor, context: Tensor;
 * const rows = measureHost(rt, unet, {
 *   variants: hostVariants("ladder"),
 *   rounds: 10,
 *   record: () => unet.forward(sample, { timestep: 500, encoderHiddenStates: context }),
 * });
 * ```
 */
export function measureHost(
  rt: Runtime,
  unet: UNet2DConditionModel,
  options: { variants: string[][]; rounds: number; record: () => Tensor },
): HostVariant[] {
  const off = (features: string[]) =>
    HOST_FEATURES.map((f) => f.name).filter((n) => !features.includes(n));
  const rows: HostVariant[] = options.variants.map((features, i) => ({
    name: i === 0 && options.variants.length > 2
      ? "plain"
      : i === 0
      ? (off(features).length ? `without ${off(features)}` : "all on")
      : `+${features.filter((f) => !options.variants[i - 1].includes(f)).join("+") || "same"}`,
    features,
    dispatches: 0,
    bindGroups: 0,
    recordMs: [],
    medianMs: 0,
    usPerDispatch: 0,
  }));
  const once = (row: HostVariant, timed: boolean) => {
    applyFeatures(rt, unet, row.features);
    const before = rt.stats();
    const t0 = threadCpuMs();
    const out = options.record();
    const t1 = threadCpuMs();
    out.dispose();
    rt.discard();
    const after = rt.stats();
    if (!timed) return;
    row.recordMs.push(t1 - t0);
    row.dispatches = after.dispatches - before.dispatches;
    row.bindGroups = after.bindGroups - before.bindGroups;
  };
  for (const row of rows) once(row, false); // compiles, fills caches
  for (let r = 0; r < options.rounds; r++) for (const row of rows) once(row, true);
  applyFeatures(rt, unet, HOST_FEATURES.map((f) => f.name));
  for (const row of rows) {
    const sorted = [...row.recordMs].sort((a, b) => a - b);
    row.medianMs = sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
    row.usPerDispatch = row.dispatches > 0 ? (row.medianMs * 1000) / row.dispatches : 0;
  }
  return rows;
}
