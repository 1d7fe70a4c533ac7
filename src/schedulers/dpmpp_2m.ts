/**
 * DPM-Solver++ multistep ("DPM++ 2M", Lu et al., 2022), as diffusers 0.30.3's
 * `DPMSolverMultistepScheduler` with `algorithm_type: "dpmsolver++"`: the model output becomes a
 * data prediction x̂₀, and each step extrapolates from the last `solver_order` of them (2 by default,
 * midpoint or Heun form; orders 1 and 3 work too). With the defaults `final_sigmas_type: "zero"`
 * and `lower_order_final: true` the last step (and, under 15 steps, the one before) drops order.
 * Optional Karras sigmas ("DPM++ 2M Karras").
 *
 * The x̂₀ history lives in the owned slots `x0_0`…, written in rotation.
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
  npArange,
  npLinspace,
  roundHalfEven,
  type SchedulerConfig,
  sigmaTable,
  sigmaToT,
  spacing,
  type StepPlan,
} from "./common.ts";
import type { EulerOptions } from "./euler.ts";

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
 * The VP pair (α_t, σ_t) = (1/√(σ² + 1), σ/√(σ² + 1)) and λ = log α_t − log σ_t of a noise level σ.
 *
 * @example
 * ```ts
 * import { vpOf } from "./dpmpp_2m.ts";
 * console.log(vpOf(0)); // { alpha: 1, sigma: 0, lambda: Infinity }
 * ```
 */
export function vpOf(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const s = sigma * alpha;
  return { alpha, sigma: s, lambda: Math.log(alpha) - Math.log(s) };
}

/**
 * The DPM-Solver++ multistep scheduler.
 *
 * @example
 * ```ts
 * import { DPMSolverMultistepScheduler } from "./dpmpp_2m.ts";
 * const s = new DPMSolverMultistepScheduler({
 *   beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1,
 * }, { steps: 4 });
 * console.log(s.timesteps); // [801, 601, 401, 201]
 * const plan = s.step(0); // x0_0 = a·sample + b·model_output; prev_sample = c·sample + d·x0_0
 * ```
 */
export class DPMSolverMultistepScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "dpmpp_2m";
  /** σ per call, then the final σ. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #order: number;
  readonly #heun: boolean;
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
    r.str(
      "algorithm_type",
      ["dpmsolver++"] as const,
      " (the SDE and non-++ variants are not implemented)",
    );
    const solver = r.str("solver_type", ["midpoint", "heun", "logrho", "bh1", "bh2"] as const);
    const order = r.int("solver_order");
    if (order < 1 || order > 3) {
      throw new RangeError(`${cls} config: "solver_order" must be 1, 2 or 3, got ${order}`);
    }
    r.refuse("thresholding", "set it false (dynamic thresholding is not linear)");
    r.refuse("use_lu_lambdas", "set it false (not implemented)");
    r.refuse("use_exponential_sigmas", "set it false (not in diffusers 0.30.3)");
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    if (r.values.variance_type !== null && r.values.variance_type !== undefined) {
      throw new RangeError(`${cls} config: "variance_type" must be null for SD checkpoints`);
    }
    const finalZero = r.str("final_sigmas_type", ["zero", "sigma_min"] as const) === "zero";
    const karras = options.karras ?? r.bool("use_karras_sigmas");
    r.values.use_karras_sigmas = karras;
    const table = sigmaTable(alphasCumprod);
    const last = train - clippedIndex(alphasCumprod, r.num("lambda_min_clipped"));
    const kind = spacing(r);
    let ts: number[];
    if (kind === "linspace") {
      ts = npLinspace(0, last - 1, steps + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (kind === "leading") {
      const ratio = Math.floor(last / (steps + 1));
      const offset = r.int("steps_offset");
      ts = Array.from({ length: steps }, (_, i) => (steps - i) * ratio + offset);
    } else {
      ts = npArange(last, 0, -train / steps).map((t) => roundHalfEven(t) - 1);
    }
    let sig: number[];
    if (karras) {
      const logSigmas = logTable(table);
      sig = karrasSigmas(table[0], table[train - 1], steps);
      ts = sig.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else {
      sig = ts.map((t) => interpTable(t, table));
    }
    super(cls, {
      timesteps: ts,
      sigmas: [...sig, finalZero ? 0 : table[0]].map(f32),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: ["prev_sample", ...Array.from({ length: order }, (_, k) => `x0_${k}`)],
      config: r.values,
    });
    this.#pred = pred;
    this.#order = order;
    this.#heun = solver === "heun";
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
    const x0: [number, number] = this.#pred === "epsilon"
      ? [1 / s0.alpha, -s0.sigma / s0.alpha]
      : [s0.alpha, -s0.sigma];
    const h = t.lambda - s0.lambda;
    const em1 = Math.exp(-h) - 1;
    let combo: Combo;
    if (this.#order === 1 || done < 1 || lowerFinal) {
      combo = [-t.alpha * em1];
    } else if (this.#order === 2 || done < 2 || lowerSecond) {
      const r0 = (s0.lambda - vpOf(this.sigmas[index - 1]).lambda) / h;
      const d1 = [1 / r0, -1 / r0]; // D1 over (m0, m1)
      const w1 = this.#heun ? t.alpha * (em1 / h + 1) : -0.5 * t.alpha * em1;
      combo = [-t.alpha * em1 + w1 * d1[0], w1 * d1[1]];
    } else {
      const l1 = vpOf(this.sigmas[index - 1]).lambda, l2 = vpOf(this.sigmas[index - 2]).lambda;
      const r0 = (s0.lambda - l1) / h, r1 = (l1 - l2) / h;
      const d10 = [1 / r0, -1 / r0, 0], d11 = [0, 1 / r1, -1 / r1];
      const d1 = d10.map((v, k) => v + (r0 / (r0 + r1)) * (v - d11[k]));
      const d2 = d10.map((v, k) => (v - d11[k]) / (r0 + r1));
      const w1 = t.alpha * (em1 / h + 1), w2 = -t.alpha * ((em1 + h) / (h * h) - 0.5);
      combo = [0, 1, 2].map((k) => (k === 0 ? -t.alpha * em1 : 0) + w1 * d1[k] + w2 * d2[k]);
    }
    const terms: [BufferName, number][] = [["sample", t.sigma / s0.sigma]];
    combo.forEach((c, k) => terms.push([this.#history[k], c]));
    return {
      ops: [
        lincomb(slot, [["sample", x0[0]], ["model_output", x0[1]]]),
        lincomb("prev_sample", terms),
      ],
      output: "prev_sample",
    };
  }

  /** Forgets the x̂₀ history. */
  protected override forget(): void {
    this.#history = [];
  }
}

/**
 * diffusers' `searchsorted(flip(λ_t), lambda_min_clipped)`: how many of the noisiest training
 * steps the λ clip removes (0 for the default −∞). λ_t is evaluated in float32.
 */
function clippedIndex(alphasCumprod: Float64Array, minLambda: number): number {
  if (minLambda === -Infinity) return 0;
  let count = 0;
  for (const a of alphasCumprod) {
    const l = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
    if (l < minLambda) count++;
  }
  return count;
}
