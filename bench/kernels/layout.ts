/**
 * Memory-bound op benchmark: the NCHW ⇄ token permutes (tiled and naive), nearest 2× upsampling,
 * channel concatenation and GEGLU (scalar and vec4) at SD 1.5 512² batch-2 shapes. Each case is
 * first checked against the float64 reference on the same input. GB/s counts the bytes each op must
 * read and write once.
 *
 * @module
 */
import type { DType } from "../../src/gpu/device.ts";
import { loadTemplates } from "../../src/gpu/kernel.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { dtypeBytes, type Tensor } from "../../src/gpu/tensor.ts";
import { geglu } from "../../src/ops/geglu.ts";
import {
  concatChannels,
  nchwToTokens,
  tokensToNchw,
  upsampleNearest2x,
} from "../../src/ops/layout.ts";
import { gegluRef } from "../../src/reference/geglu.ts";
import {
  concatChannelsRef,
  transposeRef,
  upsampleNearest2xRef,
} from "../../src/reference/layout.ts";
import { errorStats, randomArray } from "../../tests/util.ts";
import { type BenchRow, type OpBench, timeMedian } from "./types.ts";

/** One timed op: its inputs' shapes, its variants, how to run it and its float64 reference. */
interface LayoutCase {
  op: string;
  shapes: number[][];
  variants: string[];
  /** Elements read and written once, in units of the inputs' total size. */
  traffic: number;
  run: (xs: Tensor[], variant: string) => Tensor;
  ref: (xs: Float32Array[], shapes: number[][]) => Float64Array;
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

function cases(quick: boolean): LayoutCase[] {
  const nchw = quick ? [2, 33, 7, 11] : [2, 320, 64, 64];
  const [b, c, h, w] = nchw;
  const up = quick ? [2, 13, 5, 8] : [2, 1280, 16, 16];
  const gg = quick ? [77, 2 * 64] : [2 * 4096, 2560];
  return [
    {
      op: "nchwToTokens",
      shapes: [nchw],
      variants: ["tiled", "naive"],
      traffic: 2,
      run: ([x], v) => nchwToTokens(x, { variant: v as "tiled" | "naive" }),
      ref: ([x]) => transposeRef(x, { batch: b, rows: c, cols: h * w }),
    },
    {
      op: "tokensToNchw+res",
      shapes: [[b, h * w, c], nchw],
      variants: ["tiled", "naive"],
      traffic: 1.5,
      run: ([x, r], v) =>
        tokensToNchw(x, { height: h, width: w, residual: r, variant: v as "tiled" | "naive" }),
      ref: ([x, r]) => transposeRef(x, { batch: b, rows: h * w, cols: c }, r),
    },
    {
      op: "upsampleNearest2x",
      shapes: [up],
      variants: ["auto"],
      traffic: 5,
      run: ([x]) => upsampleNearest2x(x),
      ref: ([x], [s]) =>
        upsampleNearest2xRef(x, { planes: s[0] * s[1], height: s[2], width: s[3] }),
    },
    {
      op: "concatChannels",
      shapes: [up, up],
      variants: ["auto"],
      traffic: 2,
      run: ([x, y]) => concatChannels(x, y),
      ref: ([x, y], [s]) => concatChannelsRef(x, y, s[0]),
    },
    {
      op: "geglu",
      shapes: [gg],
      variants: ["scalar", "vec4"],
      traffic: 1.5,
      run: ([x], v) => geglu(x, { variant: v as "scalar" | "vec4" }),
      ref: ([x], [s]) => gegluRef(x, s[1] / 2),
    },
  ];
}

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/**
 * Benchmarks the layout ops and GEGLU in the runtime's preferred dtype.
 *
 * @example
 * ```ts
 * import { Runtime } from "../../src/gpu/runtime.ts";
 * import { benchLayout } from "./layout.ts";
 * const rows = await benchLayout(await Runtime.create(), { quick: true });
 * console.table(rows);
 * ```
 */
export const benchLayout: OpBench = async (rt: Runtime, opts): Promise<BenchRow[]> => {
  await loadTemplates(["layout", "geglu"]);
  const rows: BenchRow[] = [];
  const dtype = rt.preferredDType;
  const reps = opts.reps ?? (opts.quick ? 3 : 10);
  for (const [i, c] of cases(opts.quick).entries()) {
    const host = c.shapes.map((s, k) => asDType(randomArray(numel(s), 10 * i + k, -3, 3), dtype));
    const xs = host.map((h, k) => rt.upload(h, c.shapes[k], { dtype }));
    const ref = c.ref(host, c.shapes);
    const size = c.shapes.reduce((s, shape) => s + numel(shape), 0);
    const bytes = c.traffic * size * dtypeBytes(dtype);
    for (const variant of c.variants) {
      const y = c.run(xs, variant);
      const { maxAbs, scale } = errorStats(await y.read(), ref);
      y.dispose();
      const maxErr = maxAbs / Math.max(scale, 1e-12);
      // enough calls per timed batch that it lasts ~5 ms at 1 TB/s
      const calls = opts.quick ? 1 : Math.min(50, Math.max(1, Math.ceil(5e-3 / (bytes / 1e12))));
      const ms = (await timeMedian(rt, () => {
        for (let j = 0; j < calls; j++) c.run(xs, variant).dispose();
      }, reps)) / calls;
      rows.push({
        op: c.op,
        variant,
        shape: `${c.shapes.map((s) => `[${s}]`).join(" + ")} ${dtype}`,
        ms,
        gbps: bytes / (ms * 1e6),
        ok: maxErr <= (dtype === "f32" ? 1e-5 : 1e-2),
        maxErr,
      });
    }
    for (const t of xs) t.dispose();
  }
  return rows;
};
