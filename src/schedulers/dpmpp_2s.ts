/**
 * DPM-Solver++ singlestep ("DPM++ 2S", Lu et al., 2022), as diffusers 0.30.3's
 * `DPMSolverSinglestepScheduler` with `algorithm_type: "dpmsolver++"`: the steps are grouped by
 * the order list (for order 2: 1, 2, 1, 2, …, ending 1, 1), and a group's higher-order step starts
 * again from the group's first sample with all of the group's data predictions. Its timesteps
 * ignore `timestep_spacing` (linspace over `steps + 1` points, as diffusers).
 *
 * Slots: `x0_0`… (data predictions, in rotation) and `ss_sample` (the group's first sample).
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  type BufferName,
  f32,
  interpTable,
  karrasSigmas,
  lincomb,
  logTable,
  npLinspace,
  type PlanOp,
  roundHalfEven,
  type SchedulerConfig,
  sigmaTable,
  sigmaToT,
  type StepPlan,
} from "./common.ts";
import type { EulerOptions } from "./euler.ts";
import { clippedSteps, exponentialSigmas, sigmaSpacing, vpOf, x0Coefs } from "./sigmas.ts";

/**
 * diffusers' `DPMSolverSinglestepScheduler` defaults.
 *
 * @example
 * ```ts
 * import { DPM_2S_DEFAULTS } from "./dpmpp_2s.ts";
 * console.log(DPM_2S_DEFAULTS.solver_order); // 2
 * ```
 */
export const DPM_2S_DEFAULTS: Readonly<Record<string, unknown>> = {
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
  use_karras_sigmas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: -Infinity,
  variance_type: null,
  rescale_betas_zero_snr: false,
};

/**
 * diffusers' `get_order_list`: the solver order of each step.
 *
 * @example
 * ```ts
 * import { singlestepOrders } from "./dpmpp_2s.ts";
 * console.log(singlestepOrders(4, 2, true)); // [1, 2, 1, 1]
 * ```
 */
export function singlestepOrders(steps: number, order: number, lowerFinal: boolean): number[] {
  const rep = (xs: number[], k: number) => Array.from({ length: k }, () => xs).flat();
  if (order === 1) return new Array(steps).fill(1);
  if (!lowerFinal) return rep(order === 3 ? [1, 2, 3] : [1, 2], Math.floor(steps / order));
  if (order === 3) {
    const k = Math.floor(steps / 3);
    if (steps % 3 === 0) return [...rep([1, 2, 3], k - 1), 1, 2, 1];
    if (steps % 3 === 1) return [...rep([1, 2, 3], k), 1];
    return [...rep([1, 2, 3], k), 1, 2];
  }
  const k = Math.floor(steps / 2);
  return steps % 2 === 0 ? [...rep([1, 2], k - 1), 1, 1] : [...rep([1, 2], k), 1];
}

/**
 * The DPM-Solver++ singlestep scheduler.
 *
 * @example
 * ```ts
 * import { DPMSolverSinglestepScheduler } from "@denoise/sd/schedulers";
 * const s = new DPMSolverSinglestepScheduler({ beta_schedule: "scaled_linear",
 *   beta_start: 0.00085, beta_end: 0.012 }, { steps: 4 });
 * console.log(s.timesteps); // [999, 749, 500, 250]
 * ```
 */
