/**
 * The diffusion schedulers, pure TypeScript with no GPU imports, and a factory that accepts our
 * names, A1111 sampler names and diffusers class names. A scheduler hands out scalars
 * (`timesteps`, `initNoiseSigma`, `scaleModelInput`) and, after each U-Net call, a plan of
 * linear combinations over named latent buffers (see {@link ./common.ts}) that a GPU or CPU
 * executor runs.
 *
 * @example
 * ```ts
 * import { createScheduler } from "./mod.ts";
 * import { runPlanCpu } from "./cpu.ts";
 * const config = {
 *   _class_name: "PNDMScheduler", beta_start: 0.00085, beta_end: 0.012,
 *   beta_schedule: "scaled_linear", skip_prk_steps: true, steps_offset: 1,
 * };
 * const s = createScheduler("DPM++ 2M Karras", config, { steps: 20 });
 * const buffers = new Map([
 *   ["sample", new Float32Array(16)],
 *   ["model_output", new Float32Array(16)],
 * ]);
 * const next = runPlanCpu(s.step(0), buffers, (n) => new Float32Array(n));
 * ```
 *
 * @module
 */
import type { Scheduler, SchedulerConfig, SchedulerKind } from "./common.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DPMSolverMultistepScheduler } from "./dpmpp_2m.ts";
import { EulerDiscreteScheduler } from "./euler.ts";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
import { LCMScheduler } from "./lcm.ts";
import { PNDMScheduler } from "./pndm.ts";

export type {
  BufferName,
  PlanOp,
  Scheduler,
  SchedulerConfig,
  SchedulerKind,
  StepPlan,
} from "./common.ts";
export { type RandnFn, runPlanCpu, sampleCpu, type SampleCpuOptions } from "./cpu.ts";
export {
  DDIMScheduler,
  DPMSolverMultistepScheduler,
  EulerAncestralDiscreteScheduler,
  EulerDiscreteScheduler,
  LCMScheduler,
  PNDMScheduler,
};

/**
 * Options of {@link createScheduler}.
 *
 * @example
 * ```ts
 * import type { CreateSchedulerOptions } from "./mod.ts";
 * const o: CreateSchedulerOptions = { steps: 30, karras: true };
 * ```
 */
export interface CreateSchedulerOptions {
  /** Number of inference steps. */
  steps: number;
  /** DDIM's η (other schedulers accept only 0). */
  eta?: number;
  /** Karras sigmas (Euler and DPM++ 2M only); overrides the config and a "Karras" name. */
  karras?: boolean;
  /** LCM's distillation grid size, overriding `original_inference_steps`. */
  originalInferenceSteps?: number;
}

/** What each accepted name resolves to. */
const NAMES: Record<string, { kind: SchedulerKind; karras?: boolean }> = {
  "ddim": { kind: "ddim" },
  "pndm": { kind: "pndm" },
  "euler": { kind: "euler" },
  "euler_a": { kind: "euler_a" },
  "dpmpp_2m": { kind: "dpmpp_2m" },
  "dpmpp_2m_karras": { kind: "dpmpp_2m", karras: true },
  "lcm": { kind: "lcm" },
  "plms": { kind: "pndm" },
  "euler a": { kind: "euler_a" },
  "dpm++ 2m": { kind: "dpmpp_2m" },
  "dpm++ 2m karras": { kind: "dpmpp_2m", karras: true },
  "ddimscheduler": { kind: "ddim" },
  "pndmscheduler": { kind: "pndm" },
  "eulerdiscretescheduler": { kind: "euler" },
  "eulerancestraldiscretescheduler": { kind: "euler_a" },
  "dpmsolvermultistepscheduler": { kind: "dpmpp_2m" },
  "lcmscheduler": { kind: "lcm" },
};

/**
 * The names {@link createScheduler} accepts (case-insensitive), grouped by origin.
 *
 * @example
 * ```ts
 * import { SCHEDULER_NAMES } from "./mod.ts";
 * console.log(SCHEDULER_NAMES.a1111.join(", "));
 * ```
 */
