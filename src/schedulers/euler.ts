/**
 * Euler's method on the probability-flow ODE (Karras et al., 2022), as diffusers 0.30.3's
 * `EulerDiscreteScheduler`: latents live at noise level σ (`initNoiseSigma` ≈ σ_max), the U-Net
 * sees them scaled by `1/√(σ² + 1)`, and each step moves along the derivative to the next σ.
 * Optional Karras sigmas. SD-Turbo uses this class with `timestep_spacing: "trailing"`.
 *
 * diffusers draws one Gaussian per step even though the default `s_churn = 0` leaves it unused;
 * the plans draw it too (into `noise`) so that a shared generator stays in step with diffusers.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import { discreteSchedule, sigmaSpacing } from "./sigmas.ts";
import {
  f32,
  lincomb,
  type SchedulerConfig,
  spacing,
  type StepPlan,
  type StepsOptions,
} from "./common.ts";

/**
 * diffusers' `EulerDiscreteScheduler` defaults.
 *
 * @example
 * ```ts
 * import { EULER_DEFAULTS } from "./euler.ts";
 * console.log(EULER_DEFAULTS.timestep_spacing); // "linspace"
 * ```
 */
export const EULER_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  interpolation_type: "linear",
  use_karras_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: "linspace",
  timestep_type: "discrete",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: "zero",
};

/**
 * Options of {@link EulerDiscreteScheduler}.
 *
 * @example
 * ```ts
 * import type { EulerOptions } from "./euler.ts";
 * const o: EulerOptions = { steps: 30, karras: true };
 * ```
 */
export interface EulerOptions extends StepsOptions {
  /** Karras sigmas; overrides the config's `use_karras_sigmas`. */
  karras?: boolean;
}

/**
 * `initNoiseSigma` of the Euler schedulers: σ_max for `linspace`/`trailing` spacing, else
 * `√(σ_max² + 1)` in float32.
 *
 * @example
 * ```ts
 * import { eulerInitNoiseSigma } from "./euler.ts";
 * console.log(eulerInitNoiseSigma([14.6146, 0], "trailing")); // 14.6146
 * ```
 */
export function eulerInitNoiseSigma(sigmas: number[], timestepSpacing: string): number {
  const max = Math.max(...sigmas);
  return timestepSpacing === "leading" ? f32(Math.sqrt(f32(f32(max * max) + 1))) : max;
}

/**
 * The Euler update `x + (x − x̂₀)/σ · (σ_next − σ)` as [sample, model_output] coefficients, with
 * `σ_to` the level stepped to (σ_next, or σ_down for the ancestral sampler).
 *
 * @example
 * ```ts
 * import { eulerCoefs } from "./euler.ts";
 * console.log(eulerCoefs(2, 0, "epsilon")); // [1, -2]: x − σ·ε
 * ```
 */
export function eulerCoefs(sigma: number, sigmaTo: number, pred: string): [number, number] {
  const dt = sigmaTo - sigma;
  if (pred === "epsilon") return [1, dt];
  // x̂₀ = −σ/√(σ²+1)·v + x/(σ²+1), derivative = (x − x̂₀)/σ
  const skip = 1 / (sigma * sigma + 1);
  const out = -sigma / Math.sqrt(sigma * sigma + 1);
  return [1 + dt * (1 - skip) / sigma, -dt * out / sigma];
}

/**
 * `1/√(σ² + 1)` with the float32 divisor diffusers' `scale_model_input` uses.
 *
 * @example
 * ```ts
 * import { eulerInputScale } from "./euler.ts";
 * console.log(eulerInputScale(0)); // 1
 * ```
 */
export function eulerInputScale(sigma: number): number {
  return 1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
}

/**
 * The Euler scheduler.
 *
 * @example
 * ```ts
 * import { EulerDiscreteScheduler } from "@denoise/sd/schedulers";
 * const turbo = new EulerDiscreteScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 *   timestep_spacing: "trailing",
 * }, { steps: 1 });
 * console.log(turbo.timesteps, turbo.initNoiseSigma); // [999] 14.6146…
 * ```
 */
export class EulerDiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "euler";
  /** σ per call, then the final σ (0, or σ_min with `final_sigmas_type: "sigma_min"`). */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "EulerDiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(
      cls,
      EULER_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    r.str("interpolation_type", ["linear"] as const, " (log_linear is not implemented)");
    r.str("timestep_type", ["discrete"] as const, " (continuous is not implemented)");
    const finalType = r.str("final_sigmas_type", ["zero", "sigma_min"] as const);
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const range: [number?, number?] = [r.optNum("sigma_min"), r.optNum("sigma_max")];
    const { timesteps, sigmas: sig, table } = discreteSchedule(r, alphasCumprod, steps, {
      karras,
      exponential,
      range,
    });
    const last = finalType === "zero" ? 0 : table[0];
    const sigmas = [...sig, last].map(f32);
    super(cls, {
      timesteps,
      sigmas,
      initNoiseSigma: eulerInitNoiseSigma(sigmas, spacing(r)),
      alphasCumprod,
      buffers: ["prev_sample", "noise"],
      config: r.values,
    });
    this.#pred = pred;
  }

  /** `1/√(σ_index² + 1)`. */
  override scaleModelInput(index: number): number {
    return eulerInputScale(this.sigmas[index]);
  }

  /** `add_noise`: `original + σ_index·noise`. */
  override noiseCoefs(index: number): [number, number] {
    return this.checkCall(index) ? [1, 0] : [1, this.sigmas[index]];
  }

  /** The Euler update after U-Net call `index`. */
  protected plan(index: number): StepPlan {
    const [a, b] = eulerCoefs(this.sigmas[index], this.sigmas[index + 1], this.#pred);
    return {
      ops: [
        { op: "randn", dst: "noise" },
        lincomb("prev_sample", [["sample", a], ["model_output", b]]),
      ],
      output: "prev_sample",
    };
  }
}
