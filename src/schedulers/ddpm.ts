/**
 * DDPM ancestral sampling (Ho et al., 2020), as diffusers 0.30.3's `DDPMScheduler` on a spaced
 * schedule: each step moves to the posterior mean of x_{t'} given x̂₀ (clipped where the config
 * says `clip_sample`, the class default) and adds noise of the posterior's fixed variance
 * (`fixed_small`, `fixed_small_log` or `fixed_large`). One Gaussian per step while t > 0.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  type BufferName,
  checkTimesteps,
  lincomb,
  type PlanOp,
  type SchedulerConfig,
  spacing,
  type StepPlan,
  type StepsOptions,
  timestepGrid,
} from "./common.ts";

/**
 * diffusers' `DDPMScheduler` defaults.
 *
 * @example
 * ```ts
 * import { DDPM_DEFAULTS } from "./ddpm.ts";
 * console.log(DDPM_DEFAULTS.variance_type); // "fixed_small"
 * ```
 */
export const DDPM_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  variance_type: "fixed_small",
  clip_sample: true,
  prediction_type: "epsilon",
  thresholding: false,
  clip_sample_range: 1.0,
  timestep_spacing: "leading",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/**
 * The DDPM scheduler.
 *
 * @example
 * ```ts
 * import { DDPMScheduler } from "@denoise/sd/schedulers";
 * const s = new DDPMScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085,
 *   beta_end: 0.012, clip_sample: false, steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [751, 501, 251, 1]
 * ```
 */
export class DDPMScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "ddpm";
  readonly #pred: "epsilon" | "v_prediction";
  readonly #variance: "fixed_small" | "fixed_small_log" | "fixed_large";
  readonly #clip: number | undefined;

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: StepsOptions) {
    const cls = "DDPMScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      DDPM_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
    const variance = r.str(
      "variance_type",
      ["fixed_small", "fixed_small_log", "fixed_large"] as const,
      " (learned variances need a U-Net that predicts them)",
    );
    const timesteps = checkTimesteps(
      cls,
      timestepGrid(spacing(r), train, steps, {
        stepsOffset: r.int("steps_offset"),
        roundLinspace: true,
      }),
      train,
    );
    super(cls, {
      timesteps,
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: ["prev_sample", "noise", "ddpm_x0"],
      config: r.values,
    });
    this.#pred = pred;
    this.#variance = variance;
    this.#clip = r.bool("clip_sample") ? r.num("clip_sample_range") : undefined;
  }

  /** The posterior step after U-Net call `index` (diffusers' `step`, formulas (6), (7), (15)). */
  protected plan(index: number): StepPlan {
    const t = this.timesteps[index];
    const prevT = index + 1 < this.timesteps.length ? this.timesteps[index + 1] : -1;
    const at = this.alphasCumprod[t];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
    const bt = 1 - at, bp = 1 - ap;
    const curAlpha = at / ap, curBeta = 1 - curAlpha;
    const x0: [number, number] = this.#pred === "epsilon"
      ? [1 / Math.sqrt(at), -Math.sqrt(bt) / Math.sqrt(at)]
      : [Math.sqrt(at), -Math.sqrt(bt)];
    const x0Coef = (Math.sqrt(ap) * curBeta) / bt;
    const sampleCoef = (Math.sqrt(curAlpha) * bp) / bt;
    const ops: PlanOp[] = [];
    let terms: [BufferName, number][];
    if (this.#clip !== undefined) {
      const c = this.#clip;
      ops.push(lincomb("ddpm_x0", [["sample", x0[0]], ["model_output", x0[1]]]));
      ops.push({ op: "clamp", dst: "ddpm_x0", src: "ddpm_x0", min: -c, max: c });
      terms = [["ddpm_x0", x0Coef], ["sample", sampleCoef]];
    } else {
      terms = [["sample", x0Coef * x0[0] + sampleCoef], ["model_output", x0Coef * x0[1]]];
    }
    if (t > 0) {
      const variance = Math.max((bp / bt) * curBeta, 1e-20);
      const std = this.#variance === "fixed_large" ? Math.sqrt(curBeta) : Math.sqrt(variance);
      ops.push({ op: "randn", dst: "noise" });
      terms.push(["noise", std]);
    }
    ops.push(lincomb("prev_sample", terms));
    return { ops, output: "prev_sample" };
  }
}
