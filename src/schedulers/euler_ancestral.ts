/**
 * Euler ancestral sampling ("Euler a"), as diffusers 0.30.3's `EulerAncestralDiscreteScheduler`:
 * each step takes an Euler step down to σ_down and adds fresh noise of scale σ_up, with
 * σ_down² + σ_up² = σ_next². One Gaussian draw per step.
 *
 * Karras sigmas ("Euler a Karras", A1111's schedule type) are ours: diffusers 0.30.3's class has
 * none; they are built as `EulerDiscreteScheduler` builds them (between the spaced range's ends,
 * fractional timesteps).
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import { f32, lincomb, type SchedulerConfig, spacing, type StepPlan } from "./common.ts";
import { eulerCoefs, eulerInitNoiseSigma, eulerInputScale, type EulerOptions } from "./euler.ts";
import { discreteSchedule, sigmaSpacing } from "./sigmas.ts";

/**
 * diffusers' `EulerAncestralDiscreteScheduler` defaults.
 *
 * @example
 * ```ts
 * import { EULER_A_DEFAULTS } from "./euler_ancestral.ts";
 * console.log(EULER_A_DEFAULTS.prediction_type); // "epsilon"
 * ```
 */
export const EULER_A_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  use_karras_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/**
 * The Euler ancestral scheduler.
 *
 * @example
 * ```ts
 * import { EulerAncestralDiscreteScheduler } from "@denoise/sd/schedulers";
 * const s = new EulerAncestralDiscreteScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1,
 * }, { steps: 4 });
 * const plan = s.step(0); // randn → noise; prev_sample = a·sample + b·model_output + σ_up·noise
 * ```
 */
export class EulerAncestralDiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "euler_a";
  /** σ per call, then 0. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "EulerAncestralDiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(
      cls,
      EULER_A_DEFAULTS,
      config,
      options.steps,
    );
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const { timesteps, sigmas: sig } = discreteSchedule(r, alphasCumprod, steps, {
      karras,
      exponential,
    });
    const sigmas = [...sig, 0].map(f32);
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

  /** The ancestral Euler update after U-Net call `index`. */
  protected plan(index: number): StepPlan {
    const from = this.sigmas[index], to = this.sigmas[index + 1];
    const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
    const down = Math.sqrt(Math.max(0, to * to - up * up));
    const [a, b] = eulerCoefs(from, down, this.#pred);
    return {
      ops: [
        { op: "randn", dst: "noise" },
        lincomb("prev_sample", [["sample", a], ["model_output", b], ["noise", up]]),
      ],
      output: "prev_sample",
    };
  }
}
