/**
 * Linear multistep ("LMS", Karras et al., 2022), as diffusers 0.30.3's `LMSDiscreteScheduler`:
 * each step integrates the Lagrange polynomial through the last (up to four) ODE slopes over
 * [σ, σ_next]. The coefficients are the exact integrals (diffusers integrates numerically to far
 * below our tolerance). As diffusers, the polynomial's order follows the step index while the
 * available history may be shorter (img2img's first steps).
 *
 * The slopes live in the owned slots `lms_d0`…`lms_d3`, written in rotation.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import { type BufferName, f32, lincomb, type SchedulerConfig, type StepPlan } from "./common.ts";
import { eulerInitNoiseSigma, eulerInputScale, type EulerOptions } from "./euler.ts";
import { discreteSchedule, kDenoised, sigmaSpacing } from "./sigmas.ts";

/**
 * diffusers' `LMSDiscreteScheduler` defaults.
 *
 * @example
 * ```ts
 * import { LMS_DEFAULTS } from "./lms.ts";
 * console.log(LMS_DEFAULTS.beta_schedule); // "linear"
 * ```
 */
export const LMS_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  use_karras_sigmas: false,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/** The history length (diffusers' `step(order=4)`). */
const ORDER = 4;

/**
 * ∫ from `from` to `to` of the Lagrange basis polynomial that is 1 at `nodes[j]` and 0 at the
 * other nodes, exactly (by expanding the polynomial).
 *
 * @example
 * ```ts
 * import { lagrangeIntegral } from "./lms.ts";
 * console.log(lagrangeIntegral([2], 0, 2, 1)); // 1: a constant over [2, 1]
 * ```
 */
export function lagrangeIntegral(nodes: number[], j: number, from: number, to: number): number {
  let poly = [1]; // coefficients, lowest degree first
  for (let k = 0; k < nodes.length; k++) {
    if (k === j) continue;
    const d = nodes[j] - nodes[k];
    const next = new Array(poly.length + 1).fill(0);
    poly.forEach((c, p) => {
      next[p + 1] += c / d;
      next[p] -= (c * nodes[k]) / d;
    });
    poly = next;
  }
  const prim = (x: number) => poly.reduce((acc, c, p) => acc + (c * x ** (p + 1)) / (p + 1), 0);
  return prim(to) - prim(from);
}

/**
 * The LMS scheduler.
 *
 * @example
 * ```ts
 * import { LMSDiscreteScheduler } from "@denoise/sd/schedulers";
 * const s = new LMSDiscreteScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085,
 *   beta_end: 0.012 }, { steps: 20 });
 * ```
 */
export class LMSDiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "lms";
  /** σ per call, then 0. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  #history: BufferName[] = [];

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "LMSDiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(cls, LMS_DEFAULTS, config, options.steps);
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = discreteSchedule(r, alphasCumprod, steps, { karras, exponential });
    const sigmas = [...s.sigmas, 0].map(f32);
    super(cls, {
      timesteps: s.timesteps,
      sigmas,
      initNoiseSigma: eulerInitNoiseSigma(sigmas, String(r.values.timestep_spacing)),
      alphasCumprod,
      buffers: ["prev_sample", ...Array.from({ length: ORDER }, (_, k) => `lms_d${k}`)],
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

  /** The multistep update after U-Net call `index`. */
  protected plan(index: number): StepPlan {
    const sigma = this.sigmas[index];
    const [a, b] = kDenoised(sigma, this.#pred);
    const slot = `lms_d${index % ORDER}`;
    this.#history = [slot, ...this.#history].slice(0, ORDER);
    const order = Math.min(index + 1, ORDER);
    const nodes = Array.from({ length: order }, (_, k) => this.sigmas[index - k]);
    const terms: [BufferName, number][] = [["sample", 1]];
    const used = Math.min(order, this.#history.length);
    for (let j = 0; j < used; j++) {
      const c = lagrangeIntegral(nodes, j, sigma, this.sigmas[index + 1]);
      terms.push([this.#history[j], c]);
    }
    return {
      ops: [
        lincomb(slot, [["sample", (1 - a) / sigma], ["model_output", -b / sigma]]),
        lincomb("prev_sample", terms),
      ],
      output: "prev_sample",
    };
  }

  /** Forgets the slopes. */
  protected override forget(): void {
    this.#history = [];
  }
}
