/**
 * The sampler registry: one row per sampler, naming its class, the diffusers class, the names
 * AUTOMATIC1111 and stable-diffusion.cpp use for it, which options apply, and any config it
 * presets. Name lookup, option checks, the factory and the help texts all read this table; adding
 * a sampler is one file (the class) and one row here (see `README.md` in this folder).
 *
 * @module
 */
import type { Scheduler, SchedulerConfig } from "./common.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DDPMScheduler } from "./ddpm.ts";
import { DEISMultistepScheduler } from "./deis.ts";
import { DPMSolverMultistepScheduler } from "./dpmpp_2m.ts";
import { DPMSolverSinglestepScheduler } from "./dpmpp_2s.ts";
import { EulerDiscreteScheduler } from "./euler.ts";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
import { HeunDiscreteScheduler } from "./heun.ts";
import { KDPM2DiscreteScheduler } from "./kdpm2.ts";
import { KDPM2AncestralDiscreteScheduler } from "./kdpm2_ancestral.ts";
import { LCMScheduler } from "./lcm.ts";
import { LMSDiscreteScheduler } from "./lms.ts";
import { PNDMScheduler } from "./pndm.ts";
import { UniPCMultistepScheduler } from "./unipc.ts";

/**
 * An option of {@link createScheduler} that only some samplers take.
 *
 * @example
 * ```ts
 * import type { SamplerOption } from "@denoise/sd/schedulers";
 * const o: SamplerOption = "karras";
 * ```
 */
export type SamplerOption = "karras" | "eta" | "originalInferenceSteps";

/**
 * Options of {@link createScheduler}.
 *
 * @example
 * ```ts
 * import type { CreateSchedulerOptions } from "@denoise/sd/schedulers";
 * const o: CreateSchedulerOptions = { steps: 30, karras: true };
 * ```
 */
export interface CreateSchedulerOptions {
  /** Number of inference steps. */
  steps: number;
  /** DDIM's η (other samplers accept only 0). */
  eta?: number;
  /** Karras sigmas (samplers whose row lists `"karras"`); overrides the config and the name. */
  karras?: boolean;
  /**
   * The σ schedule of a sigma sampler (rows listing `"karras"`), as stable-diffusion.cpp's
   * `--schedule` and A1111's "Schedule type": `"discrete"` (the config's grid), `"karras"`, or
   * `"exponential"` (evenly spaced in log σ; diffusers ≥ 0.31's `use_exponential_sigmas`).
   */
  schedule?: SigmaScheduleName;
  /** LCM's distillation grid size, overriding `original_inference_steps`. */
  originalInferenceSteps?: number;
}

/**
 * The σ schedules a sigma sampler can use.
 *
 * @example
 * ```ts
 * import { SIGMA_SCHEDULES } from "@denoise/sd/schedulers";
 * console.log(SIGMA_SCHEDULES.join("|")); // discrete|karras|exponential
 * ```
 */
export const SIGMA_SCHEDULES = ["discrete", "karras", "exponential"] as const;

/** One of {@link SIGMA_SCHEDULES}. */
export type SigmaScheduleName = typeof SIGMA_SCHEDULES[number];

/**
 * One registry row.
 *
 * @example
 * ```ts
 * import { SAMPLERS, type SamplerInfo } from "@denoise/sd/schedulers";
 * const euler: SamplerInfo = SAMPLERS.find((s) => s.kind === "euler")!;
 * console.log(euler.a1111, euler.sdcpp); // "Euler" ["euler"]
 * ```
 */
