/**
 * The noise-level (σ) schedules the sigma-based samplers share, each as diffusers 0.30.3 builds
 * it: the k-diffusion family (Euler, Heun, DPM2, LMS) spaces float timesteps and interpolates σ
 * from the training table; the DPM-Solver family (DPM++, UniPC, DEIS) spaces integer timesteps
 * over `steps + 1` points. Both take Karras sigmas. Also the VP pair of a σ, which the
 * DPM-Solver family works in.
 *
 * @module
 */
import {
  type BufferName,
  type ConfigReader,
  f32,
  interpTable,
  karrasSigmas,
  lincomb,
  logTable,
  npArange,
  npLinspace,
  type PlanOp,
  roundHalfEven,
  sigmaTable,
  sigmaToT,
  spacing,
  timestepGrid,
} from "./common.ts";

/**
 * The exponential σ schedule (k-diffusion's `get_sigmas_exponential`, diffusers' (≥ 0.31)
 * `use_exponential_sigmas`, A1111's and stable-diffusion.cpp's "exponential" schedule): `steps` σ
 * evenly spaced in log σ from `sigmaMax` down to `sigmaMin`.
 *
 * @example
 * ```ts
 * import { exponentialSigmas } from "./sigmas.ts";
 * console.log(exponentialSigmas(0.1, 10, 3)); // [10, 1, 0.1] (to rounding)
 * ```
 */
export function exponentialSigmas(sigmaMin: number, sigmaMax: number, steps: number): number[] {
  return npLinspace(Math.log(sigmaMax), Math.log(sigmaMin), steps).map(Math.exp);
}

/**
 * How a sigma-based sampler spaces its σ: the caller's `karras` over the config's
 * `use_karras_sigmas` and `use_exponential_sigmas` (at most one may be set, as diffusers says);
 * the effective choice is written back into the config.
 *
 * @example
 * ```ts
 * import { ConfigReader } from "@denoise/sd/schedulers";
 * import { sigmaSpacing } from "./sigmas.ts";
 * const r = new ConfigReader("X", { use_karras_sigmas: false }, { use_exponential_sigmas: true });
 * console.log(sigmaSpacing(r, undefined)); // { karras: false, exponential: true }
 * ```
 */
export function sigmaSpacing(
  r: ConfigReader,
  karrasOption: boolean | undefined,
): { karras: boolean; exponential: boolean } {
  const karras = karrasOption ?? r.values.use_karras_sigmas === true;
  const exponential = r.values.use_exponential_sigmas === true && karrasOption !== true;
  if (karras && exponential) {
    throw new RangeError(
      `${r.values._class_name} config: use_karras_sigmas and use_exponential_sigmas are both ` +
        `true; choose one schedule`,
    );
  }
  r.values.use_karras_sigmas = karras;
  r.values.use_exponential_sigmas = exponential;
  return { karras, exponential };
}

/**
 * A schedule: one timestep and one σ per step (the final σ is the caller's), plus the training
 * table of σ.
 *
 * @example
 * ```ts
 * import type { SigmaSchedule } from "./sigmas.ts";
 * const s: SigmaSchedule = { timesteps: [999], sigmas: [14.6], table: new Float64Array(1000) };
 * ```
 */
export interface SigmaSchedule {
  /** One timestep per step. */
  timesteps: number[];
  /** One σ per step (float64 before the caller's float32 rounding). */
  sigmas: number[];
  /** `((1 − ᾱ)/ᾱ)^½` per training step, float32 values. */
  table: Float64Array;
}

/**
 * The k-diffusion discrete schedule (`EulerDiscreteScheduler`, `HeunDiscreteScheduler`, `KDPM2…`,
 * `LMSDiscreteScheduler`): float32 timesteps on the config's spacing, σ interpolated from the
 * table; with `karras`, Karras σ between the spaced range's ends (or `range`) and fractional
 * timesteps from σ (rounded where the class rounds them).
 *
 * @example
 * ```ts
 * import { ConfigReader, noiseSchedule } from "./common.ts";
 * import { discreteSchedule } from "./sigmas.ts";
 * const r = new ConfigReader("X", { num_train_timesteps: 1000, beta_schedule: "linear",
 *   beta_start: 1e-4, beta_end: 0.02, timestep_spacing: "linspace", steps_offset: 0 }, {});
 * const { alphasCumprod } = noiseSchedule(r);
 * const s = discreteSchedule(r, alphasCumprod, 4, { karras: true });
 * ```
 */
