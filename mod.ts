/**
 * denoise — Stable Diffusion in TypeScript on Deno's built-in WebGPU, with its own WGSL kernels.
 *
 * This entry point is the pipeline: {@link loadPipeline}, then {@link generate} for pictures in one
 * call, or the three steps it is made of — {@link encodePrompt}, {@link sampleLatents} (an async
 * generator that yields after every step: preview, time or stop) and {@link decodeLatents} — plus
 * LoRA and textual-inversion add-ons, the samplers' names, PNG helpers and the types of it all.
 * The pieces underneath live in the subpath exports: `@denoise/sd/gpu` (runtime, tensors, scopes),
 * `/ops`, `/models`, `/weights`, `/tokenizer`, `/schedulers`, `/pipeline` (its building blocks),
 * `/io`, and `/gen`, the command line (`deno run -A jsr:@denoise/sd/gen "a prompt"`).
 *
 * GPU memory is freed by `dispose()`, by `using` declarations, or by `rt.scope()`; the latents
 * `sampleLatents` yields last belong to the caller.
 *
 * @example One call
 * ```ts no-run
 * import { generate, loadPipeline } from "@denoise/sd";
 * using pipe = await loadPipeline("path/to/stable-diffusion-v1-5");
 * const [image] = await generate(pipe, "a photo of an astronaut riding a horse on mars", {
 *   steps: 25,
 *   seed: 42,
 * });
 * await image.save("astronaut.png");
 * ```
 *
 * @example The three steps
 * ```ts no-run
 * import {
 *   decodeLatents,
 *   encodePng,
 *   encodePrompt,
 *   loadPipeline,
 *   sampleLatents,
 * } from "@denoise/sd";
 * using pipe = await loadPipeline("path/to/stable-diffusion-v1-5");
 * using embeds = await encodePrompt(pipe, "a photo of an astronaut riding a horse on mars");
 * let latents;
 * for await (const step of sampleLatents(pipe, embeds, { steps: 20, seed: 42 })) {
 *   latents = step.latents; // valid until the next step; the last one is ours
 * }
 * using last = latents!;
 * const image = await decodeLatents(pipe, last);
 * await Deno.writeFile("astronaut.png", encodePng(image));
 * ```
 *
 * @module
 */
export { generate, type GenerateOptions, type GenerateProgress } from "./src/pipeline/generate.ts";
export { GeneratedImage, type GenerationInfo } from "./src/pipeline/image.ts";
export {
  DEFAULT_MODEL,
  inspectModel,
  latentFactor,
  loadPipeline,
  type LoadPipelineOptions,
  type ModelInfo,
  type Pipeline,
} from "./src/pipeline/load.ts";
export {
  encodePrompt,
  type EncodePromptOptions,
  type PromptEmbeds,
} from "./src/pipeline/encode.ts";
export {
  checkSampleOptions,
  sampleLatents,
  type SampleOptions,
  type SampleStep,
  type SampleTarget,
  schedulerFor,
  sizeFactor,
} from "./src/pipeline/sample.ts";
export {
  type DecodedImage,
  decodeLatents,
  type DecodeOptions,
  type VaeTilingOptions,
} from "./src/pipeline/decode.ts";
export { loadTaesdDecoder, type TaesdDecoder, type TaesdOptions } from "./src/models/taesd.ts";
export {
  type ActiveLora,
  activeLoras,
  applyLoras,
  type ApplyLorasOptions,
  type LoraSpec,
} from "./src/pipeline/lora.ts";
export {
  addEmbeddings,
  type AddonInfotext,
  addonInfotext,
  type AddonOptions,
  checkPromptLoras,
  pipelineEmbeddings,
  type VaeInfo,
} from "./src/pipeline/addons.ts";
export { loadLora, type Lora } from "./src/weights/lora.ts";
export { loadEmbedding, type TextualInversion } from "./src/weights/textual_inversion.ts";
export { StrictImportError } from "./src/weights/strict.ts";
export { type Rng, torchRandn } from "./src/rng/torch_randn.ts";
export {
  a1111Name,
  a1111ScheduleType,
  resolveSchedulerName,
  type SamplerInfo,
  samplerInfo,
  SAMPLERS,
  type Scheduler,
  type SchedulerConfig,
} from "./src/schedulers/mod.ts";
export {
  type A1111Parameters,
  type DecodedPng,
  decodePng,
  encodePng,
  type EncodePngOptions,
  formatA1111Parameters,
  type RgbaImage,
  writePngFile,
  type WritePngFileOptions,
} from "./src/io/png.ts";
export {
  fitInitImages,
  type FitNames,
  type FitOptions,
  resizeImage,
  type ResizeOptions,
} from "./src/io/resize.ts";
export type { DType } from "./src/gpu/device.ts";
export type { Runtime } from "./src/gpu/runtime.ts";
export type { Tensor } from "./src/gpu/tensor.ts";
