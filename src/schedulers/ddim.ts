/**
 * DDIM (Song et al., 2020) as diffusers 0.30.3's `DDIMScheduler`: deterministic at `eta` 0,
 * drawing one Gaussian per step when `eta` > 0.
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
 * diffusers' `DDIMScheduler` defaults.
 *
 * @example
 * ```ts
 * import { DDIM_DEFAULTS } from "./ddim.ts";
 * console.log(DDIM_DEFAULTS.clip_sample); // true: SD configs set it false
 * ```
 */
export const DDIM_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  clip_sample: true,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  timestep_spacing: "leading",
  rescale_betas_zero_snr: false,
};

/**
 * Options of {@link DDIMScheduler}.
 *
 * @example
 * ```ts
 * import type { DdimOptions } from "./ddim.ts";
 * const o: DdimOptions = { steps: 50, eta: 0 };
 * ```
 */
export interface DdimOptions extends StepsOptions {
  /** The DDIM η: 0 (default) is deterministic, 1 is DDPM-like. */
  eta?: number;
}

/**
 * The DDIM scheduler.
 *
 * @example
 * ```ts
 * import { DDIMScheduler } from "@denoise/sd/schedulers";
 * const s = new DDIMScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", clip_sample: false,
 *   set_alpha_to_one: false, steps_offset: 1,
 * }, { steps: 4 });
 * console.log(s.timesteps); // [751, 501, 251, 1]
 * const plan = s.step(0); // prev_sample = a·sample + b·model_output
 * ```
 */
export class DDIMScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "ddim";
  readonly #pred: "epsilon" | "v_prediction";
  readonly #eta: number;
  readonly #ratio: number;
  readonly #finalAlpha: number;
  readonly #clip: number | undefined;

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: DdimOptions) {
    const cls = "DDIMScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      DDIM_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
    const eta = options.eta ?? 0;
    if (typeof eta !== "number" || !(eta >= 0) || !Number.isFinite(eta)) {
      throw new RangeError(`${cls}: eta must be a finite number ≥ 0, got ${eta}`);
    }
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
      buffers: ["prev_sample", "ddim_x0", ...(eta > 0 ? ["noise"] : [])],
      config: r.values,
    });
    this.#pred = pred;
    this.#eta = eta;
    this.#ratio = Math.floor(train / steps);
    this.#finalAlpha = r.bool("set_alpha_to_one") ? 1 : alphasCumprod[0];
    this.#clip = r.bool("clip_sample") ? r.num("clip_sample_range") : undefined;
  }

  /** The DDIM update after U-Net call `index` (diffusers' `step`, formulas (12) and (16)). */
  protected plan(index: number): StepPlan {
    const t = this.timesteps[index];
    const prev = t - this.#ratio;
    const at = this.alphasCumprod[t];
    const ap = prev >= 0 ? this.alphasCumprod[prev] : this.#finalAlpha;
    const bt = 1 - at;
    // x0 and ε as [coef of sample, coef of model_output]
    const [x0, eps] = this.#pred === "epsilon"
      ? [[1 / Math.sqrt(at), -Math.sqrt(bt) / Math.sqrt(at)], [0, 1]]
      : [[Math.sqrt(at), -Math.sqrt(bt)], [Math.sqrt(bt), Math.sqrt(at)]];
    const variance = ((1 - ap) / bt) * (1 - at / ap);
    const std = this.#eta * Math.sqrt(variance);
    const dir = Math.sqrt(1 - ap - std * std);
    const sa = Math.sqrt(ap);
    const ops: PlanOp[] = [];
    let terms: [BufferName, number][];
    if (this.#clip !== undefined) {
      // x̂₀ is clamped; the direction keeps the unclipped ε (use_clipped_model_output=False)
      ops.push(lincomb("ddim_x0", [["sample", x0[0]], ["model_output", x0[1]]]));
      ops.push({ op: "clamp", dst: "ddim_x0", src: "ddim_x0", min: -this.#clip, max: this.#clip });
      terms = [["ddim_x0", sa], ["sample", dir * eps[0]], ["model_output", dir * eps[1]]];
    } else {
      terms = [
        ["sample", sa * x0[0] + dir * eps[0]],
        ["model_output", sa * x0[1] + dir * eps[1]],
      ];
    }
    if (this.#eta > 0) {
      ops.push({ op: "randn", dst: "noise" });
      terms.push(["noise", std]);
    }
    ops.push(lincomb("prev_sample", terms));
    return { ops, output: "prev_sample" };
  }
}
