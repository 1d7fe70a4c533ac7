/**
 * Float64 references of the normalisation ops (plain two-pass loops), for tests and the
 * benchmark's checks.
 *
 * @module
 */

/**
 * GroupNorm of NCHW data `[batch, channels, spatial]` in float64 (two-pass mean and biased
 * variance), then `weight[c]`·x̂ + `bias[c]` and optional SiLU.
 *
 * @example
 * ```ts
 * import { groupNormRef } from "./norm.ts";
 * const y = groupNormRef([1, 2, 3, 4], [1, 1], [0, 0], { batch: 1, channels: 2, groups: 1, eps: 1e-5 });
 * ```
 */
export function groupNormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  options: { batch: number; channels: number; groups: number; eps: number; silu?: boolean },
): Float64Array {
  const { batch, channels, groups, eps } = options;
  const spatial = x.length / (batch * channels);
  const cpg = channels / groups;
  const n = cpg * spatial;
  const out = new Float64Array(x.length);
  for (let row = 0; row < batch * groups; row++) {
    const base = row * n;
    const { mean, rstd } = moments(x, base, n, eps);
    const c0 = (row % groups) * cpg;
    for (let i = 0; i < n; i++) {
      const c = c0 + Math.floor(i / spatial);
      const v = (x[base + i] - mean) * rstd * weight[c] + bias[c];
      out[base + i] = options.silu ? v / (1 + Math.exp(-v)) : v;
    }
  }
  return out;
}

/**
 * LayerNorm over the last axis (length `weight.length`) in float64.
 *
 * @example
 * ```ts
 * import { layerNormRef } from "./norm.ts";
 * const y = layerNormRef([1, 2, 3, 4], [1, 1], [0, 0], { eps: 1e-5 }); // two rows of 2
 * ```
 */
export function layerNormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  options: { eps: number },
): Float64Array {
  const d = weight.length;
  const out = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += d) {
    const { mean, rstd } = moments(x, base, d, options.eps);
    for (let i = 0; i < d; i++) out[base + i] = (x[base + i] - mean) * rstd * weight[i] + bias[i];
  }
  return out;
}

function moments(
  x: ArrayLike<number>,
  base: number,
  n: number,
  eps: number,
): { mean: number; rstd: number } {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[base + i];
  const mean = sum / n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[base + i] - mean) ** 2;
  return { mean, rstd: 1 / Math.sqrt(ss / n + eps) };
}
