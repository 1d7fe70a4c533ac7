/**
 * Float64 reference of a LoRA merge, for tests: `W' = W + Σ scale·up·down` over the weight's
 * `[out, in·k·k]` view (`scale` = multiplier · alpha / rank).
 *
 * @module
 */

/** One LoRA's factors for a weight: `down` `[rank, in·k·k]` and `up` `[out, rank]`, row-major. */
export interface LoraRefPart {
  /** `[rank, in·k·k]` values. */
  down: ArrayLike<number>;
  /** `[out, rank]` values. */
  up: ArrayLike<number>;
  /** The rank. */
  rank: number;
  /** multiplier · alpha / rank. */
  scale: number;
}

/**
 * `base + Σ scale·up·down` in float64 for a weight of `out` rows (any trailing shape).
 *
 * @example
 * ```ts
 * import { loraMergeRef } from "./lora.ts";
 * loraMergeRef([0, 0, 0, 0], 2, [{ down: [1, 2], up: [1, -1], rank: 1, scale: 0.5 }]);
 * // Float64Array [0.5, 1, -0.5, -1]
 * ```
 */
export function loraMergeRef(
  base: ArrayLike<number>,
  out: number,
  parts: readonly LoraRefPart[],
): Float64Array {
  const cols = base.length / out;
  const w = Float64Array.from(base);
  for (const { down, up, rank, scale } of parts) {
    for (let o = 0; o < out; o++) {
      for (let c = 0; c < cols; c++) {
        let sum = 0;
        for (let j = 0; j < rank; j++) sum += up[o * rank + j] * down[j * cols + c];
        w[o * cols + c] += scale * sum;
      }
    }
  }
  return w;
}
