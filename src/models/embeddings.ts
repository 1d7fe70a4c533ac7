/**
 * The sinusoidal timestep embedding of diffusion U-Nets (diffusers `get_timestep_embedding`,
 * used by `Timesteps` / `time_proj`), computed on the CPU in float32 step by step as PyTorch does.
 *
 * @module
 */

/** Options for {@link timestepEmbedding} (the diffusers `Timesteps` config). */
export interface TimestepEmbeddingOptions {
  /** Put the cosines first (`flip_sin_to_cos`; true for SD). Default false. */
  flipSinToCos?: boolean;
  /** `downscale_freq_shift` (`freq_shift` in the U-Net config; 0 for SD). Default 1. */
  freqShift?: number;
  /** Multiplies the arguments of sin/cos. Default 1. */
  scale?: number;
  /** The longest period. Default 10000. */
  maxPeriod?: number;
}

/**
 * The `[N, dim]` sinusoidal embedding of `timesteps` (may be fractional): frequency
 * `exp(−ln(maxPeriod)·i / (dim/2 − freqShift))`, sines then cosines (swapped with `flipSinToCos`),
 * a zero column appended when `dim` is odd. Every step is rounded to float32 like PyTorch's.
 *
 * @example
 * ```ts
 * import { timestepEmbedding } from "@denoise/sd/models";
 * const emb = timestepEmbedding([999, 999], 320, { flipSinToCos: true, freqShift: 0 });
 * console.log(emb.length); // 640 = 2 × 320, cos(999·f) first
 * ```
 */
export function timestepEmbedding(
  timesteps: readonly number[],
  dim: number,
  options: TimestepEmbeddingOptions = {},
): Float32Array {
  if (!Number.isInteger(dim) || dim < 2) {
    throw new Error(`denoise: timestep embedding width must be an integer ≥ 2, got ${dim}`);
  }
  const { flipSinToCos = false, freqShift = 1, scale = 1, maxPeriod = 10000 } = options;
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const negLog = f(-Math.log(maxPeriod));
  const denom = f(half - freqShift);
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f(Math.exp(f(f(negLog * i) / denom)));
  const out = new Float32Array(timesteps.length * dim);
  timesteps.forEach((t, n) => {
    if (!Number.isFinite(t)) throw new Error(`denoise: timestep ${t} is not a finite number`);
    const row = n * dim;
    const [sinAt, cosAt] = flipSinToCos ? [half, 0] : [0, half];
    for (let i = 0; i < half; i++) {
      const arg = f(f(f(t) * freqs[i]) * scale);
      out[row + sinAt + i] = Math.sin(arg);
      out[row + cosAt + i] = Math.cos(arg);
    }
  });
  return out;
}
