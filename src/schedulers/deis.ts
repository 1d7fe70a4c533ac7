/**
 * DEIS (Zhang & Chen, 2022), as diffusers 0.30.3's `DEISMultistepScheduler` with the log-ρ
 * multistep solver: the model output becomes ε (through x̂₀), and each step integrates the
 * Lagrange polynomial through the last `solver_order` of them in log ρ (ρ = σ_t/α_t) exactly. The
 * schedule ends at σ_min, not 0; under 15 steps the last two steps drop order.
 *
 * The ε history lives in the owned slots `eps_0`…, written in rotation.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import { type BufferName, f32, lincomb, type SchedulerConfig, type StepPlan } from "./common.ts";
import type { EulerOptions } from "./euler.ts";
import { dpmSchedule, sigmaSpacing, vpOf, x0Coefs } from "./sigmas.ts";

/**
 * diffusers' `DEISMultistepScheduler` defaults.
 *
 * @example
 * ```ts
 * import { DEIS_DEFAULTS } from "./deis.ts";
 * console.log(DEIS_DEFAULTS.solver_type); // "logrho"
 * ```
 */
export const DEIS_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  algorithm_type: "deis",
  solver_type: "logrho",
  lower_order_final: true,
  use_karras_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/** ∫ (log t − log c)/(log b − log c) dt, DEIS's second-order antiderivative. */
function ind2(t: number, b: number, c: number): number {
  return (t * (-Math.log(c) + Math.log(t) - 1)) / (Math.log(b) - Math.log(c));
}

/** ∫ (log t − log c)(log t − log d) / ((log b − log c)(log b − log d)) dt. */
function ind3(t: number, b: number, c: number, d: number): number {
  const lt = Math.log(t), lc = Math.log(c), ld = Math.log(d), lb = Math.log(b);
  const num = t * (lc * (ld - lt + 1) - ld * lt + ld + lt * lt - 2 * lt + 2);
  return num / ((lb - lc) * (lb - ld));
}

/**
 * The DEIS scheduler.
 *
 * @example
 * ```ts
 * import { DEISMultistepScheduler } from "@denoise/sd/schedulers";
 * const s = new DEISMultistepScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085,
 *   beta_end: 0.012, timestep_spacing: "leading", steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [801, 601, 401, 201]
 * ```
 */
export class DEISMultistepScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "deis";
  /** σ per call, then σ_min. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #order: number;
  readonly #lowerOrderFinal: boolean;
  #history: BufferName[] = [];

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "DEISMultistepScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(cls, DEIS_DEFAULTS, config, options.steps);
    const order = r.int("solver_order");
    if (order < 1 || order > 3) {
      throw new RangeError(`${cls} config: "solver_order" must be 1, 2 or 3, got ${order}`);
    }
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
    r.str("algorithm_type", ["deis"] as const);
    r.str("solver_type", ["logrho"] as const);
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = dpmSchedule(r, alphasCumprod, steps, { karras, exponential });
    // diffusers ends at σ_min: the table's first entry, or (Karras) the schedule's last σ again
    const last = karras || exponential ? s.sigmas[s.sigmas.length - 1] : s.table[0];
    super(cls, {
      timesteps: s.timesteps,
      sigmas: [...s.sigmas, last].map(f32),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: ["prev_sample", ...Array.from({ length: order }, (_, k) => `eps_${k}`)],
      config: r.values,
    });
    this.#pred = pred;
    this.#order = order;
    this.#lowerOrderFinal = r.bool("lower_order_final");
  }

  /** `add_noise`: `α_t·original + σ_t·noise` at the call's σ. */
  override noiseCoefs(index: number): [number, number] {
    if (this.checkCall(index)) return [1, 0];
    const { alpha, sigma } = vpOf(this.sigmas[index]);
    return [alpha, sigma];
  }

  /** The log-ρ multistep update after U-Net call `index`; `done` is `lower_order_nums`. */
  protected plan(index: number, done: number): StepPlan {
    const n = this.timesteps.length;
    const short = this.#lowerOrderFinal && n < 15;
    done = Math.min(done, this.#order);
    const s0 = vpOf(this.sigmas[index]);
    const t = vpOf(this.sigmas[index + 1]);
    // ε = (x − α·x̂₀)/σ over [sample, model_output]
    const [xa, xb] = x0Coefs(this.sigmas[index], this.#pred);
    const eps: [number, number] = [(1 - s0.alpha * xa) / s0.sigma, (-s0.alpha * xb) / s0.sigma];
    const slot = `eps_${index % this.#order}`;
    this.#history = [slot, ...this.#history].slice(0, this.#order);
    const rho = (i: number) => {
      const v = vpOf(this.sigmas[i]);
      return v.sigma / v.alpha;
    };
    const terms: [BufferName, number][] = [];
    if (this.#order === 1 || done < 1 || (short && index === n - 1)) {
      const h = t.lambda - s0.lambda;
      terms.push(["sample", t.alpha / s0.alpha], [slot, -t.sigma * Math.expm1(h)]);
    } else if (this.#order === 2 || done < 2 || (short && index === n - 2)) {
      const rt = rho(index + 1), r0 = rho(index), r1 = rho(index - 1);
      const c1 = ind2(rt, r0, r1) - ind2(r0, r0, r1);
      const c2 = ind2(rt, r1, r0) - ind2(r0, r1, r0);
      terms.push(
        ["sample", t.alpha / s0.alpha],
        [this.#history[0], t.alpha * c1],
        [this.#history[1], t.alpha * c2],
      );
    } else {
      const rt = rho(index + 1), r0 = rho(index), r1 = rho(index - 1), r2 = rho(index - 2);
      const c1 = ind3(rt, r0, r1, r2) - ind3(r0, r0, r1, r2);
      const c2 = ind3(rt, r1, r2, r0) - ind3(r0, r1, r2, r0);
      const c3 = ind3(rt, r2, r0, r1) - ind3(r0, r2, r0, r1);
      terms.push(
        ["sample", t.alpha / s0.alpha],
        [this.#history[0], t.alpha * c1],
        [this.#history[1], t.alpha * c2],
        [this.#history[2], t.alpha * c3],
      );
    }
    return {
      ops: [
        lincomb(slot, [["sample", eps[0]], ["model_output", eps[1]]]),
        lincomb("prev_sample", terms),
      ],
      output: "prev_sample",
    };
  }

  /** Forgets the ε history. */
  protected override forget(): void {
    this.#history = [];
  }
}