export interface SamplerInfo {
  /** Our name (also accepted with `_karras` appended where Karras sigmas apply). */
  readonly kind: string;
  /** The diffusers class it reproduces (`_class_name` in `scheduler_config.json`). */
  readonly diffusers: string;
  /** AUTOMATIC1111's sampler name (its infotext's `Sampler:`); "X Karras" is accepted too. */
  readonly a1111: string;
  /** stable-diffusion.cpp's `--sampling-method` names for it (none where it has no equivalent). */
  readonly sdcpp: readonly string[];
  /** Other accepted names. */
  readonly aliases?: readonly string[];
  /** The options it takes beyond `steps`. */
  readonly options: readonly SamplerOption[];
  /** Config keys the sampler sets over the model's config when chosen by name. */
  readonly preset?: Readonly<Record<string, unknown>>;
  /** Whether it draws fresh noise inside its steps (ancestral / SDE samplers). */
  readonly stochastic: boolean;
  /** One-line description for help texts. */
  readonly about: string;
  /** Builds the scheduler from a config (the preset already applied) and options. */
  create(config: SchedulerConfig, options: CreateSchedulerOptions): Scheduler;
}

/**
 * Every sampler, in the order help texts list them.
 *
 * @example
 * ```ts
 * import { SAMPLERS } from "@denoise/sd/schedulers";
 * for (const s of SAMPLERS) console.log(s.kind, s.a1111, s.sdcpp.join(" "));
 * ```
 */
export const SAMPLERS: readonly SamplerInfo[] = [
  {
    kind: "euler",
    diffusers: "EulerDiscreteScheduler",
    a1111: "Euler",
    sdcpp: ["euler"],
    options: ["karras"],
    stochastic: false,
    about: "Euler's method on the probability-flow ODE",
    create: (c, o) => new EulerDiscreteScheduler(c, o),
  },
  {
    kind: "euler_a",
    diffusers: "EulerAncestralDiscreteScheduler",
    a1111: "Euler a",
    sdcpp: ["euler_a"],
    options: ["karras"],
    stochastic: true,
    about: "Euler ancestral: an Euler step, then fresh noise",
    create: (c, o) => new EulerAncestralDiscreteScheduler(c, o),
  },
  {
    kind: "heun",
    diffusers: "HeunDiscreteScheduler",
    a1111: "Heun",
    sdcpp: ["heun"],
    options: ["karras"],
    stochastic: false,
    about: "Heun's second-order method: two U-Net calls per step",
    create: (c, o) => new HeunDiscreteScheduler(c, o),
  },
  {
    kind: "dpm2",
    diffusers: "KDPM2DiscreteScheduler",
    a1111: "DPM2",
    sdcpp: ["dpm2"],
    options: ["karras"],
    stochastic: false,
    about: "DPM-Solver-2: a midpoint call per step (two U-Net calls)",
    create: (c, o) => new KDPM2DiscreteScheduler(c, o),
  },
  {
    kind: "dpm2_a",
    diffusers: "KDPM2AncestralDiscreteScheduler",
    a1111: "DPM2 a",
    sdcpp: [],
    options: ["karras"],
    stochastic: true,
    about: "ancestral DPM2: two U-Net calls per step, fresh noise",
    create: (c, o) => new KDPM2AncestralDiscreteScheduler(c, o),
  },
  {
    kind: "lms",
    diffusers: "LMSDiscreteScheduler",
    a1111: "LMS",
    sdcpp: [],
    options: ["karras"],
    stochastic: false,
    about: "linear multistep over the last four slopes",
    create: (c, o) => new LMSDiscreteScheduler(c, o),
  },
  {
    kind: "dpmpp_2m",
    diffusers: "DPMSolverMultistepScheduler",
    a1111: "DPM++ 2M",
    sdcpp: ["dpm++2m"],
    options: ["karras"],
    preset: { algorithm_type: "dpmsolver++" },
    stochastic: false,
    about: "DPM-Solver++ multistep, second order",
    create: (c, o) => new DPMSolverMultistepScheduler(c, o),
  },
  {
    kind: "dpmpp_2m_sde",
    diffusers: "DPMSolverMultistepScheduler",
    a1111: "DPM++ 2M SDE",
    sdcpp: [],
    options: ["karras"],
    preset: { algorithm_type: "sde-dpmsolver++" },
    stochastic: true,
    about: "DPM-Solver++ multistep, stochastic (SDE) form",
    create: (c, o) => new DPMSolverMultistepScheduler(c, o),
  },
  {
    kind: "dpmpp_2s",
    diffusers: "DPMSolverSinglestepScheduler",
    a1111: "DPM++ 2S",
    sdcpp: [],
    options: ["karras"],
    stochastic: false,
    about: "DPM-Solver++ singlestep, second order (not A1111's ancestral 2S a)",
    create: (c, o) => new DPMSolverSinglestepScheduler(c, o),
  },
  {
    kind: "unipc",
    diffusers: "UniPCMultistepScheduler",
    a1111: "UniPC",
    sdcpp: [],
    options: ["karras"],
    stochastic: false,
    about: "UniPC: multistep predictor with a corrector, bh2",
    create: (c, o) => new UniPCMultistepScheduler(c, o),
  },
  {
    kind: "deis",
    diffusers: "DEISMultistepScheduler",
    a1111: "DEIS",
    sdcpp: [],
    options: ["karras"],
    stochastic: false,
    about: "DEIS: log-ρ multistep exponential integrator",
    create: (c, o) => new DEISMultistepScheduler(c, o),
  },
  {
    kind: "ddim",
    diffusers: "DDIMScheduler",
    a1111: "DDIM",
    sdcpp: [],
    options: ["eta"],
    stochastic: false,
    about: "DDIM, deterministic at η = 0",
    create: (c, o) => new DDIMScheduler(c, o),
  },
  {
    kind: "ddim_trailing",
    diffusers: "DDIMScheduler",
    a1111: "DDIM",
    sdcpp: ["ddim_trailing"],
    options: ["eta"],
    preset: { timestep_spacing: "trailing" },
    stochastic: false,
    about: "DDIM with trailing timesteps (starts at t = 999)",
    create: (c, o) => new DDIMScheduler(c, o),
  },
  {
    kind: "pndm",
    diffusers: "PNDMScheduler",
    a1111: "PLMS",
    sdcpp: [],
    aliases: ["plms"],
    options: [],
    preset: { skip_prk_steps: true },
    stochastic: false,
    about: "pseudo linear multistep (the SD 1.x default); one extra U-Net call",
    create: (c, o) => new PNDMScheduler(c, o),
  },
  {
    kind: "ddpm",
    diffusers: "DDPMScheduler",
    a1111: "DDPM",
    sdcpp: [],
    options: [],
    stochastic: true,
    about: "DDPM ancestral sampling on the spaced schedule",
    create: (c, o) => new DDPMScheduler(c, o),
  },
  {
    kind: "lcm",
    diffusers: "LCMScheduler",
    a1111: "LCM",
    sdcpp: ["lcm"],
    options: ["originalInferenceSteps"],
    stochastic: true,
    about: "latent consistency models (LCM, LCM-LoRA), 2–8 steps",
    create: (c, o) => new LCMScheduler(c, o),
  },
];

