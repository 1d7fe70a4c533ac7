/**
 * Everything the pipeline is made of: the root export's functions (`loadPipeline`, `generate`,
 * `encodePrompt`, `sampleLatents`, `decodeLatents`, the add-ons) and the building blocks the root
 * does not carry — A1111 prompt parsing and weighting, the GPU execution of scheduler plans, VAE
 * tiling plans, the prompt's extra-network tags, the add-on internals.
 *
 * @example
 * ```ts
 * import { parsePromptAttention } from "@denoise/sd/pipeline";
 * console.log(parsePromptAttention("a (red:1.5) fox")); // [["a ", 1], ["red", 1.5], [" fox", 1]]
 * ```
 *
 * @module
 */
export * from "./condition.ts";
export * from "./prompt_parse.ts";
export { runPlanGpu } from "./sample.ts";
export * from "./vae_tiling.ts";
export * from "./extra_networks.ts";
export * from "./addons.ts";
export * from "./lora.ts";
export * from "./load.ts";
export * from "./encode.ts";
export * from "./decode.ts";
export * from "./generate.ts";
export * from "./image.ts";
