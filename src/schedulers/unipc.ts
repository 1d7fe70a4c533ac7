/**
 * UniPC (Zhao et al., 2023), as diffusers 0.30.3's `UniPCMultistepScheduler` with `predict_x0`:
 * after each U-Net call the corrector UniC first refines the previous step's result with the new
 * data prediction, then the predictor UniP extrapolates from the corrected sample and the last
 * `solver_order` data predictions (B(h) = hh for `bh1`, e^hh − 1 for `bh2`). Both are linear in the
 * stored predictions, so a step is two lincombs.
 *
 * Slots: `x0_0`… (the data predictions, in rotation), `unipc_last` (the sample the last predictor
 * started from) and `unipc_x` (the corrected sample).
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  type BufferName,
  f32,
  lincomb,
  mergeTerms,
  type PlanOp,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";
import type { EulerOptions } from "./euler.ts";
import { dpmSchedule, sigmaSpacing, vpOf, x0Coefs } from "./sigmas.ts";

/**
 * diffusers' `UniPCMultistepScheduler` defaults.
 *
 * @example
 * ```ts
 * import { UNIPC_DEFAULTS } from "./unipc.ts";
 * console.log(UNIPC_DEFAULTS.solver_type); // "bh2"
 * ```
 */
export const UNIPC_DEFAULTS: Readonly<Record<string, unknown>> = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  predict_x0: true,
  solver_type: "bh2",
  lower_order_final: true,
  disable_corrector: [],
  solver_p: null,
  use_karras_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
  final_sigmas_type: "zero",
  rescale_betas_zero_snr: false,
};

/**
 * Solves the small dense system `A·x = b` (Gaussian elimination with partial pivoting), as
 * `torch.linalg.solve` for UniPC's ρ coefficients.
 *
 * @example
 * ```ts
 * import { solve } from "./unipc.ts";
 * console.log(solve([[2, 0], [0, 4]], [2, 2])); // [1, 0.5]
 * ```
 */
export function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    [m[c], m[p]] = [m[p], m[c]];
    for (let r = c + 1; r < n; r++) {
      const f = m[r][c] / m[c][c];
      for (let k = c; k <= n; k++) m[r][k] -= f * m[c][k];
    }
  }
  const x = new Array(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let acc = m[r][n];
    for (let k = r + 1; k < n; k++) acc -= m[r][k] * x[k];
    x[r] = acc / m[r][r];
  }
  return x;
}

/**
 * The UniPC scheduler.
 *
 * @example
 * ```ts
 * import { UniPCMultistepScheduler } from "@denoise/sd/schedulers";
 * const s = new UniPCMultistepScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085,
 *   beta_end: 0.012, timestep_spacing: "leading", steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps); // [801, 601, 401, 201]
 * ```
 */
