/**
 * Numeric helpers the schedulers share, reproducing NumPy's and PyTorch's CPU arithmetic where
 * diffusers relies on it (`np.linspace`, `np.arange`, `np.round`, `np.interp`, and `torch.linspace`
 * in float32).
 *
 * @module
 */
const f32: (x: number) => number = Math.fround;

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, bit for bit: torch 1.13's
 * AVX2 kernel computes each 8-lane chunk from `start + step·idx` (or `end − step·(steps−idx−1)`
 * past halfway, contracted to one FMA) plus `step·lane`, in float32.
 *
 * @example
 * ```ts
 * import { torchLinspaceF32 } from "./numeric.ts";
 * const b = torchLinspaceF32(0.00085 ** 0.5, 0.012 ** 0.5, 1000);
 * ```
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  const s = f32(start), e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32((e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const scalar = (i: number) => i < half ? f32(s + step * i) : f32(e - step * (steps - i - 1));
  const V = 8;
  let idx = 0;
  for (; idx + 2 * V <= steps; idx += V) {
    if (idx + V <= half || idx >= half) {
      const base = scalar(idx);
      for (let j = 0; j < V; j++) out[idx + j] = f32(base + f32(step * j));
    } else {
      for (let j = 0; j < V; j++) out[idx + j] = scalar(idx + j);
    }
  }
  for (; idx < steps; idx++) out[idx] = scalar(idx);
  return out;
}

/**
 * `np.linspace(start, stop, num, endpoint)` in float64.
 *
 * @example
 * ```ts
 * import { npLinspace } from "./numeric.ts";
 * console.log(npLinspace(0, 50, 4, false)); // [0, 12.5, 25, 37.5]
 * ```
 */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const step = (stop - start) / div;
  const out = Array.from({ length: num }, (_, i) => div > 0 ? i * step + start : start);
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` for floats (values `start + i·((start + step) − start)`).
 *
 * @example
 * ```ts
 * import { npArange } from "./numeric.ts";
 * console.log(npArange(1000, 0, -250)); // [1000, 750, 500, 250]
 * ```
 */
export function npArange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const delta = (start + step) - start;
  return Array.from(
    { length: n },
    (_, i) => i === 0 ? start : i === 1 ? start + step : start + i * delta,
  );
}

/**
 * `np.round`: to the nearest integer, halves to even.
 *
 * @example
 * ```ts
 * import { roundHalfEven } from "./numeric.ts";
 * console.log(roundHalfEven(937.5), roundHalfEven(812.5)); // 938 812
 * ```
 */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `np.interp(x, arange(len(fp)), fp)`.
 *
 * @example
 * ```ts
 * import { interpTable } from "./numeric.ts";
 * console.log(interpTable(1.5, [0, 2, 4])); // 3
 * ```
 */
export function interpTable(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (x === j) return fp[j];
  return (fp[j + 1] - fp[j]) * (x - j) + fp[j];
}
