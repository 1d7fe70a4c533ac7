/**
 * What every scheduler shares: the plan types that carry a latent update to whoever owns the
 * tensors, the config reader, the training noise schedule (betas, `alphas_cumprod`, sigmas) and
 * the timestep grids, each reproducing diffusers 0.30.3 down to its float32 rounding.
 *
 * A scheduler never touches tensors. After the U-Net call `i` it returns a {@link StepPlan}: a
 * short list of operations over named latent-shaped buffers, run in order by an executor (the GPU
 * one, or `runPlanCpu` of `cpu.ts`):
 *
 * - `{ op: "randn", dst }` fills `dst` with fresh N(0, 1) values from the run's generator (the same
 *   draws, in the same order, as diffusers' `randn_tensor` calls inside `scheduler.step`);
 * - `{ op: "lincomb", dst, terms }` sets `dst = Σ coef·src`, elementwise: 1 to
 *   {@link MAX_TERMS} terms (executors split what their kernel cannot take at once), never naming
 *   `dst` among its sources;
 * - `{ op: "clamp", dst, src, min, max }` sets `dst = clamp(src, min, max)` (diffusers'
 *   `clip_sample` of the predicted x̂₀).
 *
 * Buffers: the caller provides `"sample"` (the latents the U-Net saw, before `scaleModelInput`) and
 * `"model_output"` (the guided U-Net output); plans only read those two. Plans write
 * `plan.output` (always `"prev_sample"`, the new latents), `"noise"` and the scheduler's own slots
 * (PNDM's `"ets0"`…, DPM-Solver's `"x0_0"`…), all listed in `scheduler.buffers`. Owned slots carry
 * history between steps, so keep them alive for the whole run.
 *
 * Scalars are float64, computed from the float32 values diffusers stores (betas, `alphas_cumprod`,
 * sigmas and Euler's timesteps are float32 tensors there, and are float32-rounded here).
 *
 * @module
 */
import { interpTable, npArange, npLinspace, roundHalfEven, torchLinspaceF32 } from "./numeric.ts";

export { interpTable, npArange, npLinspace, roundHalfEven, torchLinspaceF32 };

/**
 * A latent-shaped buffer named in a plan.
 *
 * @example
 * ```ts
 * import type { BufferName } from "@denoise/sd/schedulers";
 * const slot: BufferName = "x0_0";
 * ```
 */
export type BufferName = string;

/**
 * One operation of a {@link StepPlan}.
 *
 * @example
 * ```ts
 * import type { PlanOp } from "@denoise/sd/schedulers";
 * const copy: PlanOp = { op: "lincomb", dst: "ets0", terms: [{ src: "model_output", coef: 1 }] };
 * ```
 */
export type PlanOp =
  | { op: "randn"; dst: BufferName }
  | { op: "lincomb"; dst: BufferName; terms: { src: BufferName; coef: number }[] }
  | { op: "clamp"; dst: BufferName; src: BufferName; min: number; max: number };

/**
 * The most terms one lincomb op may have.
 *
 * @example
 * ```ts
 * import { MAX_TERMS } from "@denoise/sd/schedulers";
 * console.log(MAX_TERMS); // 8
 * ```
 */
export const MAX_TERMS = 8;

/**
 * The latent update after one U-Net call: run `ops` in order, then `output` holds the new sample.
 *
 * @example
 * ```ts
 * import type { StepPlan } from "@denoise/sd/schedulers";
 * const euler: StepPlan = {
 *   ops: [{ op: "lincomb", dst: "prev_sample", terms: [
 *     { src: "sample", coef: 1 }, { src: "model_output", coef: -0.5 },
 *   ] }],
 *   output: "prev_sample",
 * };
 * ```
 */
export interface StepPlan {
  /** The operations, in order. */
  ops: PlanOp[];
  /** The buffer holding the new latents once the ops ran (`"prev_sample"`). */
  output: BufferName;
}

