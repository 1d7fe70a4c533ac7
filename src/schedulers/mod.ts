/**
 * The diffusion schedulers, pure TypeScript with no GPU imports, and their registry (`SAMPLERS`):
 * a factory that accepts our names, A1111 and stable-diffusion.cpp sampler names and diffusers
 * class names. A scheduler hands out scalars
 * (`timesteps`, `initNoiseSigma`, `scaleModelInput`) and, after each U-Net call, a plan of
 * linear combinations over named latent buffers (see {@link ./common.ts}) that a GPU or CPU
 * executor runs.
 *
 * @example
 * ```ts
 * import { createScheduler } from "@denoise/sd/schedulers";
 * import { runPlanCpu } from "@denoise/sd/schedulers";
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
export type { BufferName, PlanOp, Scheduler, SchedulerConfig, StepPlan } from "./common.ts";
export { ConfigReader, MAX_TERMS } from "./common.ts";
export { openConfig, type OpenedConfig, SchedulerBase, type ScheduleSetup } from "./base.ts";
export { type RandnFn, runPlanCpu, sampleCpu, type SampleCpuOptions } from "./cpu.ts";
export {
  a1111Name,
  a1111ScheduleType,
  createScheduler,
  type CreateSchedulerOptions,
  type ResolvedSampler,
  resolveSchedulerName,
  type SamplerInfo,
  samplerInfo,
  type SamplerOption,
  SAMPLERS,
  SCHEDULER_NAMES,
  SIGMA_SCHEDULES,
  type SigmaScheduleName,
} from "./registry.ts";
export { DDIMScheduler } from "./ddim.ts";
export { DDPMScheduler } from "./ddpm.ts";
export { DEISMultistepScheduler } from "./deis.ts";
export { DPMSolverMultistepScheduler } from "./dpmpp_2m.ts";
export { DPMSolverSinglestepScheduler } from "./dpmpp_2s.ts";
export { EulerDiscreteScheduler } from "./euler.ts";
export { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
export { HeunDiscreteScheduler } from "./heun.ts";
export { KDPM2DiscreteScheduler } from "./kdpm2.ts";
export { KDPM2AncestralDiscreteScheduler } from "./kdpm2_ancestral.ts";
export { LCMScheduler } from "./lcm.ts";
export { LMSDiscreteScheduler } from "./lms.ts";
export { PNDMScheduler } from "./pndm.ts";
export { UniPCMultistepScheduler } from "./unipc.ts";
