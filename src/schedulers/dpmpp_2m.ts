/**
 * DPM-Solver++ multistep ("DPM++ 2M", Lu et al., 2022) and its SDE variant ("DPM++ 2M SDE"), as
 * diffusers 0.30.3's `DPMSolverMultistepScheduler` with `algorithm_type` `"dpmsolver++"` or
 * `"sde-dpmsolver++"`: the model output becomes a data prediction x̂₀, and each step extrapolates
 * from the last `solver_order` of them (2 by default, midpoint or Heun form; orders 1 and 3 work
 * too, 3 without SDE). With the defaults `final_sigmas_type: "zero"` and `lower_order_final: true`
 * the last step (and, under 15 steps, the one before) drops order. The SDE variant draws one
 * Gaussian per step. Optional Karras sigmas ("DPM++ 2M Karras", "DPM++ 2M SDE Karras").
 *
 * The x̂₀ history lives in the owned slots `x0_0`…, written in rotation.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  type BufferName,
  f32,
  lincomb,
  type PlanOp,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";
import type { EulerOptions } from "./euler.ts";
import { clippedSteps, dpmSchedule, sigmaSpacing, vpOf, x0Coefs } from "./sigmas.ts";

/**
 * diffusers' `DPMSolverMultistepScheduler` defaults.
 *
 * @example
 * ```ts
 * import { DPM_DEFAULTS } from "./dpmpp_2m.ts";
 * console.log(DPM_DEFAULTS.solver_order); // 2
 * ```
 */
export const DPM_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/** Coefficients over the x̂₀ history, newest first. */
type Combo = number[];

/**
 * The DPM-Solver++ multistep scheduler.
 *
 * @example
 * ```ts
 * import { DPMSolverMultistepScheduler } from "@denoise/sd/schedulers";
 * const s = new DPMSolverMultistepScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1,
 * }, { steps: 4 });
 * console.log(s.timesteps); // [801, 601, 401, 201]
 * const plan = s.step(0); // x0_0 = a·sample + b·model_output; prev_sample = c·sample + d·x0_0
 * ```
 */
export class DPMSolverMultistepScheduler extends SchedulerBase {
  /** Which scheduler this is: `dpmpp_2m`, or `dpmpp_2m_sde` for `sde-dpmsolver++`. */
  readonly kind: string;
  /** σ per call, then the final σ. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #order: number;
  readonly #heun: boolean;
  readonly #sde: boolean;
  readonly #lowerOrderFinal: boolean;
  readonly #eulerAtFinal: boolean;
  readonly #finalZero: boolean;
  #history: BufferName[] = [];

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "DPMSolverMultistepScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      DPM_DEFAULTS,
      config,
      options.steps,
    );
    const algorithm = r.str(
      "algorithm_type",
      ["dpmsolver++", "sde-dpmsolver++"] as const,
      " (the non-++ DPM-Solver variants are not implemented)",
    );
    const solver = r.str("solver_type", ["midpoint", "heun", "logrho", "bh1", "bh2"] as const);
    const order = r.int("solver_order");
    if (order < 1 || order > 3) {
      throw new RangeError(`${cls} config: "solver_order" must be 1, 2 or 3, got ${order}`);
    }
    if (order === 3 && algorithm === "sde-dpmsolver++") {
      throw new RangeError(`${cls} config: sde-dpmsolver++ takes solver_order 1 or 2, not 3`);
    }
    r.refuse("thresholding", "set it false (dynamic thresholding is not linear)");
    r.refuse("use_lu_lambdas", "set it false (not implemented)");
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    if (r.values.variance_type !== null && r.values.variance_type !== undefined) {
      throw new RangeError(`${cls} config: "variance_type" must be null for SD checkpoints`);
    }
    const finalZero = r.str("final_sigmas_type", ["zero", "sigma_min"] as const) === "zero";
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const last = train - clippedSteps(alphasCumprod, r.num("lambda_min_clipped"));
    const { timesteps, sigmas, table } = dpmSchedule(r, alphasCumprod, steps, {
      karras,
      exponential,
      last,
    });
    const sde = algorithm === "sde-dpmsolver++";
    super(cls, {
      timesteps,
      sigmas: [...sigmas, finalZero ? 0 : table[0]].map(f32),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: [
        "prev_sample",
        ...(sde ? ["noise"] : []),
        ...Array.from({ length: order }, (_, k) => `x0_${k}`),
      ],
      config: r.values,
    });
    this.kind = sde ? "dpmpp_2m_sde" : "dpmpp_2m";
    this.#pred = pred;
    this.#order = order;
    this.#heun = solver === "heun";
    this.#sde = sde;
    this.#finalZero = finalZero;
    this.#lowerOrderFinal = r.bool("lower_order_final");
    this.#eulerAtFinal = r.bool("euler_at_final");
  }

  /** `add_noise`: `α_t·original + σ_t·noise` at the call's σ. */
  override noiseCoefs(index: number): [number, number] {
    if (this.checkCall(index)) return [1, 0];
    const { alpha, sigma } = vpOf(this.sigmas[index]);
    return [alpha, sigma];
  }