export const SCHEDULER_NAMES: Readonly<Record<"ours" | "a1111" | "diffusers", readonly string[]>> =
  {
    ours: ["ddim", "pndm", "euler", "euler_a", "dpmpp_2m", "lcm"],
    a1111: ["DDIM", "PLMS", "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "LCM"],
    diffusers: [
      "DDIMScheduler",
      "PNDMScheduler",
      "EulerDiscreteScheduler",
      "EulerAncestralDiscreteScheduler",
      "DPMSolverMultistepScheduler",
      "LCMScheduler",
    ],
  };

/**
 * Resolves a scheduler name (ours, A1111's or a diffusers `_class_name`, any case) to our kind and
 * whether the name asks for Karras sigmas.
 *
 * @example
 * ```ts
 * import { resolveSchedulerName } from "./mod.ts";
 * console.log(resolveSchedulerName("DPM++ 2M Karras")); // { kind: "dpmpp_2m", karras: true }
 * ```
 */
export function resolveSchedulerName(name: string): { kind: SchedulerKind; karras?: boolean } {
  const key = String(name).trim().toLowerCase().replace(/\s+/g, " ");
  const hit = NAMES[key];
  if (!hit) {
    throw new RangeError(
      `unknown scheduler ${JSON.stringify(name)}; valid names (any case): ` +
        `${SCHEDULER_NAMES.ours.join(", ")}; A1111: ${SCHEDULER_NAMES.a1111.join(", ")}; ` +
        `diffusers: ${SCHEDULER_NAMES.diffusers.join(", ")}`,
    );
  }
  return { ...hit };
}

/**
 * Builds a scheduler by name from a diffusers `scheduler_config.json` (any class's: like
 * diffusers' `from_config`, unknown keys are ignored and missing ones take the chosen class's
 * defaults) and sets `options.steps` timesteps.
 *
 * @example
 * ```ts
 * import { createScheduler } from "./mod.ts";
 * const sdTurbo = {
 *   _class_name: "EulerDiscreteScheduler", beta_start: 0.00085, beta_end: 0.012,
 *   beta_schedule: "scaled_linear", timestep_spacing: "trailing", steps_offset: 1,
 * };
 * const s = createScheduler(sdTurbo._class_name, sdTurbo, { steps: 1 });
 * console.log(s.timesteps); // [999]
 * ```
 */
export function createScheduler(
  name: string,
  config: SchedulerConfig,
  options: CreateSchedulerOptions,
): Scheduler {
  const { kind, karras: nameKarras } = resolveSchedulerName(name);
  if (!options || typeof options !== "object") {
    throw new TypeError("createScheduler: options must be an object with at least { steps }");
  }
  const { steps, eta = 0, originalInferenceSteps } = options;
  if (nameKarras && options.karras === false) {
    throw new RangeError(`createScheduler: "${name}" asks for Karras sigmas but karras is false`);
  }
  const karras = options.karras ?? nameKarras;
  if (karras && kind !== "euler" && kind !== "dpmpp_2m") {
    throw new RangeError(
      `createScheduler: Karras sigmas apply to euler and dpmpp_2m, not ${kind}; drop karras`,
    );
  }
  if (eta !== 0 && kind !== "ddim") {
    throw new RangeError(`createScheduler: eta applies to DDIM only, not ${kind}; drop eta`);
  }
  if (originalInferenceSteps !== undefined && kind !== "lcm") {
    throw new RangeError(
      `createScheduler: originalInferenceSteps applies to LCM only, not ${kind}`,
    );
  }
  switch (kind) {
    case "ddim":
      return new DDIMScheduler(config, { steps, eta });
    case "pndm":
      return new PNDMScheduler(config, { steps });
    case "euler":
      return new EulerDiscreteScheduler(config, { steps, karras });
    case "euler_a":
      return new EulerAncestralDiscreteScheduler(config, { steps });
    case "dpmpp_2m":
      return new DPMSolverMultistepScheduler(config, { steps, karras });
    case "lcm":
      return new LCMScheduler(config, { steps, originalInferenceSteps });
  }
}
