/**
 * Float64 references of the elementwise ops (plain loops), for tests and the benchmark's checks.
 *
 * @module
 */

/**
 * erf(x) in float64 to ~1e-15 (Taylor series near 0, continued fraction for the tail).
 *
 * @example
 * ```ts
 * import { erf } from "./elementwise.ts";
 * erf(1); // 0.8427007929497149
 * ```
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = ax, sum = ax;
    for (let n = 1; n < 80; n++) {
      term *= -ax * ax / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * sum * 2 / Math.sqrt(Math.PI);
  }
  // erfc via Lentz's continued fraction
  let f = ax, c = ax, d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? 1e-300 : 1 / d;
    c = ax + an / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/**
 * The activations by name, float64.
 *
 * @example
 * ```ts
 * import { ACTIVATIONS } from "./elementwise.ts";
 * ACTIVATIONS.silu(1); // 0.7310585786300049
 * ```
 */
export const ACTIVATIONS: Record<string, (v: number) => number> = {
  silu: (v) => v / (1 + Math.exp(-v)),
  gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  quick_gelu: (v) => v / (1 + Math.exp(-1.702 * v)),
  relu: (v) => Math.max(v, 0),
  identity: (v) => v,
};

/**
 * y = a op b with b broadcast as `(i / inner) % b.length`.
 *
 * @example
 * ```ts
 * import { binaryRef } from "./elementwise.ts";
 * binaryRef([1, 2, 3, 4], [10, 20], "add", 1); // [11, 22, 13, 24]
 * ```
 */
export function binaryRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  op: "add" | "sub" | "mul",
  inner: number,
): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = b[Math.floor(i / inner) % b.length];
    out[i] = op === "add" ? a[i] + v : op === "sub" ? a[i] - v : a[i] * v;
  }
  return out;
}
