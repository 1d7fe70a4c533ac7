/**
 * Float64 reference of GEGLU (exact erf GELU), for tests and the benchmark's checks.
 *
 * @module
 */
import { erf } from "./elementwise.ts";

/**
 * The exact GELU in float64: v·Φ(v) = ½·v·(1 + erf(v/√2)).
 *
 * @example
 * ```ts
 * import { geluExact } from "./geglu.ts";
 * geluExact(1); // 0.8413447460685429
 * ```
 */
export function geluExact(v: number): number {
  return 0.5 * v * (1 + erf(v / Math.SQRT2));
}

/**
 * GEGLU of rows of `2·f` values: `y[r, j] = x[r, j] · gelu(x[r, f + j])`.
 *
 * @example
 * ```ts
 * import { gegluRef } from "./geglu.ts";
 * gegluRef([2, 1], 1); // [2 · gelu(1)]
 * ```
 */
export function gegluRef(x: ArrayLike<number>, f: number): Float64Array {
  const rows = x.length / (2 * f);
  const out = new Float64Array(rows * f);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < f; j++) out[r * f + j] = x[2 * r * f + j] * geluExact(x[2 * r * f + f + j]);
  }
  return out;
}
