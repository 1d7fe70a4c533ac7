/**
 * DPM-Solver-2 in k-diffusion's form ("DPM2", Karras et al., 2022), as diffusers 0.30.3's
 * `KDPM2DiscreteScheduler`: each step evaluates the U-Net at σ, takes an Euler step to the
 * geometric midpoint √(σ·σ_next), evaluates there (the second call's input is scaled with that
 * interpolated σ, its timestep is the midpoint's) and steps the whole way with the midpoint slope.
 * `n` steps make `2n − 1` calls; the last step, down to σ = 0, is a lone Euler step.
 *
 * The first call of a step keeps its input in `dpm2_x`.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  f32,
  lincomb,
  mergeTerms,
  scaleTerms,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";
import { eulerInitNoiseSigma, eulerInputScale, type EulerOptions } from "./euler.ts";
import {
  discreteSchedule,
  interleave,
  kDenoised,
  logMidpoint,
  sigmaSpacing,
  sigmasToT,
} from "./sigmas.ts";

/**
 * diffusers' `KDPM2DiscreteScheduler` defaults (also `KDPM2AncestralDiscreteScheduler`'s).
 *
 * @example
 * ```ts
 * import { KDPM2_DEFAULTS } from "./kdpm2.ts";
 * console.log(KDPM2_DEFAULTS.timestep_spacing); // "linspace"
 * ```
 */
export const KDPM2_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "linear",
  trained_betas: null,
  use_karras_sigmas: false,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/**
 * The DPM2 scheduler.
 *
 * @example
 * ```ts
 * import { KDPM2DiscreteScheduler } from "@denoise/sd/schedulers";
 * const s = new KDPM2DiscreteScheduler({ beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps.length); // 7: 751, ≈634, 501, ≈373, 251, ≈30, 1
 * ```
 */
export class KDPM2DiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "dpm2";
  /** σ per call (interleaved like Heun's: the step's σ_next at second calls), then 0. */
  declare readonly sigmas: number[];
  /** The interpolated σ per call (the midpoint a step's second call sits at). */
  readonly sigmasInterpol: number[];
  readonly #pred: "epsilon" | "v_prediction";

  /** Builds the scheduler from a diffusers config and sets `options.steps` steps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "KDPM2DiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(
      cls,
      KDPM2_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = discreteSchedule(r, alphasCumprod, steps, { karras, exponential, roundKarras: true });
    const sig = [...s.sigmas.map(f32), 0];
    // σ_interp[k] = √(σ_k·σ_{k−1}) (via logs, as torch's lerp); σ_interp[0] is never used
    const interp = sig.map((v, k) => k === 0 ? NaN : logMidpoint(v, sig[k - 1]));
    const tInterp = sigmasToT(interp, s.table);
    const timesteps = [s.timesteps[0]];
    for (let k = 1; k < steps; k++) timesteps.push(tInterp[k], s.timesteps[k]);
    const sigmas = [...interleave(sig.slice(0, -1)), 0];
    super(cls, {
      timesteps,
      sigmas,
      initNoiseSigma: eulerInitNoiseSigma(sigmas, String(r.values.timestep_spacing)),
      alphasCumprod,
      buffers: ["prev_sample", "dpm2_x"],
      config: r.values,
      order: 2,
    });
    this.sigmasInterpol = [...interleave(interp.slice(0, -1)), 0, 0];
    this.#pred = pred;
  }

  /** `1/√(σ² + 1)` of the call's σ (the interpolated one at second calls). */
  override scaleModelInput(index: number): number {
    return eulerInputScale(index % 2 === 0 ? this.sigmas[index] : this.sigmasInterpol[index]);
  }

  /** `add_noise`: `original + σ_index·noise`. */
  override noiseCoefs(index: number): [number, number] {
    return this.checkCall(index) ? [1, 0] : [1, this.sigmas[index]];
  }

  /** The midpoint predictor (even `done`) or the full step (odd `done`) after call `index`. */
  protected plan(index: number, done: number): StepPlan {
    const first = done % 2 === 0;
    const sigma = first ? this.sigmas[index] : this.sigmas[index - 1];
    const mid = first ? this.sigmasInterpol[index + 1] : this.sigmasInterpol[index];
    const at = first ? sigma : mid;
    const [a, b] = kDenoised(at, this.#pred);
    // slope (x − x̂₀)/σ_at over [sample, model_output]
    const slope: [string, number][] = [["sample", (1 - a) / at], ["model_output", -b / at]];
    if (first) {
      return {
        ops: [
          lincomb("dpm2_x", [["sample", 1]]),
          lincomb("prev_sample", mergeTerms([["sample", 1], ...scaleTerms(slope, mid - sigma)])),
        ],
        output: "prev_sample",
      };
    }
    const dt = this.sigmas[index] - sigma;
    return {
      ops: [lincomb("prev_sample", [["dpm2_x", 1], ...scaleTerms(slope, dt)])],
      output: "prev_sample",
    };
  }
}
