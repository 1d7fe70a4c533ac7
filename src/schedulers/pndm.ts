/**
 * PLMS, the pseudo linear multistep method, as diffusers 0.30.3's `PNDMScheduler` with
 * `skip_prk_steps` (the Stable Diffusion 1.x default): the first U-Net call is repeated at the
 * same timestep to bootstrap the multistep history, so `n` steps make `n + 1` U-Net calls.
 *
 * The history of raw model outputs (diffusers' `ets`, at most four) lives in the owned slots
 * `ets0`…`ets3`, written in rotation; `cur_sample` keeps the sample of the first call for the
 * repeated one.
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
 * diffusers' `PNDMScheduler` defaults.
 *
 * @example
 * ```ts
 * import { PNDM_DEFAULTS } from "./pndm.ts";
 * console.log(PNDM_DEFAULTS.skip_prk_steps); // false: SD configs set it true
 * ```
 */
export const PNDM_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/** PLMS weights of the last 1–4 model outputs, newest first. */
const PLMS: number[][] = [[1], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [
  55 / 24,
  -59 / 24,
  37 / 24,
  -9 / 24,
]];

/**
 * The PLMS scheduler (`PNDMScheduler` with `skip_prk_steps: true`).
 *
 * @example
 * ```ts
 * import { PNDMScheduler } from "@denoise/sd/schedulers";
 * const s = new PNDMScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", skip_prk_steps: true,
 *   steps_offset: 1,
 * }, { steps: 4 });
 * console.log(s.timesteps); // [751, 501, 501, 251, 1]
 * ```
 */
export class PNDMScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "pndm";
  readonly #pred: "epsilon" | "v_prediction";
  readonly #ratio: number;
  readonly #finalAlpha: number;
  #ets: BufferName[] = [];
  #appended = 0;

  /** Builds the scheduler from a diffusers config and sets `options.steps` steps. */
  constructor(config: SchedulerConfig, options: StepsOptions) {
    const cls = "PNDMScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      PNDM_DEFAULTS,
      config,
      options.steps,
    );
    if (r.bool("skip_prk_steps") !== true) {
      throw new RangeError(
        `${cls} config: "skip_prk_steps: false" (Runge–Kutta warm-up) is not supported; set it ` +
          "true as SD configs do",
      );
    }
    // diffusers' `_timesteps`, ascending
    const asc = timestepGrid(spacing(r), train, steps, {
      stepsOffset: r.int("steps_offset"),
      roundLinspace: true,
    }).reverse();
    const plms = [...asc.slice(0, -1), ...asc.slice(-2, -1), ...asc.slice(-1)].reverse();
    super(cls, {
      timesteps: checkTimesteps(cls, plms, train),
      initNoiseSigma: 1,
      alphasCumprod,
      // `cur_sample` keeps the first call's sample, `ets0`…`ets3` the outputs, `pndm_eps` the mix
      buffers: ["prev_sample", "cur_sample", "ets0", "ets1", "ets2", "ets3", "pndm_eps"],
      config: r.values,
    });
    this.#pred = pred;
    this.#ratio = Math.floor(train / steps);
    this.#finalAlpha = r.bool("set_alpha_to_one") ? 1 : alphasCumprod[0];
  }

  /**
   * The PLMS update after U-Net call `index` (diffusers' `step_plms`); `done` is diffusers'
   * `counter` (it starts at 0 at the begin index too).
   */
  protected plan(index: number, done: number): StepPlan {
    const ops: PlanOp[] = [];
    let t = this.timesteps[index];
    let prevT = t - this.#ratio;
    let sample: BufferName = "sample";
    // the model output actually used, as [buffer, weight] pairs
    let combo: [BufferName, number][];
    if (done !== 1) {
      const slot = `ets${this.#appended++ % 4}`;
      ops.push(lincomb(slot, [["model_output", 1]]));
      this.#ets = [...this.#ets.slice(-3), slot];
    } else {
      prevT = t;
      t = t + this.#ratio;
    }
    const ets = this.#ets;
    if (ets.length === 1 && done === 0) {
      ops.push(lincomb("cur_sample", [["sample", 1]]));
      combo = [["model_output", 1]];
    } else if (ets.length === 1 && done === 1) {
      combo = [["model_output", 0.5], [ets[0], 0.5]];
      sample = "cur_sample";
    } else {
      const w = PLMS[ets.length - 1];
      combo = w.map((c, k) => [ets[ets.length - 1 - k], c]);
    }
    if (combo.length > 3) {
      ops.push(lincomb("pndm_eps", combo));
      combo = [["pndm_eps", 1]];
    }
    ops.push(lincomb("prev_sample", this.#prevTerms(sample, combo, t, prevT)));
    return { ops, output: "prev_sample" };
  }

  /** diffusers' `_get_prev_sample` (formula (9) of the PNDM paper) as lincomb terms. */
  #prevTerms(
    sample: BufferName,
    combo: [BufferName, number][],
    t: number,
    prevT: number,
  ): [BufferName, number][] {
    const at = this.alphasCumprod[t];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.#finalAlpha;
    const bt = 1 - at, bp = 1 - ap;
    const sampleCoef = Math.sqrt(ap / at);
    const denom = at * Math.sqrt(bp) + Math.sqrt(at * bt * ap);
    const k = -(ap - at) / denom;
    // v_prediction turns the combined output M into ε = √ᾱ_t·M + √(1−ᾱ_t)·sample
    const [mScale, sExtra] = this.#pred === "epsilon" ? [1, 0] : [Math.sqrt(at), Math.sqrt(bt)];
    return [
      [sample, sampleCoef + k * sExtra],
      ...combo.map(([b, c]): [BufferName, number] => [b, k * mScale * c]),
    ];
  }

  /** Forgets the output history. */
  protected override forget(): void {
    this.#ets = [];
    this.#appended = 0;
  }
}
