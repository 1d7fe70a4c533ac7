/**
 * Heun's method (Karras et al., 2022, Algorithm 1), as diffusers 0.30.3's `HeunDiscreteScheduler`:
 * each step calls the U-Net twice — an Euler predictor to the next σ, then a corrector that
 * averages the two slopes — so `n` steps list `2n − 1` calls (the last step, down to σ = 0, is a
 * lone Euler step). The timesteps and σ repeat every interior value (751, 501, 501, 251, 251, …).
 *
 * The predictor keeps its input in `heun_x` and its slope in `heun_d` for the corrector.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  type BufferName,
  f32,
  lincomb,
  mergeTerms as merge,
  scaleTerms as scale,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";
import { eulerInitNoiseSigma, eulerInputScale, type EulerOptions } from "./euler.ts";
import { denoisedTerms, discreteSchedule, interleave, sigmaSpacing } from "./sigmas.ts";

/**
 * diffusers' `HeunDiscreteScheduler` defaults.
 *
 * @example
 * ```ts
 * import { HEUN_DEFAULTS } from "./heun.ts";
 * console.log(HEUN_DEFAULTS.beta_start); // 0.00085
 * ```
 */
export const HEUN_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  use_karras_sigmas: false,
  clip_sample: false,
  clip_sample_range: 1.0,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/**
 * The Heun scheduler.
 *
 * @example
 * ```ts
 * import { HeunDiscreteScheduler } from "@denoise/sd/schedulers";
 * const s = new HeunDiscreteScheduler({ beta_schedule: "scaled_linear", timestep_spacing: "leading",
 *   steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [751, 501, 501, 251, 251, 1, 1]
 * ```
 */
export class HeunDiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "heun";
  /** σ per call (interleaved like the timesteps), then 0. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #clip: number | undefined;

  /** Builds the scheduler from a diffusers config and sets `options.steps` steps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "HeunDiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(cls, HEUN_DEFAULTS, config, options.steps);
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = discreteSchedule(r, alphasCumprod, steps, { karras, exponential });
    const sigmas = [...interleave(s.sigmas.map(f32)), 0];
    super(cls, {
      timesteps: interleave(s.timesteps),
      sigmas,
      initNoiseSigma: eulerInitNoiseSigma(sigmas, String(r.values.timestep_spacing)),
      alphasCumprod,
      buffers: ["prev_sample", "heun_x", "heun_d", "heun_x0"],
      config: r.values,
      order: 2,
    });
    this.#pred = pred;
    this.#clip = r.bool("clip_sample") ? r.num("clip_sample_range") : undefined;
  }

  /** `1/√(σ² + 1)` of the call's σ. */
  override scaleModelInput(index: number): number {
    return eulerInputScale(this.sigmas[index]);
  }

  /** `add_noise`: `original + σ_index·noise`. */
  override noiseCoefs(index: number): [number, number] {
    return this.checkCall(index) ? [1, 0] : [1, this.sigmas[index]];
  }

  /** The predictor (even `done`) or corrector (odd `done`) after U-Net call `index`. */
  protected plan(index: number, done: number): StepPlan {
    const first = done % 2 === 0;
    const sigma = first ? this.sigmas[index] : this.sigmas[index - 1];
    const next = first ? this.sigmas[index + 1] : this.sigmas[index];
    const at = first ? sigma : next; // the σ the U-Net input sits at
    const { ops, terms: x0 } = denoisedTerms(at, this.#pred, this.#clip, "heun_x0");
    // slope d = (x − x̂₀)/σ_at
    const slope: [BufferName, number][] = [
      ["sample", 1 / at],
      ...x0.map(([b, c]): [BufferName, number] => [b, -c / at]),
    ];
    const dt = next - sigma;
    if (first) {
      ops.push(lincomb("heun_x", [["sample", 1]]));
      ops.push(lincomb("heun_d", merge(slope)));
      ops.push(lincomb("prev_sample", merge([["sample", 1], ...scale(slope, dt)])));
    } else {
      // x_stored + dt·(d_stored + d)/2
      ops.push(lincomb(
        "prev_sample",
        merge([
          ["heun_x", 1],
          ["heun_d", dt / 2],
          ...scale(slope, dt / 2),
        ]),
      ));
    }
    return { ops, output: "prev_sample" };
  }
}