export function discreteSchedule(
  r: ConfigReader,
  alphasCumprod: Float64Array,
  steps: number,
  options: {
    karras: boolean;
    exponential?: boolean;
    roundKarras?: boolean;
    range?: [number?, number?];
  },
): SigmaSchedule {
  const table = sigmaTable(alphasCumprod);
  const ts = timestepGrid(spacing(r), alphasCumprod.length, steps, {
    stepsOffset: r.int("steps_offset"),
  });
  let sigmas = ts.map((t) => interpTable(t, table));
  let timesteps = ts;
  if (options.karras || options.exponential) {
    const logSigmas = logTable(table);
    const lo = options.range?.[0] ?? sigmas[sigmas.length - 1];
    const hi = options.range?.[1] ?? sigmas[0];
    sigmas = options.karras ? karrasSigmas(lo, hi, steps) : exponentialSigmas(lo, hi, steps);
    timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
    if (options.karras && options.roundKarras) timesteps = timesteps.map(roundHalfEven);
  }
  return { timesteps: timesteps.map(f32), sigmas, table };
}

/**
 * The DPM-Solver family's schedule (`DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`,
 * `DEISMultistepScheduler`): integer timesteps — `linspace` over `[0, last − 1]` in `steps + 1`
 * points, `leading` with ratio `last // (steps + 1)` plus `steps_offset`, or `trailing` — and σ
 * from the table; with `karras`, Karras σ over the whole table and rounded timesteps. `last` is
 * `num_train_timesteps` less any λ-clipped steps.
 *
 * @example
 * ```ts
 * import { ConfigReader, noiseSchedule } from "./common.ts";
 * import { dpmSchedule } from "./sigmas.ts";
 * const r = new ConfigReader("X", { num_train_timesteps: 1000, beta_schedule: "scaled_linear",
 *   beta_start: 0.00085, beta_end: 0.012, timestep_spacing: "leading", steps_offset: 1 }, {});
 * const s = dpmSchedule(r, noiseSchedule(r).alphasCumprod, 4, { karras: false });
 * console.log(s.timesteps); // [801, 601, 401, 201]
 * ```
 */
export function dpmSchedule(
  r: ConfigReader,
  alphasCumprod: Float64Array,
  steps: number,
  options: { karras: boolean; exponential?: boolean; last?: number },
): SigmaSchedule {
  const train = alphasCumprod.length;
  const last = options.last ?? train;
  const table = sigmaTable(alphasCumprod);
  const kind = spacing(r);
  let timesteps: number[];
  if (kind === "linspace") {
    timesteps = npLinspace(0, last - 1, steps + 1).map(roundHalfEven).reverse().slice(0, -1);
  } else if (kind === "leading") {
    const ratio = Math.floor(last / (steps + 1));
    const offset = r.int("steps_offset");
    timesteps = Array.from({ length: steps }, (_, i) => (steps - i) * ratio + offset);
  } else {
    timesteps = npArange(last, 0, -train / steps).map((t) => roundHalfEven(t) - 1);
  }
  if (options.karras || options.exponential) {
    const logSigmas = logTable(table);
    if (options.karras) {
      const sigmas = karrasSigmas(table[0], table[train - 1], steps);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
      return { timesteps, sigmas, table };
    }
    // newer diffusers: no .round() here, then .astype(int64) truncates
    const sigmas = exponentialSigmas(table[0], table[train - 1], steps);
    timesteps = sigmas.map((s) => Math.trunc(sigmaToT(s, logSigmas)));
    return { timesteps, sigmas, table };
  }
  return { timesteps, sigmas: timesteps.map((t) => interpTable(t, table)), table };
}

/**
 * The VP pair (α_t, σ_t) = (1/√(σ² + 1), σ/√(σ² + 1)) and λ = log α_t − log σ_t of a noise level σ.
 *
 * @example
 * ```ts
 * import { vpOf } from "./sigmas.ts";
 * console.log(vpOf(0)); // { alpha: 1, sigma: 0, lambda: Infinity }
 * ```
 */
export function vpOf(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const s = sigma * alpha;
  return { alpha, sigma: s, lambda: Math.log(alpha) - Math.log(s) };
}

/**
 * diffusers' `searchsorted(flip(λ_t), lambda_min_clipped)`: how many of the noisiest training
 * steps the λ clip removes (0 for the default −∞). λ_t is evaluated in float32.
 *
 * @example
 * ```ts
 * import { clippedSteps } from "./sigmas.ts";
 * console.log(clippedSteps(new Float64Array([0.9, 0.5, 0.01]), -Infinity)); // 0
 * ```
 */
