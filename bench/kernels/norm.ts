/**
 * Normalisation benchmark: GroupNorm (both kernel versions and `auto`) at the U-Net's 512² batch-2
 * shapes and the VAE decoder's 512² shapes, LayerNorm at the transformer and CLIP shapes. Each case
 * is first checked against the float64 reference on the same input. GB/s counts one read of x and
 * one write of y (the traffic of an ideal single pass; the kernels read x twice, the second time
 * mostly from cache).
 *
 * @module
 */
import type { DType } from "../../src/gpu/device.ts";
import { loadTemplates } from "../../src/gpu/kernel.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { dtypeBytes, type Tensor } from "../../src/gpu/tensor.ts";
import { groupNorm, type GroupNormVariant, layerNorm } from "../../src/ops/norm.ts";
import { groupNormRef, layerNormRef } from "../../src/reference/norm.ts";
import { errorStats, randomArray } from "../../tests/util.ts";
import { type BenchRow, type OpBench, timeMedian } from "./types.ts";

/** One case: a GroupNorm over NCHW (`groups` set) or a LayerNorm over the last axis. */
interface NormCase {
  name: string;
  shape: number[];
  groups?: number;
  eps: number;
  silu?: boolean;
}

const FULL: NormCase[] = [
  { name: "unet 64²", shape: [2, 320, 64, 64], groups: 32, eps: 1e-5, silu: true },
  { name: "unet 32²", shape: [2, 640, 32, 32], groups: 32, eps: 1e-5, silu: true },
  { name: "unet 16²", shape: [2, 1280, 16, 16], groups: 32, eps: 1e-5, silu: true },
  { name: "vae 512²", shape: [1, 128, 512, 512], groups: 32, eps: 1e-6, silu: true },
  { name: "vae 256²", shape: [1, 256, 256, 256], groups: 32, eps: 1e-6, silu: true },
  { name: "transformer 64²", shape: [2 * 4096, 320], eps: 1e-5 },
  { name: "clip", shape: [2, 77, 768], eps: 1e-5 },
];

const QUICK: NormCase[] = [
  { name: "small", shape: [1, 64, 16, 16], groups: 32, eps: 1e-5, silu: true },
  { name: "big group", shape: [1, 32, 64, 64], groups: 2, eps: 1e-6, silu: true },
  { name: "rows", shape: [64, 320], eps: 1e-5 },
];

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

function reference(c: NormCase, x: Float32Array, w: Float32Array, b: Float32Array) {
  if (c.groups === undefined) return layerNormRef(x, w, b, { eps: c.eps });
  return groupNormRef(x, w, b, {
    batch: c.shape[0],
    channels: c.shape[1],
    groups: c.groups,
    eps: c.eps,
    silu: c.silu,
  });
}

/**
 * Benchmarks GroupNorm (`fused`, `split`, `auto`) and LayerNorm in the runtime's preferred dtype.
 *
 * @example
 * ```ts
 * import { Runtime } from "../../src/gpu/runtime.ts";
 * import { benchNorm } from "./norm.ts";
 * const rows = await benchNorm(await Runtime.create(), { quick: true });
 * console.table(rows);
 * ```
 */
export const benchNorm: OpBench = async (rt: Runtime, opts): Promise<BenchRow[]> => {
  await loadTemplates(["norm"]);
  const rows: BenchRow[] = [];
  const dtype = rt.preferredDType;
  const reps = opts.reps ?? (opts.quick ? 3 : 10);
  for (const [i, c] of (opts.quick ? QUICK : FULL).entries()) {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const ch = c.groups === undefined ? c.shape[c.shape.length - 1] : c.shape[1];
    const host = {
      x: asDType(randomArray(n, 3 * i + 1, -2, 2), dtype),
      w: asDType(randomArray(ch, 3 * i + 2, 0.5, 1.5), dtype),
      b: asDType(randomArray(ch, 3 * i + 3, -0.5, 0.5), dtype),
    };
    const x = rt.upload(host.x, c.shape, { dtype });
    const w = rt.upload(host.w, [ch], { dtype });
    const b = rt.upload(host.b, [ch], { dtype });
    const y = rt.empty(c.shape, dtype);
    const ref = reference(c, host.x, host.w, host.b);
    const bytes = 2 * n * dtypeBytes(dtype);
    const variants: (GroupNormVariant | "layer")[] = c.groups === undefined
      ? ["layer"]
      : ["auto", "fused", "split"];
    for (const variant of variants) {
      const run = (out: Tensor) =>
        variant === "layer"
          ? layerNorm(x, w, b, { eps: c.eps, out })
          : groupNorm(x, w, b, { groups: c.groups, eps: c.eps, silu: c.silu, variant, out });
      run(y);
      const { maxAbs, scale } = errorStats(await y.read(), ref);
      const maxErr = maxAbs / Math.max(scale, 1e-12);
      // enough calls per timed batch that it lasts ~5 ms at 1 TB/s
      const calls = opts.quick ? 1 : Math.min(50, Math.max(1, Math.ceil(5e-3 / (bytes / 1e12))));
      const ms = (await timeMedian(rt, () => {
        for (let j = 0; j < calls; j++) run(y);
      }, reps)) / calls;
      rows.push({
        op: variant === "layer" ? "layerNorm" : "groupNorm",
        variant,
        shape: `[${c.shape}]${c.groups ? ` g=${c.groups}` : ""} ${dtype} ${c.name}`,
        ms,
        gbps: bytes / (ms * 1e6),
        ok: maxErr <= (dtype === "f32" ? 1e-5 : 1e-2),
        maxErr,
      });
    }
    for (const t of [x, w, b, y]) t.dispose();
  }
  return rows;
};
