/**
 * Ancestral DPM-Solver-2 ("DPM2 a"), as diffusers 0.30.3's `KDPM2AncestralDiscreteScheduler`: like
 * DPM2, but each step aims at σ_down (with σ_down² + σ_up² = σ_next²), its midpoint is
 * √(σ·σ_down), and the second call adds fresh noise of scale σ_up. diffusers draws a Gaussian in
 * every call (the first call's draw is unused); the plans draw it too so a shared generator stays
 * in step.
 *
 * @module
 */
import { openConfig, SchedulerBase } from "./base.ts";
import {
  f32,
  lincomb,
  mergeTerms,
  scaleTerms,
  type SchedulerConfig,
  type StepPlan,
} from "./common.ts";
import { eulerInitNoiseSigma, eulerInputScale, type EulerOptions } from "./euler.ts";
import { KDPM2_DEFAULTS } from "./kdpm2.ts";
import {
  discreteSchedule,
  interleave,
  kDenoised,
  logMidpoint,
  sigmaSpacing,
  sigmasToT,
} from "./sigmas.ts";

/**
 * σ_up and σ_down of an ancestral step from σ to σ_next, in float32 as diffusers computes them.
 *
 * @example
 * ```ts
 * import { ancestralSigmas } from "./kdpm2_ancestral.ts";
 * const { up, down } = ancestralSigmas(2, 1); // up² + down² = 1
 * ```
 */
export function ancestralSigmas(sigma: number, next: number): { up: number; down: number } {
  const s2 = f32(sigma * sigma), n2 = f32(next * next);
  const up = f32(Math.sqrt(f32(f32(n2 * f32(s2 - n2)) / s2)));
  return { up, down: f32(Math.sqrt(f32(n2 - f32(up * up)))) };
}

/**
 * The DPM2 ancestral scheduler.
 *
 * @example
 * ```ts
 * import { KDPM2AncestralDiscreteScheduler } from "@denoise/sd/schedulers";
 * const s = new KDPM2AncestralDiscreteScheduler({ beta_schedule: "scaled_linear",
 *   timestep_spacing: "leading", steps_offset: 1 }, { steps: 4 });
 * console.log(s.timesteps.length); // 7
 * ```
 */
export class KDPM2AncestralDiscreteScheduler extends SchedulerBase {
  /** Which scheduler this is. */
  readonly kind = "dpm2_a";
  /** σ per call (interleaved like Heun's), then 0. */
  declare readonly sigmas: number[];
  /** Per step k: σ_k, its σ_up and σ_down, and the midpoint √(σ_k·σ_down). */
  readonly #levels: { sigma: number; up: number; down: number; mid: number }[];
  readonly #pred: "epsilon" | "v_prediction";

  /** Builds the scheduler from a diffusers config and sets `options.steps` steps. */
  constructor(config: SchedulerConfig, options: EulerOptions) {
    const cls = "KDPM2AncestralDiscreteScheduler";
    const { r, alphasCumprod, steps, pred } = openConfig(
      cls,
      KDPM2_DEFAULTS,
      config,
      options.steps,
    );
    r.refuse("use_beta_sigmas", "set it false (not in diffusers 0.30.3)");
    const { karras, exponential } = sigmaSpacing(r, options.karras);
    const s = discreteSchedule(r, alphasCumprod, steps, { karras, exponential, roundKarras: true });
    const sig = s.sigmas.map(f32);
    const levels = sig.map((sigma, k) => {
      const next = k + 1 < steps ? sig[k + 1] : 0;
      const { up, down } = ancestralSigmas(sigma, next);
      // diffusers zeroes the last step's midpoint: that step ends at x̂₀
      return { sigma, up, down, mid: k === steps - 1 ? 0 : logMidpoint(sigma, down) };
    });
    const tMid = sigmasToT(levels.map((l) => l.mid), s.table);
    const timesteps = [s.timesteps[0]];
    for (let k = 1; k < steps; k++) timesteps.push(tMid[k - 1], s.timesteps[k]);
    const sigmas = [...interleave(sig), 0];
    super(cls, {
      timesteps,
      sigmas,
      initNoiseSigma: eulerInitNoiseSigma(sigmas, String(r.values.timestep_spacing)),
      alphasCumprod,
      buffers: ["prev_sample", "dpm2_x", "noise"],
      config: r.values,
      order: 2,
    });
    this.#levels = levels;
    this.#pred = pred;
  }

  /** `1/√(σ² + 1)` of the call's σ (the midpoint at second calls). */
  override scaleModelInput(index: number): number {
    const l = this.#levels[Math.floor(index / 2)];
    return eulerInputScale(index % 2 === 0 ? l.sigma : l.mid);
  }

  /** `add_noise`: `original + σ_index·noise`. */
  override noiseCoefs(index: number): [number, number] {
    return this.checkCall(index) ? [1, 0] : [1, this.sigmas[index]];
  }

  /** The midpoint predictor (even `done`) or the ancestral step (odd `done`) after `index`. */
  protected plan(index: number, done: number): StepPlan {
    const first = done % 2 === 0;
    const l = this.#levels[Math.floor(index / 2)];
    const at = first ? l.sigma : l.mid;
    const [a, b] = kDenoised(at, this.#pred);
    const slope: [string, number][] = [["sample", (1 - a) / at], ["model_output", -b / at]];
    if (first) {
      return {
        ops: [
          { op: "randn", dst: "noise" },
          lincomb("dpm2_x", [["sample", 1]]),
          lincomb(
            "prev_sample",
            mergeTerms([["sample", 1], ...scaleTerms(slope, l.mid - l.sigma)]),
          ),
        ],
        output: "prev_sample",
      };
    }
    return {
      ops: [
        { op: "randn", dst: "noise" },
        lincomb("prev_sample", [
          ["dpm2_x", 1],
          ...scaleTerms(slope, l.down - l.sigma),
          ["noise", l.up],
        ]),
      ],
      output: "prev_sample",
    };
  }
}
