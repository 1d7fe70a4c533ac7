/**
 * The machinery every scheduler shares: the fields diffusers' schedulers have after
 * `set_timesteps`, the step counter with diffusers' `begin_index` (img2img and inpainting start
 * part-way down the schedule), `add_noise` as two coefficients, and the config preamble (class
 * defaults, training schedule, step count). A sampler file subclasses {@link SchedulerBase} and
 * writes `plan`, its update after one U-Net call.
 *
 * @module
 */
import {
  type BufferName,
  checkSteps,
  ConfigReader,
  noiseSchedule,
  predictionType,
  type Scheduler,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";

/**
 * What a scheduler computes in its constructor, handed to {@link SchedulerBase}.
 *
 * @example
 * ```ts
 * import type { ScheduleSetup } from "@denoise/sd/schedulers";
 * const s: ScheduleSetup = {
 *   timesteps: [999], initNoiseSigma: 1, alphasCumprod: new Float64Array(1000), buffers: [],
 *   config: {},
 * };
 * ```
 */
export interface ScheduleSetup {
  /** One timestep per U-Net call. */
  timesteps: number[];
  /** One σ per call plus the final one (sigma-based schedulers). */
  sigmas?: number[];
  /** What the initial noise is multiplied by. */
  initNoiseSigma: number;
  /** ᾱ_t, float32 values. */
  alphasCumprod: Float64Array;
  /** Every buffer the plans write. */
  buffers: BufferName[];
  /** The effective config. */
  config: Record<string, unknown>;
  /** U-Net calls per step, diffusers' `scheduler.order` (2 for Heun and DPM2; default 1). */
  order?: number;
}

/**
 * What {@link openConfig} returns: the config reader, the training schedule, the checked step
 * count and the prediction type.
 *
 * @example
 * ```ts
 * import { openConfig, type OpenedConfig } from "@denoise/sd/schedulers";
 * const o: OpenedConfig = openConfig("DDIMScheduler", { beta_schedule: "linear", beta_start: 1e-4,
 *   beta_end: 0.02, num_train_timesteps: 1000, prediction_type: "epsilon" }, {}, 4);
 * ```
 */
export interface OpenedConfig {
  /** The config overlaid on the class defaults. */
  r: ConfigReader;
  /** `num_train_timesteps`. */
  train: number;
  /** ᾱ_t, float32 values. */
  alphasCumprod: Float64Array;
  /** The number of inference steps, validated. */
  steps: number;
  /** `epsilon` or `v_prediction`. */
  pred: "epsilon" | "v_prediction";
}

/**
 * The config preamble of every class: overlay `config` on `defaults`, build the training noise
 * schedule, validate `steps` and the prediction type.
 *
 * @example
 * ```ts
 * import { openConfig } from "@denoise/sd/schedulers";
 * import { EULER_DEFAULTS } from "./euler.ts";
 * const { train, steps, pred } = openConfig("EulerDiscreteScheduler", EULER_DEFAULTS, {}, 20);
 * ```
 */
export function openConfig(
  cls: string,
  defaults: Readonly<Record<string, unknown>>,
  config: SchedulerConfig,
  steps: unknown,
): OpenedConfig {
  const r = new ConfigReader(cls, defaults, config);
  const pred = predictionType(r);
  const { train, alphasCumprod } = noiseSchedule(r);
  return { r, train, alphasCumprod, steps: checkSteps(cls, steps, train), pred };
}

/**
 * The base of every scheduler: holds the schedule, counts the calls (so `step(i)` runs in order,
 * from {@link SchedulerBase.beginIndex}), and gives the defaults diffusers has: no input scaling,
 * `add_noise` from `alphas_cumprod[t]` (sigma-based classes override it).
 *
 * @example
 * ```ts
 * import { SchedulerBase } from "@denoise/sd/schedulers";
 * import type { StepPlan } from "@denoise/sd/schedulers";
 * class Identity extends SchedulerBase {
 *   readonly kind = "identity";
 *   constructor() {
 *     super("Identity", { timesteps: [999, 499], initNoiseSigma: 1,
 *       alphasCumprod: new Float64Array(1000).fill(0.5), buffers: ["prev_sample"], config: {} });
 *   }
 *   protected plan(): StepPlan {
 *     return { ops: [{ op: "lincomb", dst: "prev_sample", terms: [{ src: "sample", coef: 1 }] }],
 *       output: "prev_sample" };
 *   }
 * }
 * new Identity().step(0);
 * ```
 */
export abstract class SchedulerBase implements Scheduler {
  /** Which scheduler this is (its registry kind). */
  abstract readonly kind: string;
  /** One timestep per U-Net call. */
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
  /** U-Net calls per step (diffusers' `scheduler.order`). */
  readonly order: number;
  /** The diffusers class name, for error messages. */
  readonly className: string;
  #begin = 0;
  #done = 0;

  /** Takes the schedule a subclass computed. */
  constructor(className: string, setup: ScheduleSetup) {
    this.className = className;
    this.timesteps = setup.timesteps;
    if (setup.sigmas) this.sigmas = setup.sigmas;
    this.initNoiseSigma = setup.initNoiseSigma;
    this.alphasCumprod = setup.alphasCumprod;
    this.buffers = setup.buffers;
    this.config = setup.config;
    this.order = setup.order ?? 1;
  }

  /** The call the run starts at (0, or diffusers' `begin_index` after `reset(begin)`). */
  get beginIndex(): number {
    return this.#begin;
  }

  /** The multiplier applied to the sample before U-Net call `index` (1 unless overridden). */
  scaleModelInput(_index: number): number {
    return 1;
  }

  /**
   * diffusers' `add_noise` at call `index` as `[a, b]`: noisy = a·original + b·noise. Here
   * `√ᾱ_t, √(1 − ᾱ_t)` with t = `timesteps[index]`; sigma-based classes give `[1, σ_index]`.
   * `index` = the number of calls gives `[1, 0]` (the inpainting blend after the last call).
   */
  noiseCoefs(index: number): [number, number] {
    if (this.checkCall(index)) return [1, 0];
    const a = this.alphasCumprod[Math.round(this.timesteps[index])];
    return [Math.sqrt(a), Math.sqrt(1 - a)];
  }

  /** The latent update after U-Net call `index`; calls run in order from `beginIndex`. */
  step(index: number): StepPlan {
    const expected = this.#begin + this.#done;
    const total = this.timesteps.length;
    if (index !== expected) {
      throw new RangeError(
        index >= total || index < 0
          ? `${this.className}.step(${index}): only ${total} calls were set`
          : `${this.className}.step(${index}): steps run in order and ${expected} is next; ` +
            "call reset() to start over",
      );
    }
    const plan = this.plan(index, this.#done);
    this.#done++;
    return plan;
  }

  /**
   * Forgets the step history; the next call is `step(beginIndex)`. A begin index > 0 starts
   * part-way down the schedule as diffusers' `set_begin_index` (img2img, inpainting).
   */
  reset(beginIndex = 0): void {
    if (
      !Number.isInteger(beginIndex) || beginIndex < 0 || beginIndex >= this.timesteps.length ||
      beginIndex % this.order !== 0
    ) {
      throw new RangeError(
        `${this.className}.reset(${beginIndex}): the begin index must be a whole multiple of ` +
          `${this.order} (calls per step) below ${this.timesteps.length} (the number of calls)`,
      );
    }
    this.#begin = beginIndex;
    this.#done = 0;
    this.forget();
  }

  /**
   * The plan after U-Net call `index`; `done` counts the calls already stepped since the begin
   * index (diffusers' history counters: `counter`, `lower_order_nums`, Heun's first/second half).
   */
  protected abstract plan(index: number, done: number): StepPlan;

  /** Clears history a subclass keeps between calls (called by `reset`). */
  protected forget(): void {}

  /**
   * Throws unless `index` names a call or the end of the schedule; true at the end (where
   * `noiseCoefs` is `[1, 0]`: the clean original).
   */
  protected checkCall(index: number): boolean {
    const n = this.timesteps.length;
    if (!Number.isInteger(index) || index < 0 || index > n) {
      throw new RangeError(`${this.className}: call ${index} is outside 0…${n}`);
    }
    return index === n;
  }
}