  /** The multistep update after U-Net call `index`; `done` is diffusers' `lower_order_nums`. */
  protected plan(index: number, done: number): StepPlan {
    const n = this.timesteps.length;
    const lowerFinal = index === n - 1 &&
      (this.#eulerAtFinal || (this.#lowerOrderFinal && n < 15) || this.#finalZero);
    const lowerSecond = index === n - 2 && this.#lowerOrderFinal && n < 15;
    done = Math.min(done, this.#order);
    const s0 = vpOf(this.sigmas[index]);
    const t = vpOf(this.sigmas[index + 1]);
    const slot = `x0_${index % this.#order}`;
    this.#history = [slot, ...this.#history].slice(0, this.#order);
    const x0 = x0Coefs(this.sigmas[index], this.#pred);
    const h = t.lambda - s0.lambda;
    const em1 = Math.exp(-h) - 1;
    // first-order weight of m0 and the sample, and the weight of D1 (= (m0 − m1)/r0)
    const sde = this.#sde;
    const base = sde ? t.alpha * -Math.expm1(-2 * h) : -t.alpha * em1;
    const w1 = sde
      ? (this.#heun ? t.alpha * (-Math.expm1(-2 * h) / (-2 * h) + 1) : 0.5 * base)
      : (this.#heun ? t.alpha * (em1 / h + 1) : -0.5 * t.alpha * em1);
    let combo: Combo;
    if (this.#order === 1 || done < 1 || lowerFinal) {
      combo = [base];
    } else if (this.#order === 2 || done < 2 || lowerSecond) {
      const r0 = (s0.lambda - vpOf(this.sigmas[index - 1]).lambda) / h;
      combo = [base + w1 / r0, -w1 / r0];
    } else {
      const l1 = vpOf(this.sigmas[index - 1]).lambda, l2 = vpOf(this.sigmas[index - 2]).lambda;
      const r0 = (s0.lambda - l1) / h, r1 = (l1 - l2) / h;
      const d10 = [1 / r0, -1 / r0, 0], d11 = [0, 1 / r1, -1 / r1];
      const d1 = d10.map((v, k) => v + (r0 / (r0 + r1)) * (v - d11[k]));
      const d2 = d10.map((v, k) => (v - d11[k]) / (r0 + r1));
      const v1 = t.alpha * (em1 / h + 1), v2 = -t.alpha * ((em1 + h) / (h * h) - 0.5);
      combo = [0, 1, 2].map((k) => (k === 0 ? base : 0) + v1 * d1[k] + v2 * d2[k]);
    }
    const sampleCoef = t.sigma === 0 ? 0 : (t.sigma / s0.sigma) * (sde ? Math.exp(-h) : 1);
    const terms: [BufferName, number][] = [["sample", sampleCoef]];
    combo.forEach((c, k) => terms.push([this.#history[k], c]));
    const ops: PlanOp[] = [lincomb(slot, [["sample", x0[0]], ["model_output", x0[1]]])];
    if (sde) {
      ops.push({ op: "randn", dst: "noise" });
      terms.push(["noise", t.sigma * Math.sqrt(-Math.expm1(-2 * h))]);
    }
    ops.push(lincomb("prev_sample", terms));
    return { ops, output: "prev_sample" };
  }

  /** Forgets the x̂₀ history. */
  protected override forget(): void {
    this.#history = [];
  }
}
