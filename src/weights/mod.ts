/**
 * Checkpoint files: the safetensors reader, diffusers folders, single-file key names, family
 * detection, standard configs and strict import checks; LoRA files, textual-inversion embeddings,
 * stand-alone VAEs and the file hashes infotexts record.
 *
 * @example
 * ```ts
 * import { openModelSource } from "@denoise/sd/weights";
 * console.log(typeof openModelSource);
 * ```
 *
 * @module
 */
export * from "./config_check.ts";
export * from "./configs.ts";
export * from "./detect.ts";
export * from "./diffusers.ts";
export * from "./hashes.ts";
export * from "./lora.ts";
export * from "./names.ts";
export * from "./safetensors.ts";
export * from "./source.ts";
export * from "./strict.ts";
export * from "./textual_inversion.ts";
