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
  type BufferName,
  checkTimesteps,
  lincomb,
  npLinspace,
  type PlanOp,
  scaleTerms,
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
  clip_sample_range: 1.0,
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
 * import { LCMScheduler } from "@denoise/sd/schedulers";
 * const s = new LCMScheduler({ set_alpha_to_one: false, steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [999, 759, 499, 259]
 * ```
 */
export class LCMScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "lcm";
  readonly #pred: "epsilon" | "v_prediction";
  readonly #scaling: number;
  readonly #clip: number | undefined;
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
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
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
      buffers: ["prev_sample", "noise", "lcm_x0"],
      config: r.values,
    });
    this.#pred = pred;
    this.#scaling = r.num("timestep_scaling");
    this.#clip = r.bool("clip_sample") ? r.num("clip_sample_range") : undefined;
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
    const ops: PlanOp[] = [];
    // denoised = c_out·x̂₀ + c_skip·x, with x̂₀ clamped when the config clips
    let denoised: [BufferName, number][];
    if (this.#clip !== undefined) {
      ops.push(lincomb("lcm_x0", [["sample", x0[0]], ["model_output", x0[1]]]));
      ops.push({ op: "clamp", dst: "lcm_x0", src: "lcm_x0", min: -this.#clip, max: this.#clip });
      denoised = [["lcm_x0", cOut], ["sample", cSkip]];
    } else {
      denoised = [["sample", cOut * x0[0] + cSkip], ["model_output", cOut * x0[1]]];
    }
    if (index !== n - 1) {
      ops.push({ op: "randn", dst: "noise" });
      ops.push(lincomb("prev_sample", [
        ...scaleTerms(denoised, Math.sqrt(ap)),
        ["noise", Math.sqrt(1 - ap)],
      ]));
    } else {
      ops.push(lincomb("prev_sample", denoised));
    }
    return { ops, output: "prev_sample" };
  }
}
