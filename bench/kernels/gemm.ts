/**
 * GEMM benchmark: every kernel variant (and `auto`) of `linear` / `matmul` at the Stable
 * Diffusion shapes (SD 1.5 at 512² and SD 2.x at 768², batch 2), f32 and f16. Each case is first
 * checked against the float64 reference on sampled output rows of the same shape.
 *
 * @module
 */
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import {
  chooseGemmVariant,
  GEMM_VARIANTS,
  type GemmVariant,
  linear,
  matmul,
} from "../../src/ops/gemm.ts";
import { linearRef, matmulRef } from "../../src/reference/gemm.ts";
import { errorStats, randomArray } from "../../tests/util.ts";
import { type BenchRow, type OpBench, timeMedian } from "./types.ts";

/** One benchmark case: a `linear` (batch 1, b as [N, K]) or a batched `matmul`. */
interface GemmCase {
  name: string;
  op: "linear" | "matmul";
  batch: number;
  m: number;
  n: number;
  k: number;
  transB: boolean;
}

const lin = (name: string, m: number, n: number, k: number): GemmCase => ({
  name,
  op: "linear",
  batch: 1,
  m,
  n,
  k,
  transB: true,
});

const FULL: GemmCase[] = [
  lin("sd15 attn q/k/v/out 64²", 8192, 320, 320),
  lin("sd15 GEGLU proj 64²", 8192, 2560, 320),
  lin("sd15 ff out 64²", 8192, 320, 1280),
  lin("sd15 attn 32²", 2048, 640, 640),
  lin("sd15 GEGLU proj 32²", 2048, 5120, 640),
  lin("sd15 attn 16²", 512, 1280, 1280),
  lin("sd15 cross-attn k/v", 154, 320, 768),
  lin("time embedding 1", 2, 1280, 320),
  lin("time embedding 2", 2, 1280, 1280),
  lin("sd2 attn q/k/v/out 96²", 18432, 320, 320),
  lin("sd2 cross-attn k/v", 154, 320, 1024),
  {
    name: "sd15 attn scores q·kᵀ (2 heads)",
    op: "matmul",
    batch: 2,
    m: 4096,
    n: 4096,
    k: 40,
    transB: true,
  },
  {
    name: "sd15 attn probs·v (2 heads)",
    op: "matmul",
    batch: 2,
    m: 4096,
    n: 40,
    k: 4096,
    transB: false,
  },
];

const QUICK: GemmCase[] = [
  lin("odd", 77, 65, 64),
  lin("few rows", 2, 257, 68),
  { name: "batched", op: "matmul", batch: 2, m: 65, n: 40, k: 77, transB: false },
];

/** Sampled rows of the output checked against float64: first, last, and two in between. */
function sampleRows(m: number): number[] {
  return [...new Set([0, Math.floor(m / 3), Math.floor((2 * m) / 3), m - 1])];
}

/** Records the case's op once, writing into `y`. */
function run(
  c: GemmCase,
  a: Tensor,
  b: Tensor,
  y: Tensor,
  bias: Tensor | undefined,
  variant: GemmVariant,
) {
  if (c.op === "linear") linear(a, b, { bias, out: y, variant });
  else matmul(a, b, { transB: c.transB, out: y, variant });
}

/** Worst |error| on the sampled rows, relative to the reference's max |value| there. */
async function check(
  c: GemmCase,
  host: { a: Float32Array; b: Float32Array; bias?: Float32Array },
  y: Tensor,
): Promise<number> {
  const got = await y.read();
  const rows = sampleRows(c.m);
  const pick: number[] = [];
  const want: number[] = [];
  for (let z = 0; z < c.batch; z++) {
    for (const r of rows) {
      const row = Array.from({ length: c.n }, (_, j) => got[(z * c.m + r) * c.n + j]);
      pick.push(...row);
    }
    if (c.op === "linear") {
      want.push(...linearRef(host.a, host.b, { m: c.m, n: c.n, k: c.k, bias: host.bias, rows }));
    } else {
      const bz = host.b.subarray(z * c.n * c.k, (z + 1) * c.n * c.k);
      for (const r of rows) {
        const ar = host.a.subarray((z * c.m + r) * c.k, (z * c.m + r + 1) * c.k);
        want.push(...matmulRef(ar, bz, { batch: 1, m: 1, n: c.n, k: c.k }, { transB: c.transB }));
      }
    }
  }
  const { maxAbs, scale } = errorStats(pick, want);
  return maxAbs / Math.max(scale, 1e-12);
}

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/**
 * Benchmarks every gemm variant at each case and dtype: GFLOP/s = 2·M·N·K·Bt / time.
 *
 * @example
 * ```ts
 * import { Runtime } from "../../src/gpu/runtime.ts";
 * import { loadTemplates } from "../../src/gpu/kernel.ts";
 * import { benchGemm } from "./gemm.ts";
 * await loadTemplates(["gemm"]);
 * const rows = await benchGemm(await Runtime.create(), { quick: true });
 * console.table(rows);
 * ```
 */
export const benchGemm: OpBench = async (rt: Runtime, opts): Promise<BenchRow[]> => {
  const rows: BenchRow[] = [];
  const dtypes: DType[] = rt.gpu.hasF16 ? ["f32", "f16"] : ["f32"];
  const reps = opts.reps ?? (opts.quick ? 3 : 10);
  for (const dtype of dtypes) {
    for (const [i, c] of (opts.quick ? QUICK : FULL).entries()) {
      const aShape = c.op === "linear" ? [c.m, c.k] : [c.batch, c.m, c.k];
      const bShape = c.transB ? [c.n, c.k] : [c.k, c.n];
      const host = {
        a: asDType(randomArray(c.batch * c.m * c.k, 3 * i + 1), dtype),
        b: asDType(randomArray(c.batch * c.n * c.k, 3 * i + 2), dtype),
        bias: c.op === "linear" ? asDType(randomArray(c.n, 3 * i + 3), dtype) : undefined,
      };
      const a = rt.upload(host.a, aShape, { dtype });
      const b = rt.upload(host.b, c.op === "linear" ? bShape : [c.batch, ...bShape], { dtype });
      const bias = host.bias && rt.upload(host.bias, [c.n], { dtype });
      const y = rt.empty(c.op === "linear" ? [c.m, c.n] : [c.batch, c.m, c.n], dtype);
      const flops = 2 * c.batch * c.m * c.n * c.k;
      const auto = chooseGemmVariant(c);
      const variants = GEMM_VARIANTS.filter((v) => v !== "skinny" || c.transB);
      for (const variant of ["auto", ...variants] as const) {
        run(c, a, b, y, bias, variant);
        const maxErr = await check(c, host, y);
        // enough calls per timed batch that it lasts ~5 ms at 10 TFLOP/s
        const calls = opts.quick ? 1 : Math.min(50, Math.max(1, Math.ceil(5e-3 / (flops / 1e13))));
        const ms = (await timeMedian(rt, () => {
          for (let j = 0; j < calls; j++) run(c, a, b, y, bias, variant);
        }, reps)) / calls;
        rows.push({
          op: c.op,
          variant: variant === "auto" ? `auto (${auto})` : variant,
          shape: `${
            c.batch > 1 ? `Bt=${c.batch} ` : ""
          }M=${c.m} N=${c.n} K=${c.k} ${dtype} ${c.name}`,
          ms,
          gflops: flops / (ms * 1e6),
          ok: maxErr <= (dtype === "f32" ? 1e-4 : 1e-2),
          maxErr,
        });
      }
      for (const t of [a, b, bias, y]) t?.dispose();
    }
  }
  return rows;
};