/** What a name resolves to: the row, whether the name asked for Karras sigmas, the preset. */
export interface ResolvedSampler {
  /** The registry row. */
  info: SamplerInfo;
  /** Our kind (`info.kind`). */
  kind: string;
  /** The name said "Karras" (`"DPM++ 2M Karras"`, `"euler_karras"`). */
  karras?: boolean;
  /** Config keys to set over the model's config (absent when a diffusers class name was given). */
  preset?: Readonly<Record<string, unknown>>;
}

const norm = (s: string) => String(s).trim().toLowerCase().replace(/\s+/g, " ");

/** The lookup table: every accepted name, lower-cased. */
function nameTable(): Map<string, ResolvedSampler> {
  const table = new Map<string, ResolvedSampler>();
  const add = (name: string, r: ResolvedSampler) => {
    if (!table.has(norm(name))) table.set(norm(name), r);
  };
  for (const info of SAMPLERS) {
    const byName = { info, kind: info.kind, preset: info.preset };
    for (const n of [info.kind, info.a1111, ...info.sdcpp, ...(info.aliases ?? [])]) add(n, byName);
    if (info.options.includes("karras")) {
      const k = { ...byName, karras: true };
      add(`${info.kind}_karras`, k);
      add(`${info.a1111} Karras`, k);
    }
  }
  // a diffusers class name picks the first row of that class and keeps the config as it is
  for (const info of SAMPLERS) add(info.diffusers, { info, kind: info.kind });
  return table;
}