/**
 * A diffusion scheduler with its timesteps set. Drive it like diffusers' loop:
 * `latents = noise·initNoiseSigma`; for each call `i`, the U-Net sees `latents·scaleModelInput(i)`
 * at `timesteps[i]`; then run `step(i)` with `sample` = latents and `model_output` = the guided
 * output, and take `plan.output` as the new latents. `step` must be called for each call in order
 * from `beginIndex` (it advances history, like diffusers' step counter); `reset()` starts over.
 * Two-call samplers (Heun, DPM2) list one timestep per U-Net call and have `order` 2.
 *
 * @example
 * ```ts
 * import type { Scheduler } from "@denoise/sd/schedulers";
 * import { createScheduler } from "@denoise/sd/schedulers";
 * const s: Scheduler = createScheduler("Euler a", { steps_offset: 1 }, { steps: 20 });
 * for (let i = 0; i < s.timesteps.length; i++) {
 *   const scale = s.scaleModelInput(i); // U-Net input = latents·scale at s.timesteps[i]
 *   const plan = s.step(i); // then run plan.ops and take plan.output as the latents
 * }
 * ```
 */
export interface Scheduler {
  /** Which scheduler this is: its registry kind (`"euler_a"`, `"dpmpp_2m_sde"`, …). */
  readonly kind: string;
  /** One timestep per U-Net call (PNDM repeats one: 751, 501, 501, 251, 1). */
  readonly timesteps: number[];
  /** The noise levels, one per call plus the final one, where diffusers has `scheduler.sigmas`. */
  readonly sigmas?: number[];
  /** What the initial Gaussian noise is multiplied by. */
  readonly initNoiseSigma: number;
  /** The training schedule's ᾱ_t, float32 values. */
  readonly alphasCumprod: Float64Array;
  /** Every buffer the plans write, besides the caller's `sample` and `model_output`. */
  readonly buffers: BufferName[];
  /** The effective config: the class defaults overlaid with what was given. */
  readonly config: Readonly<Record<string, unknown>>;
  /** U-Net calls per step (diffusers' `scheduler.order`: 2 for Heun, DPM2, DPM2 a). */
  readonly order: number;
  /** The call the run starts at: 0, or the begin index given to `reset` (img2img). */
  readonly beginIndex: number;
  /** The multiplier applied to the sample before the U-Net call `index`. */
  scaleModelInput(index: number): number;
  /**
   * diffusers' `add_noise` before call `index` as `[a, b]`: noisy = a·original + b·noise
   * (`index` = the number of calls gives `[1, 0]`).
   */
  noiseCoefs(index: number): [number, number];
  /** The latent update after U-Net call `index`. */
  step(index: number): StepPlan;
  /** Forgets the step history so the next call is `step(beginIndex)` (default 0). */
  reset(beginIndex?: number): void;
}

/**
 * A diffusers `scheduler_config.json` (snake_case keys; unknown keys are ignored).
 *
 * @example
 * ```ts
 * import type { SchedulerConfig } from "@denoise/sd/schedulers";
 * const cfg: SchedulerConfig = JSON.parse('{"beta_schedule": "scaled_linear", "steps_offset": 1}');
 * ```
 */
export interface SchedulerConfig {
  /** The diffusers class the config was written for. */
  _class_name?: string;
  /** Length of the training schedule (1000). */
  num_train_timesteps?: number;
  /** First beta. */
  beta_start?: number;
  /** Last beta. */
  beta_end?: number;
  /** `linear`, `scaled_linear` or `squaredcos_cap_v2`. */
  beta_schedule?: string;
  /** Explicit betas, overriding the schedule. */
  trained_betas?: number[] | null;
  /** `epsilon` or `v_prediction`. */
  prediction_type?: string;
  /** `leading`, `trailing` or `linspace`. */
  timestep_spacing?: string;
  /** Added to `leading` timesteps. */
  steps_offset?: number;
  /** Whether the step past t = 0 uses ᾱ = 1 (else ᾱ_0). */
  set_alpha_to_one?: boolean;
  /** Euler / DPM-Solver: Karras noise levels. */
  use_karras_sigmas?: boolean;
  /** Euler / DPM-Solver: `zero` or `sigma_min`. */
  final_sigmas_type?: string;
  /** Other keys of the various classes. */
  [key: string]: unknown;
}

/**
 * Scheduler construction options shared by the classes.
 *
 * @example
 * ```ts
 * import type { StepsOptions } from "./common.ts";
 * const o: StepsOptions = { steps: 25 };
 * ```
 */
export interface StepsOptions {
  /** Number of inference steps (U-Net calls, except PNDM which makes one more). */
  steps: number;
}