export class DPMSolverSinglestepScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "dpmpp_2s";
  /** σ per call, then the final σ. */
  declare readonly sigmas: number[];
  /** The solver order of each step. */
  readonly orders: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #order: number;
  readonly #heun: boolean;
  #history: BufferName[] = [];

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "DPMSolverSinglestepScheduler";
    const { r, train, alphasCumprod, steps, pred } = openConfig(
      cls,
      DPM_2S_DEFAULTS,
      config,
      options.steps,
    );
    r.str("algorithm_type", ["dpmsolver++"] as const, " (the other variants are not implemented)");
    const solver = r.str("solver_type", ["midpoint", "heun", "logrho", "bh1", "bh2"] as const);
    const order = r.int("solver_order");
    if (order < 1 || order > 3) {
      throw new RangeError(`${cls} config: "solver_order" must be 1, 2 or 3, got ${order}`);
    }
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    if (r.values.variance_type !== null && r.values.variance_type !== undefined) {
      throw new RangeError(`${cls} config: "variance_type" must be null for SD checkpoints`);
    }
    const finalZero = r.str("final_sigmas_type", ["zero", "sigma_min"] as const) === "zero";
    // diffusers forces lower_order_final for uneven step counts and for a zero final σ
    const lowerFinal = r.bool("lower_order_final") || finalZero || steps % order !== 0;
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const table = sigmaTable(alphasCumprod);
    const last = train - clippedSteps(alphasCumprod, r.num("lambda_min_clipped"));
    let timesteps = npLinspace(0, last - 1, steps + 1).map(roundHalfEven).reverse().slice(0, -1);
    let sig: number[];
    if (karras) {
      const logs = logTable(table);
      sig = karrasSigmas(table[0], table[train - 1], steps);
      timesteps = sig.map((s) => roundHalfEven(sigmaToT(s, logs)));
    } else if (exponential) {
      const logs = logTable(table);
      sig = exponentialSigmas(table[0], table[train - 1], steps);
      timesteps = sig.map((s) => Math.trunc(sigmaToT(s, logs)));
    } else {
      sig = timesteps.map((t) => interpTable(t, table));
    }
    super(cls, {
      timesteps,
      sigmas: [...sig, finalZero ? 0 : table[0]].map(f32),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: ["prev_sample", "ss_sample", ...Array.from({ length: order }, (_, k) => `x0_${k}`)],
      config: r.values,
    });
    this.orders = singlestepOrders(steps, order, lowerFinal);
    this.#pred = pred;
    this.#order = order;
    this.#heun = solver === "heun";
  }

  /** `add_noise`: `α_t·original + σ_t·noise` at the call's σ. */
  override noiseCoefs(index: number): [number, number] {
    if (this.checkCall(index)) return [1, 0];
    const { alpha, sigma } = vpOf(this.sigmas[index]);
    return [alpha, sigma];
  }

  /** The singlestep update after U-Net call `index`. */
  protected plan(index: number, done: number): StepPlan {
    const x0 = x0Coefs(this.sigmas[index], this.#pred);
    const slot = `x0_${index % this.#order}`;
    this.#history = [slot, ...this.#history].slice(0, this.#order);
    // img2img may start inside a group: never use more predictions than were made. A
    // higher-order step down to σ = 0 (order 3, steps ≡ 2 mod 3) has r0 = 0 and would divide
    // by it (diffusers gives inf there): it takes the first-order step to x̂₀ instead.
    const toZero = this.sigmas[index + 1] === 0;
    const order = toZero ? 1 : Math.min(this.orders[index], done + 1);
    const ops: PlanOp[] = [lincomb(slot, [["sample", x0[0]], ["model_output", x0[1]]])];
    if (order === 1) ops.push(lincomb("ss_sample", [["sample", 1]]));
    const t = vpOf(this.sigmas[index + 1]);
    const start = vpOf(this.sigmas[index + 1 - order]); // the group's first σ
    const h = t.lambda - start.lambda;
    const em1 = Math.expm1(-h);
    const m = this.#history;
    const terms: [BufferName, number][] = [[
      "ss_sample",
      t.sigma === 0 ? 0 : t.sigma / start.sigma,
    ]];
    if (order === 1) {
      terms.push([m[0], -t.alpha * em1]);
    } else if (order === 2) {
      // D0 = m1 (the group's first), D1 = (m0 − m1)/r0
      const r0 = (vpOf(this.sigmas[index]).lambda - start.lambda) / h;
      const w1 = this.#heun ? t.alpha * (em1 / h + 1) : -0.5 * t.alpha * em1;
      terms.push([m[1], -t.alpha * em1 - w1 / r0], [m[0], w1 / r0]);
    } else {
      const l0 = vpOf(this.sigmas[index]).lambda, l1 = vpOf(this.sigmas[index - 1]).lambda;
      const r0 = (l0 - start.lambda) / h, r1 = (l1 - start.lambda) / h;
      // D1_0 = (m1 − m2)/r1, D1_1 = (m0 − m2)/r0 over [m0, m1, m2]
      const d10 = [0, 1 / r1, -1 / r1], d11 = [1 / r0, 0, -1 / r0];
      const w = t.alpha * (em1 / h + 1);
      let combo: number[];
      if (this.#heun) {
        const d1 = d10.map((v, k) => (r0 * v - r1 * d11[k]) / (r0 - r1));
        const d2 = d10.map((v, k) => (2 * (d11[k] - v)) / (r0 - r1));
        const w2 = -t.alpha * ((em1 + h) / (h * h) - 0.5);
        combo = [0, 1, 2].map((k) => w * d1[k] + w2 * d2[k]);
      } else {
        combo = d11.map((v) => w * v);
      }
      combo[2] += -t.alpha * em1; // D0 = m2
      combo.forEach((c, k) => terms.push([m[k], c]));
    }
    ops.push(lincomb("prev_sample", terms));
    return { ops, output: "prev_sample" };
  }

  /** Forgets the prediction history. */
  protected override forget(): void {
    this.#history = [];
  }
}