let names: Map<string, ResolvedSampler> | undefined;

/** stable-diffusion.cpp `--sampling-method` names with no row yet, and the closest row. */
const SDCPP_WITHOUT_EQUIVALENT: Readonly<Record<string, string>> = {
  "dpm++2mv2": "dpm++2m is the closest (the same multistep solver without v2's step-size tweak)",
  "dpm++2s_a": "dpmpp_2s (not ancestral) or euler_a (ancestral) are the closest",
  "ipndm": "pndm (PLMS, the same pseudo linear multistep idea) is the closest",
  "ipndm_v": "pndm (PLMS) is the closest",
  "tcd": "lcm is the closest",
};

/**
 * The names {@link resolveSchedulerName} accepts (case-insensitive), grouped by origin.
 *
 * @example
 * ```ts
 * import { SCHEDULER_NAMES } from "@denoise/sd/schedulers";
 * console.log(SCHEDULER_NAMES.sdcpp.join(", ")); // euler, euler_a, dpm++2m, …
 * ```
 */
export const SCHEDULER_NAMES: Readonly<
  Record<"ours" | "a1111" | "sdcpp" | "diffusers", readonly string[]>
> = {
  ours: SAMPLERS.map((s) => s.kind),
  a1111: [
    ...new Set(
      SAMPLERS.flatMap((s) =>
        s.options.includes("karras") ? [s.a1111, `${s.a1111} Karras`] : [s.a1111]
      ),
    ),
  ],
  sdcpp: SAMPLERS.flatMap((s) => s.sdcpp),
  diffusers: [...new Set(SAMPLERS.map((s) => s.diffusers))],
};

/**
 * Resolves a sampler name — ours, AUTOMATIC1111's (with or without "Karras"), stable-diffusion.cpp's
 * or a diffusers class name, any case — to its registry row.
 *
 * @example
 * ```ts
 * import { resolveSchedulerName } from "@denoise/sd/schedulers";
 * const r = resolveSchedulerName("DPM++ 2M Karras");
 * console.log(r.kind, r.karras); // "dpmpp_2m" true
 * ```
 */
export function resolveSchedulerName(name: string): ResolvedSampler {
  names ??= nameTable();
  const hit = names.get(norm(name));
  const missing = SDCPP_WITHOUT_EQUIVALENT[norm(name)];
  if (!hit && missing) {
    throw new RangeError(
      `stable-diffusion.cpp's ${JSON.stringify(name)} has no equivalent here yet; ${missing}`,
    );
  }
  if (!hit) {
    const n = SCHEDULER_NAMES;
    throw new RangeError(
      `unknown scheduler ${JSON.stringify(name)}; valid names (any case): ${n.ours.join(", ")}; ` +
        `A1111: ${n.a1111.join(", ")}; stable-diffusion.cpp: ${n.sdcpp.join(", ")}; ` +
        `diffusers: ${n.diffusers.join(", ")}`,
    );
  }
  return { ...hit };
}

/**
 * The registry row of a built scheduler (by its `kind`).
 *
 * @example
 * ```ts
 * import { createScheduler, samplerInfo } from "@denoise/sd/schedulers";
 * const s = createScheduler("euler", {}, { steps: 4 });
 * console.log(samplerInfo(s).a1111); // "Euler"
 * ```
 */
export function samplerInfo(scheduler: Pick<Scheduler, "kind">): SamplerInfo {
  const info = SAMPLERS.find((s) => s.kind === scheduler.kind);
  if (!info) throw new Error(`internal: scheduler kind "${scheduler.kind}" has no registry row`);
  return info;
}