/**
 * `Math.fround`: rounds to the nearest float32.
 *
 * @example
 * ```ts
 * import { f32 } from "./common.ts";
 * console.log(f32(0.1)); // 0.10000000149011612
 * ```
 */
export const f32: (x: number) => number = Math.fround;

/**
 * Reads a scheduler config against a class's defaults, with errors naming the key and the fix.
 *
 * @example
 * ```ts
 * import { ConfigReader } from "@denoise/sd/schedulers";
 * const r = new ConfigReader("DDIMScheduler", { steps_offset: 0 }, { steps_offset: 1 });
 * console.log(r.int("steps_offset")); // 1
 * ```
 */
export class ConfigReader {
  /** The effective config. */
  readonly values: Record<string, unknown>;
  readonly #cls: string;

  /** Overlays `config` (null or missing keys take the default) on `defaults`. */
  constructor(cls: string, defaults: Record<string, unknown>, config: Record<string, unknown>) {
    if (config === null || typeof config !== "object" || Array.isArray(config)) {
      throw new TypeError(`${cls}: the config must be an object (scheduler_config.json's content)`);
    }
    this.#cls = cls;
    this.values = { ...defaults };
    for (const [k, v] of Object.entries(config)) {
      if (v !== null && v !== undefined) this.values[k] = v;
    }
    this.values._class_name = cls;
  }

  /** A number (the strings `-inf`/`inf` count, as JSON cannot hold infinities). */
  num(key: string): number {
    let v = this.values[key];
    if (v === "-inf" || v === "inf") v = v === "inf" ? Infinity : -Infinity;
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new TypeError(
        `${this.#cls} config: "${key}" must be a number, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  }

  /** A number, or `undefined` when the key is null or missing. */
  optNum(key: string): number | undefined {
    const v = this.values[key];
    return v === null || v === undefined ? undefined : this.num(key);
  }

  /** A non-negative integer. */
  int(key: string): number {
    const v = this.num(key);
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(
        `${this.#cls} config: "${key}" must be a non-negative integer, got ${v}`,
      );
    }
    return v;
  }

