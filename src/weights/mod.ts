/**
 * Checkpoint files: the safetensors reader, diffusers folders, single-file key names, family
 * detection, standard configs and strict import checks.
 *
 * @example
 * ```ts
 * import { openModelSource } from "@denoise/sd/weights";
 * console.log(typeof openModelSource);
 * ```
 *
 * @module
 */
export * from "./configs.ts";
export * from "./detect.ts";
export * from "./diffusers.ts";
export * from "./names.ts";
export * from "./safetensors.ts";
export * from "./source.ts";
export * from "./strict.ts";