/**
 * AUTOMATIC1111's name for a built scheduler, with " Karras" when it uses Karras sigmas: what
 * the infotext's `Sampler:` field holds.
 *
 * @example
 * ```ts
 * import { a1111Name, createScheduler } from "@denoise/sd/schedulers";
 * console.log(a1111Name(createScheduler("dpm++2m", {}, { steps: 4, karras: true })));
 * // "DPM++ 2M Karras"
 * ```
 */
export function a1111Name(scheduler: Pick<Scheduler, "kind" | "config">): string {
  const karras = scheduler.config.use_karras_sigmas === true;
  return `${samplerInfo(scheduler).a1111}${karras ? " Karras" : ""}`;
}

/**
 * AUTOMATIC1111's "Schedule type" for a built scheduler where its sampler name does not already
 * say it: `"Exponential"` for exponential σ, otherwise `undefined` (Karras is in the name).
 *
 * @example
 * ```ts
 * import { a1111ScheduleType, createScheduler } from "@denoise/sd/schedulers";
 * const s = createScheduler("euler", {}, { steps: 4, schedule: "exponential" });
 * console.log(a1111ScheduleType(s)); // "Exponential"
 * ```
 */
export function a1111ScheduleType(scheduler: Pick<Scheduler, "config">): string | undefined {
  return scheduler.config.use_exponential_sigmas === true ? "Exponential" : undefined;
}

/**
 * Builds a scheduler by name from a diffusers `scheduler_config.json` (any class's: like
 * diffusers' `from_config`, unknown keys are ignored and missing ones take the chosen class's
 * defaults; a name other than a class name applies its row's preset over the config) and sets
 * `options.steps` timesteps. Options a sampler does not take are refused with the fix.
 *
 * @example
 * ```ts
 * import { createScheduler } from "@denoise/sd/schedulers";
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
  const { info, karras: nameKarras, preset } = resolveSchedulerName(name);
  if (!options || typeof options !== "object") {
    throw new TypeError("createScheduler: options must be an object with at least { steps }");
  }
  if (nameKarras && options.karras === false) {
    throw new RangeError(`createScheduler: "${name}" asks for Karras sigmas but karras is false`);
  }
  const schedule = options.schedule;
  if (schedule !== undefined && !(SIGMA_SCHEDULES as readonly string[]).includes(schedule)) {
    throw new RangeError(
      `createScheduler: schedule ${JSON.stringify(schedule)} is not one of ${
        SIGMA_SCHEDULES.join(", ")
      }`,
    );
  }
  if (schedule !== undefined && schedule !== "karras" && (nameKarras || options.karras)) {
    throw new RangeError(
      `createScheduler: "${name}" asks for Karras sigmas but the schedule is ${schedule}; drop ` +
        `one (${info.a1111} takes any schedule)`,
    );
  }
  const karras = schedule === "karras" ? true : schedule !== undefined ? false : options.karras ??
    nameKarras;
  const exponential = schedule === "exponential";
  if (exponential && !info.options.includes("karras")) {
    const takers = SAMPLERS.filter((s) => s.options.includes("karras")).map((s) => s.kind);
    throw new RangeError(
      `createScheduler: the exponential schedule applies to the sigma samplers (${
        takers.join(", ")
      }), not ${info.kind}; drop the schedule`,
    );
  }
  const given: [SamplerOption, boolean][] = [
    ["karras", karras === true],
    ["eta", options.eta !== undefined && options.eta !== 0],
    ["originalInferenceSteps", options.originalInferenceSteps !== undefined],
  ];
  for (const [opt, set] of given) {
    if (set && !info.options.includes(opt)) {
      const takers = SAMPLERS.filter((s) => s.options.includes(opt)).map((s) => s.kind);
      throw new RangeError(
        `createScheduler: ${opt} applies to ${takers.join(", ")}, not ${info.kind}; drop ${opt}`,
      );
    }
  }
  const sigmaPreset = schedule === undefined || !info.options.includes("karras")
    ? {}
    : { use_exponential_sigmas: exponential };
  return info.create({ ...config, ...preset, ...sigmaPreset }, { ...options, karras });
}
