/**
 * Latent Consistency Model sampling (Luo et al., 2023), as diffusers 0.30.3's `LCMScheduler`: each
 * call predicts the denoised latents through the consistency boundary scalings, then re-noises
 * them to the next timestep with one fresh Gaussian (every step but the last). The timesteps are
 * picked from the `original_inference_steps` distillation grid (`timestep_spacing` is ignored).
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  checkTimesteps,
  lincomb,
  npLinspace,
  type PlanOp,
  type SchedulerConfig,
  type StepPlan,
  type StepsOptions,
} from "./common.ts";

/**
 * diffusers' `LCMScheduler` defaults.
 *
 * @example
 * ```ts
 * import { LCM_DEFAULTS } from "./lcm.ts";
 * console.log(LCM_DEFAULTS.original_inference_steps); // 50
 * ```
 */
export const LCM_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  trained_betas: null,
  original_inference_steps: 50,
  clip_sample: false,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  timestep_spacing: "leading",
  timestep_scaling: 10.0,
  rescale_betas_zero_snr: false,
};

/**
 * Options of {@link LCMScheduler}.
 *
 * @example
 * ```ts
 * import type { LcmOptions } from "./lcm.ts";
 * const o: LcmOptions = { steps: 4, originalInferenceSteps: 50 };
 * ```
 */
export interface LcmOptions extends StepsOptions {
  /** The distillation grid size; overrides the config's `original_inference_steps`. */
  originalInferenceSteps?: number;
}

/**
 * The LCM scheduler.
 *
 * @example
 * ```ts
 * import { LCMScheduler } from "./lcm.ts";
 * const s = new LCMScheduler({ set_alpha_to_one: false, steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [999, 759, 499, 259]
 * ```
 */
export class LCMScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "lcm";
  readonly #pred: "epsilon" | "v_prediction";
  readonly #scaling: number;
  readonly #finalAlpha: number;

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: LcmOptions) {
    const cls = "LCMScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      LCM_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("clip_sample", "set it false (x0 clamping is not linear)");
    r.refuse("thresholding", "set it false (dynamic thresholding is not linear)");
    const original = options.originalInferenceSteps ?? r.int("original_inference_steps");
    if (!Number.isInteger(original) || original < 1 || original > train) {
      throw new RangeError(
        `${cls}: original_inference_steps must be an integer from 1 to ${train}, got ${original}`,
      );
    }
    if (steps > original) {
      throw new RangeError(
        `${cls}: ${steps} steps exceed original_inference_steps (${original}); use at most ${original}`,
      );
    }
    const k = Math.floor(train / original);
    const grid = Array.from({ length: original }, (_, i) => (original - i) * k - 1); // descending
    const picks = npLinspace(0, original, steps, false).map(Math.floor);
    super(cls, {
      timesteps: checkTimesteps(cls, picks.map((i) => grid[i]), train),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: ["prev_sample", "noise"],
      config: r.values,
    });
    this.#pred = pred;
    this.#scaling = r.num("timestep_scaling");
    this.#finalAlpha = r.bool("set_alpha_to_one") ? 1 : alphasCumprod[0];
  }

  /** The consistency step after U-Net call `index`. */
  protected plan(index: number): StepPlan {
    const n = this.timesteps.length;
    const t = this.timesteps[index];
    const prevT = index + 1 < n ? this.timesteps[index + 1] : t;
    const at = this.alphasCumprod[t];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.#finalAlpha;
    const bt = 1 - at;
    // boundary-condition scalings, σ_data = 0.5
    const scaled = t * this.#scaling;
    const cSkip = 0.25 / (scaled * scaled + 0.25);
    const cOut = scaled / Math.sqrt(scaled * scaled + 0.25);
    const x0 = this.#pred === "epsilon"
      ? [1 / Math.sqrt(at), -Math.sqrt(bt) / Math.sqrt(at)]
      : [Math.sqrt(at), -Math.sqrt(bt)];
    const denoised = [cOut * x0[0] + cSkip, cOut * x0[1]];
    const ops: PlanOp[] = [];
    if (index !== n - 1) {
      const a = Math.sqrt(ap);
      ops.push({ op: "randn", dst: "noise" });
      ops.push(lincomb("prev_sample", [
        ["sample", a * denoised[0]],
        ["model_output", a * denoised[1]],
        ["noise", Math.sqrt(1 - ap)],
      ]));
    } else {
      ops.push(lincomb("prev_sample", [["sample", denoised[0]], ["model_output", denoised[1]]]));
    }
    return { ops, output: "prev_sample" };
  }
}