export class UniPCMultistepScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "unipc";
  /** σ per call, then the final σ. */
  declare readonly sigmas: number[];
  readonly #pred: "epsilon" | "v_prediction";
  readonly #order: number;
  readonly #bh2: boolean;
  readonly #lowerOrderFinal: boolean;
  readonly #noCorrector: Set<number>;
  /** Data-prediction slots, newest first, with the call each came from. */
  #history: { slot: BufferName; call: number }[] = [];
  #thisOrder = 0;

  /** Builds the scheduler from a diffusers config and sets `options.steps` timesteps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "UniPCMultistepScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(
      cls,
      UNIPC_DEFAULTS,
      config,
      options.steps,
    );
    const order = r.int("solver_order");
    if (order < 1 || order > 3) {
      throw new RangeError(`${cls} config: "solver_order" must be 1, 2 or 3, got ${order}`);
    }
    r.refuse("thresholding", "set it false (dynamic thresholding is not implemented)");
    if (r.bool("predict_x0") !== true) {
      throw new RangeError(`${cls} config: "predict_x0: false" (UniPC on ε) is not implemented`);
    }
    if (r.values.solver_p !== null && r.values.solver_p !== undefined) {
      throw new RangeError(`${cls} config: "solver_p" (an external predictor) is not supported`);
    }
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const solver = r.str("solver_type", ["bh1", "bh2"] as const);
    const finalZero = r.str("final_sigmas_type", ["zero", "sigma_min"] as const) === "zero";
    const disable = r.values.disable_corrector;
    if (!Array.isArray(disable) || disable.some((d) => !Number.isInteger(d))) {
      throw new TypeError(`${cls} config: "disable_corrector" must be a list of step indices`);
    }
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = dpmSchedule(r, alphasCumprod, steps, { karras, exponential });
    const lastSigma = finalZero
      ? 0
      : karras || exponential
      ? s.sigmas[s.sigmas.length - 1]
      : s.table[0];
    super(cls, {
      timesteps: s.timesteps,
      sigmas: [...s.sigmas, lastSigma].map(f32),
      initNoiseSigma: 1,
      alphasCumprod,
      buffers: [
        "prev_sample",
        "unipc_last",
        "unipc_x",
        ...Array.from({ length: order + 1 }, (_, k) => `x0_${k}`),
      ],
      config: r.values,
    });
    this.#pred = pred;
    this.#order = order;
    this.#bh2 = solver === "bh2";
    this.#lowerOrderFinal = r.bool("lower_order_final");
    this.#noCorrector = new Set(disable as number[]);
  }

  /** `add_noise`: `α_t·original + σ_t·noise` at the call's σ. */
  override noiseCoefs(index: number): [number, number] {
    if (this.checkCall(index)) return [1, 0];
    const { alpha, sigma } = vpOf(this.sigmas[index]);
    return [alpha, sigma];
  }

  /** Corrector (from the second call on), then predictor, after U-Net call `index`. */
  protected plan(index: number, done: number): StepPlan {
    const ops: PlanOp[] = [];
    const x0 = x0Coefs(this.sigmas[index], this.#pred);
    // order + 1 slots: the corrector still reads the oldest when the new prediction is written
    const slot = `x0_${index % (this.#order + 1)}`;
    ops.push(lincomb(slot, [["sample", x0[0]], ["model_output", x0[1]]]));
    let sample: BufferName = "sample";
    if (done > 0 && !this.#noCorrector.has(index - 1)) {
      // UniC: refine the last predictor's result from its start `unipc_last` and m_t = slot
      const terms = this.#update(index - 1, this.#thisOrder, "unipc_last", slot);
      ops.push(lincomb("unipc_x", terms));
      sample = "unipc_x";
    }
    this.#history = [{ slot, call: index }, ...this.#history].slice(0, this.#order);
    const n = this.timesteps.length;
    const cap = this.#lowerOrderFinal ? Math.min(this.#order, n - index) : this.#order;
    this.#thisOrder = Math.min(cap, Math.min(done, this.#order) + 1);
    ops.push(lincomb("unipc_last", [[sample, 1]]));
    ops.push(lincomb("prev_sample", this.#update(index, this.#thisOrder, sample)));
    return { ops, output: "prev_sample" };
  }

  /**
   * The UniP step from call `from` (σ_from → σ_{from+1}) of the given order starting at `x`, or,
   * with `model`, the UniC correction of that step using the model's prediction at σ_{from+1}.
   * The history's newest entry is the prediction at `from`.
   */
  #update(from: number, order: number, x: BufferName, model?: BufferName): [BufferName, number][] {
    const s0 = vpOf(this.sigmas[from]);
    const t = vpOf(this.sigmas[from + 1]);
    const h = t.lambda - s0.lambda;
    const hh = -h;
    const phi1 = Math.expm1(hh);
    const bh = this.#bh2 ? Math.expm1(hh) : hh;
    // history at the time of the step from `from`: newest = the prediction at `from`
    const hist = this.#history.filter((e) => e.call <= from);
    const m0 = hist[0].slot;
    const rks: number[] = [];
    const d1s: [BufferName, number][][] = []; // D1_k = (m_k − m0)/r_k
    for (let i = 1; i < order; i++) {
      const e = hist[i];
      const rk = (vpOf(this.sigmas[e.call]).lambda - s0.lambda) / h;
      rks.push(rk);
      d1s.push([[e.slot, 1 / rk], [m0, -1 / rk]]);
    }
    rks.push(1);
    const rMat: number[][] = [];
    const b: number[] = [];
    let hPhiK = phi1 / hh - 1;
    let fact = 1;
    for (let i = 1; i <= order; i++) {
      rMat.push(rks.map((r) => r ** (i - 1)));
      b.push((hPhiK * fact) / bh);
      fact *= i + 1;
      hPhiK = hPhiK / hh - 1 / fact;
    }
    const terms: [BufferName, number][] = [
      [x, t.sigma === 0 ? 0 : t.sigma / s0.sigma],
      [m0, -t.alpha * phi1],
    ];
    let rhos: number[];
    if (model) {
      rhos = order === 1 ? [0.5] : solve(rMat, b);
      d1s.forEach((d, k) => d.forEach(([s, c]) => terms.push([s, -t.alpha * bh * rhos[k] * c])));
      const last = rhos[rhos.length - 1];
      terms.push([model, -t.alpha * bh * last], [m0, t.alpha * bh * last]);
    } else if (d1s.length > 0) {
      rhos = order === 2
        ? [0.5]
        : solve(rMat.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1));
      d1s.forEach((d, k) => d.forEach(([s, c]) => terms.push([s, -t.alpha * bh * rhos[k] * c])));
    }
    return mergeTerms(terms);
  }

  /** Forgets the prediction history. */
  protected override forget(): void {
    this.#history = [];
    this.#thisOrder = 0;
  }
}