  /** A boolean. */
  bool(key: string): boolean {
    const v = this.values[key];
    if (typeof v !== "boolean") {
      throw new TypeError(
        `${this.#cls} config: "${key}" must be true or false, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  }

  /** One of `allowed`; `why` explains a value diffusers has but these plans cannot express. */
  str<T extends string>(key: string, allowed: readonly T[], why = ""): T {
    const v = this.values[key];
    if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
      throw new RangeError(
        `${this.#cls} config: "${key}" is ${JSON.stringify(v)}; supported: ${
          allowed.join(", ")
        }${why}`,
      );
    }
    return v as T;
  }

  /** Throws when `key` is true: an option whose clamping or rescaling a linear plan cannot do. */
  refuse(key: string, fix: string): void {
    if (this.values[key] === true) {
      throw new RangeError(`${this.#cls} config: "${key}: true" is not supported; ${fix}`);
    }
  }
}

/**
 * Builds a lincomb op, dropping zero terms (keeping one so the op stays well-formed).
 *
 * @example
 * ```ts
 * import { lincomb } from "./common.ts";
 * const op = lincomb("prev_sample", [["sample", 0], ["model_output", 1]]); // one term
 * ```
 */
export function lincomb(dst: BufferName, terms: [BufferName, number][]): PlanOp {
  const kept = terms.filter(([, c]) => c !== 0);
  const use = kept.length > 0 ? kept : terms.slice(0, 1);
  if (use.length > MAX_TERMS) {
    throw new Error(`internal: lincomb into ${dst} has ${use.length} terms (max ${MAX_TERMS})`);
  }
  return { op: "lincomb", dst, terms: use.map(([src, coef]) => ({ src, coef })) };
}

/**
 * Multiplies every coefficient by `k`.
 *
 * @example
 * ```ts
 * import { scaleTerms } from "./common.ts";
 * console.log(scaleTerms([["sample", 1]], 2)); // [["sample", 2]]
 * ```
 */
export function scaleTerms(terms: [BufferName, number][], k: number): [BufferName, number][] {
  return terms.map(([b, c]) => [b, c * k]);
}

/**
 * Sums the coefficients of repeated buffers, keeping first-seen order.
 *
 * @example
 * ```ts
 * import { mergeTerms } from "./common.ts";
 * console.log(mergeTerms([["sample", 1], ["x", 2], ["sample", 0.5]])); // [["sample", 1.5], ["x", 2]]
 * ```
 */
export function mergeTerms(terms: [BufferName, number][]): [BufferName, number][] {
  const out = new Map<BufferName, number>();
  for (const [b, c] of terms) out.set(b, (out.get(b) ?? 0) + c);
  return [...out];
}

/**
 * Validates `steps` against the training schedule length.
 *
 * @example
 * ```ts
 * import { checkSteps } from "./common.ts";
 * checkSteps("DDIMScheduler", 50, 1000); // 50
 * ```
 */
export function checkSteps(cls: string, steps: unknown, train: number): number {
  if (typeof steps !== "number" || !Number.isInteger(steps) || steps < 1 || steps > train) {
    throw new RangeError(
      `${cls}: steps must be an integer from 1 to num_train_timesteps (${train}), got ${steps}`,
    );
  }
  return steps;
}

/**
 * Checks that every timestep indexes the training schedule.
 *
 * @example
 * ```ts
 * import { checkTimesteps } from "./common.ts";
 * checkTimesteps("DDIMScheduler", [751, 501, 251, 1], 1000);
 * ```
 */
export function checkTimesteps(cls: string, timesteps: number[], train: number): number[] {
  const bad = timesteps.find((t) => t < 0 || t > train - 1);
  if (bad !== undefined) {
    throw new RangeError(
      `${cls}: timestep ${bad} falls outside 0…${train - 1}; use fewer steps or steps_offset 0`,
    );
  }
  return timesteps;
}

/**
 * The training schedule shared by all the classes.
 *
 * @example
 * ```ts
 * import type { NoiseSchedule } from "./common.ts";
 * const s: NoiseSchedule = { train: 2, alphasCumprod: new Float64Array([0.9, 0.8]) };
 * ```
 */
export interface NoiseSchedule {
  /** `num_train_timesteps`. */
  train: number;
  /** ᾱ_t as float32 values. */
  alphasCumprod: Float64Array;
}

/**
 * Betas and `alphas_cumprod` as diffusers builds them (float32 betas, `1 − β` in float32, a
 * cumulative product accumulated in float64 and stored as float32, as torch's CPU `cumprod` does).
 *
 * @example
 * ```ts
 * import { ConfigReader, noiseSchedule } from "./common.ts";
 * const r = new ConfigReader("DDIMScheduler", {}, {
 *   num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 * });
 * console.log(noiseSchedule(r).alphasCumprod[999]); // 0.0046600960195064545
 * ```
 */
export function noiseSchedule(r: ConfigReader): NoiseSchedule {
  r.refuse(
    "rescale_betas_zero_snr",
    "zero-terminal-SNR rescaling is not implemented; set it false",
  );
  const train = r.int("num_train_timesteps");
  if (train < 2) throw new RangeError(`num_train_timesteps must be at least 2, got ${train}`);
  let betas: Float64Array;
  const trained = r.values.trained_betas;
  if (trained !== undefined && trained !== null) {
    if (
      !Array.isArray(trained) || trained.length !== train ||
      trained.some((b) => typeof b !== "number")
    ) {
      throw new TypeError(`trained_betas must be ${train} numbers (num_train_timesteps)`);
    }
    betas = Float64Array.from(trained as number[], f32);
  } else {
    const schedule = r.str(
      "beta_schedule",
      ["linear", "scaled_linear", "squaredcos_cap_v2"] as const,
    );
    if (schedule === "squaredcos_cap_v2") {
      const bar = (t: number) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
      betas = new Float64Array(train);
      for (let i = 0; i < train; i++) {
        betas[i] = f32(Math.min(1 - bar((i + 1) / train) / bar(i / train), 0.999));
      }
    } else if (schedule === "linear") {
      betas = torchLinspaceF32(r.num("beta_start"), r.num("beta_end"), train);
    } else {
      const lin = torchLinspaceF32(r.num("beta_start") ** 0.5, r.num("beta_end") ** 0.5, train);
      betas = lin.map((b) => f32(b * b));
    }
  }
  const alphasCumprod = new Float64Array(train);
  let acc = 1;
  for (let i = 0; i < train; i++) {
    acc *= f32(1 - betas[i]);
    alphasCumprod[i] = f32(acc);
  }
  return { train, alphasCumprod };
}

/**
 * `((1 − ᾱ) / ᾱ) ** 0.5` per training step, in float32 as diffusers' tensor arithmetic.
 *
 * @example
 * ```ts
 * import { sigmaTable } from "./common.ts";
 * console.log(sigmaTable(new Float64Array([0.5]))); // [1]
 * ```
 */
export function sigmaTable(alphasCumprod: Float64Array): Float64Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/**
 * The config's `timestep_spacing`, validated.
 *
 * @example
 * ```ts
 * import { ConfigReader, spacing } from "./common.ts";
 * console.log(spacing(new ConfigReader("X", {}, { timestep_spacing: "trailing" }))); // "trailing"
 * ```
 */
export function spacing(r: ConfigReader): "leading" | "trailing" | "linspace" {
  return r.str("timestep_spacing", ["leading", "trailing", "linspace"] as const);
}

/**
 * The descending timestep grid of DDIM / Euler (`set_timesteps`): `leading` is
 * `arange(n)·(N // n)` reversed plus `steps_offset`, `trailing` is `round(arange(N, 0, −N/n)) − 1`,
 * `linspace` is `linspace(0, N − 1, n)` reversed (rounded to integers when `roundLinspace`, as
 * DDIM does; float32 as Euler does).
 *
 * @example
 * ```ts
 * import { timestepGrid } from "./common.ts";
 * console.log(timestepGrid("trailing", 1000, 4, { stepsOffset: 0 })); // [999, 749, 499, 249]
 * ```
 */
export function timestepGrid(
  kind: "leading" | "trailing" | "linspace",
  train: number,
  steps: number,
  options: { stepsOffset: number; roundLinspace?: boolean },
): number[] {
  if (kind === "leading") {
    const ratio = Math.floor(train / steps);
    return Array.from({ length: steps }, (_, i) => (steps - 1 - i) * ratio + options.stepsOffset);
  }
  if (kind === "trailing") {
    return npArange(train, 0, -train / steps).map((t) => roundHalfEven(t) - 1);
  }
  const lin = npLinspace(0, train - 1, steps).reverse();
  return lin.map(options.roundLinspace ? roundHalfEven : f32);
}

/**
 * Karras et al. (2022) noise levels, ρ = 7, from `sigmaMax` down to `sigmaMin` (float64, as
 * diffusers' `_convert_to_karras`).
 *
 * @example
 * ```ts
 * import { karrasSigmas } from "./common.ts";
 * console.log(karrasSigmas(0.0292, 14.6146, 3)); // [14.6146, ≈1.47, 0.0292]
 * ```
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, steps: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho), maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, steps).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * diffusers' `_sigma_to_t`: the fractional training timestep whose log-sigma brackets
 * `log(sigma)`, interpolated linearly, with NumPy 1.x's float32 arithmetic on the float32 table.
 *
 * @example
 * ```ts
 * import { sigmaToT } from "./common.ts";
 * const logSigmas = new Float64Array([-3, -2, -1].map(Math.fround));
 * console.log(sigmaToT(Math.exp(-1.5), logSigmas)); // 1.5
 * ```
 */
export function sigmaToT(sigma: number, logSigmas: Float64Array): number {
  const ls = f32(Math.log(Math.max(sigma, 1e-10)));
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigmas[i] <= ls) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low], hi = logSigmas[low + 1];
  const w = Math.min(1, Math.max(0, f32(f32(lo - ls) / f32(lo - hi))));
  return f32(1 - w) * low + w * (low + 1);
}

/**
 * The log of each float32 sigma, float32 (NumPy's `np.log` on a float32 array).
 *
 * @example
 * ```ts
 * import { logTable } from "./common.ts";
 * console.log(logTable(new Float64Array([1]))); // [0]
 * ```
 */
export function logTable(sigmas: Float64Array): Float64Array {
  return sigmas.map((s) => f32(Math.log(s)));
}

/**
 * The config's `prediction_type`, validated (`epsilon` or `v_prediction`).
 *
 * @example
 * ```ts
 * import { ConfigReader, predictionType } from "./common.ts";
 * console.log(predictionType(new ConfigReader("X", { prediction_type: "epsilon" }, {})));
 * ```
 */
export function predictionType(r: ConfigReader): "epsilon" | "v_prediction" {
  return r.str("prediction_type", ["epsilon", "v_prediction"] as const);
}