export function clippedSteps(alphasCumprod: Float64Array, minLambda: number): number {
  if (minLambda === -Infinity) return 0;
  let count = 0;
  for (const a of alphasCumprod) {
    const l = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
    if (l < minLambda) count++;
  }
  return count;
}

/**
 * The x̂₀ ("data prediction") of a VP model output as [coef of sample, coef of model_output] at
 * noise level σ: ε → (x − σ_t·ε)/α_t, v → α_t·x − σ_t·v.
 *
 * @example
 * ```ts
 * import { x0Coefs } from "./sigmas.ts";
 * console.log(x0Coefs(1, "v_prediction")); // [√½, −√½]
 * ```
 */
export function x0Coefs(sigma: number, pred: "epsilon" | "v_prediction"): [number, number] {
  const { alpha, sigma: s } = vpOf(sigma);
  return pred === "epsilon" ? [1 / alpha, -s / alpha] : [alpha, -s];
}

/**
 * The k-diffusion x̂₀ of a model output at noise level σ (latents at scale σ, U-Net input scaled
 * by 1/√(σ²+1)) as [coef of sample, coef of model_output]: ε → x − σ·ε, v → x/(σ²+1) −
 * σ/√(σ²+1)·v.
 *
 * @example
 * ```ts
 * import { kDenoised } from "./sigmas.ts";
 * console.log(kDenoised(2, "epsilon")); // [1, -2]
 * ```
 */
export function kDenoised(sigma: number, pred: "epsilon" | "v_prediction"): [number, number] {
  if (pred === "epsilon") return [1, -sigma];
  return [1 / (sigma * sigma + 1), -sigma / Math.sqrt(sigma * sigma + 1)];
}

/**
 * Repeats every interior entry, as diffusers interleaves two-call schedules:
 * `[a, b, c] → [a, b, b, c, c]`.
 *
 * @example
 * ```ts
 * import { interleave } from "./sigmas.ts";
 * console.log(interleave([751, 501, 251, 1])); // [751, 501, 501, 251, 251, 1, 1]
 * ```
 */
export function interleave(xs: number[]): number[] {
  return [xs[0], ...xs.slice(1).flatMap((x) => [x, x])];
}

/**
 * The k-diffusion x̂₀ ({@link kDenoised}) at σ as plan terms: `[sample, model_output]` terms, or,
 * when the config clips (`clip_sample`), ops that write the clamped x̂₀ into `slot` and the term
 * `[slot, 1]`.
 *
 * @example
 * ```ts
 * import { denoisedTerms } from "./sigmas.ts";
 * const { ops, terms } = denoisedTerms(2, "epsilon", undefined, "x0");
 * console.log(ops.length, terms); // 0 [["sample", 1], ["model_output", -2]]
 * ```
 */
export function denoisedTerms(
  sigma: number,
  pred: "epsilon" | "v_prediction",
  clip: number | undefined,
  slot: BufferName,
): { ops: PlanOp[]; terms: [BufferName, number][] } {
  const [a, b] = kDenoised(sigma, pred);
  if (clip === undefined) return { ops: [], terms: [["sample", a], ["model_output", b]] };
  return {
    ops: [
      lincomb(slot, [["sample", a], ["model_output", b]]),
      { op: "clamp", dst: slot, src: slot, min: -clip, max: clip },
    ],
    terms: [[slot, 1]],
  };
}

/**
 * The geometric midpoint of two noise levels as torch computes it in float32:
 * `exp(lerp(log a, log b, 0.5))` (0 when either is 0).
 *
 * @example
 * ```ts
 * import { logMidpoint } from "./sigmas.ts";
 * console.log(logMidpoint(1, 4)); // 2
 * ```
 */
export function logMidpoint(a: number, b: number): number {
  const la = f32(Math.log(a)), lb = f32(Math.log(b));
  if (la === -Infinity || lb === -Infinity) return 0;
  return f32(Math.exp(f32(lb - f32(f32(lb - la) * 0.5))));
}

/**
 * The fractional training timestep of each σ (diffusers' `_sigma_to_t` against the table's
 * float32 logs), float32.
 *
 * @example
 * ```ts
 * import { sigmasToT } from "./sigmas.ts";
 * const table = new Float64Array([0.1, 0.2, 0.4].map(Math.fround));
 * console.log(sigmasToT([0.2], table)); // [1]
 * ```
 */
export function sigmasToT(sigmas: number[], table: Float64Array): number[] {
  const logs = logTable(table);
  return sigmas.map((s) => Number.isNaN(s) ? NaN : f32(sigmaToT(s, logs)));
}
