/**
 * Float64 references of the layout ops (plain index loops), for tests and the benchmark's checks.
 *
 * @module
 */

/**
 * Per-batch transpose: x `[batch, rows, cols]` → `[batch, cols, rows]`, plus `residual` (in the
 * output layout) when given. NCHW → tokens is rows = C, cols = H·W; tokens → NCHW the reverse.
 *
 * @example
 * ```ts
 * import { transposeRef } from "./layout.ts";
 * transposeRef([1, 2, 3, 4, 5, 6], { batch: 1, rows: 2, cols: 3 }); // [1, 4, 2, 5, 3, 6]
 * ```
 */
export function transposeRef(
  x: ArrayLike<number>,
  dims: { batch: number; rows: number; cols: number },
  residual?: ArrayLike<number>,
): Float64Array {
  const { batch, rows, cols } = dims;
  const out = new Float64Array(x.length);
  for (let b = 0; b < batch; b++) {
    const base = b * rows * cols;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const o = base + c * rows + r;
        out[o] = x[base + r * cols + c] + (residual ? residual[o] : 0);
      }
    }
  }
  return out;
}

/**
 * Concatenation along axis 1 of `[batch, ca, ...]` and `[batch, cb, ...]` (flattened: each batch
 * entry of `a` holds `a.length / batch` values).
 *
 * @example
 * ```ts
 * import { concatChannelsRef } from "./layout.ts";
 * concatChannelsRef([1, 2], [3, 4, 5, 6], 2); // [1, 3, 4, 2, 5, 6]
 * ```
 */
export function concatChannelsRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  batch: number,
): Float64Array {
  const ka = a.length / batch, kb = b.length / batch;
  const out = new Float64Array(a.length + b.length);
  for (let n = 0; n < batch; n++) {
    for (let i = 0; i < ka; i++) out[n * (ka + kb) + i] = a[n * ka + i];
    for (let i = 0; i < kb; i++) out[n * (ka + kb) + ka + i] = b[n * kb + i];
  }
  return out;
}

/**
 * Nearest 2× upsampling of `[planes, height, width]` planes → `[planes, 2·height, 2·width]`.
 *
 * @example
 * ```ts
 * import { upsampleNearest2xRef } from "./layout.ts";
 * upsampleNearest2xRef([1, 2], { planes: 1, height: 1, width: 2 }); // [1, 1, 2, 2, 1, 1, 2, 2]
 * ```
 */
export function upsampleNearest2xRef(
  x: ArrayLike<number>,
  dims: { planes: number; height: number; width: number },
): Float64Array {
  const { planes, height, width } = dims;
  const out = new Float64Array(x.length * 4);
  for (let p = 0; p < planes; p++) {
    for (let oy = 0; oy < 2 * height; oy++) {
      for (let ox = 0; ox < 2 * width; ox++) {
        const src = (p * height + Math.floor(oy / 2)) * width + Math.floor(ox / 2);
        out[(p * 2 * height + oy) * 2 * width + ox] = x[src];
      }
    }
  }
  return out;
}
