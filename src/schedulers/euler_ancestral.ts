/**
 * Euler ancestral sampling ("Euler a"), as diffusers 0.30.3's `EulerAncestralDiscreteScheduler`:
 * each step takes an Euler step down to σ_down and adds fresh noise of scale σ_up, with
 * σ_down² + σ_up² = σ_next². One Gaussian draw per step.
 *
 * @module
 */
import {
  type BufferName,
  checkIndex,
  checkSteps,
  ConfigReader,
  f32,
  interpTable,
  lincomb,
  noiseSchedule,
  predictionType,
  type Scheduler,
  type SchedulerConfig,
  sigmaTable,
  spacing,
  type StepPlan,
  type StepsOptions,
  timestepGrid,
} from "./common.ts";
import { eulerCoefs, eulerInitNoiseSigma, eulerInputScale } from "./euler.ts";

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
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/**
 * The Euler ancestral scheduler.
 *
 * @example
 * ```ts
 * import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
 * const s = new EulerAncestralDiscreteScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1,
 * }, { steps: 4 });
 * const plan = s.step(0); // randn → noise; prev_sample = a·sample + b·model_output + σ_up·noise
 * ```
 */
export class EulerAncestralDiscreteScheduler implements Scheduler {
  /** Which scheduler this is. */
  readonly kind = "euler_a" as const;
  /** The timesteps, float32 values. */
  readonly timesteps: number[];
  /** σ per call, then 0. */
  readonly sigmas: number[];
  /** The initial noise scale. */
  readonly initNoiseSigma: number;
  /** ᾱ_t, float32 values. */
  readonly alphasCumprod: Float64Array;
  /** `prev_sample` and `noise`. */
  readonly buffers: BufferName[] = ["prev_sample", "noise"];
  /** The effective config. */
  readonly config: Readonly<Record<string, unknown>>;
  readonly #pred: "epsilon" | "v_prediction";
  #next = 0;

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: StepsOptions) {
    const cls = "EulerAncestralDiscreteScheduler";
    const r = new ConfigReader(cls, EULER_A_DEFAULTS, config);
    this.#pred = predictionType(r);
    const { train, alphasCumprod } = noiseSchedule(r);
    const steps = checkSteps(cls, options.steps, train);
    const table = sigmaTable(alphasCumprod);
    const kind = spacing(r);
    const ts = timestepGrid(kind, train, steps, { stepsOffset: r.int("steps_offset") });
    this.sigmas = [...ts.map((t) => interpTable(t, table)), 0].map(f32);
    this.timesteps = ts.map(f32);
    this.initNoiseSigma = eulerInitNoiseSigma(this.sigmas, kind);
    this.alphasCumprod = alphasCumprod;
    this.config = r.values;
  }

  /** `1/√(σ_index² + 1)`. */
  scaleModelInput(index: number): number {
    return eulerInputScale(this.sigmas[index]);
  }

  /** The ancestral Euler update after U-Net call `index`. */
  step(index: number): StepPlan {
    checkIndex("EulerAncestralDiscreteScheduler", index, this.#next, this.timesteps.length);
    this.#next++;
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

  /** Starts the step sequence over. */
  reset(): void {
    this.#next = 0;
  }
}
