/**
 * denoise — Stable Diffusion in TypeScript on Deno's built-in WebGPU, with its own WGSL kernels.
 *
 * Text to image in four composable steps — `loadPipeline`, `encodePrompt`, `sampleLatents` (an
 * async generator that yields after every step) and `decodeLatents` — plus the pieces they are made
 * of: the GPU runtime and ops, the tokenizer, the schedulers, torch-compatible noise, PNG helpers.
 *
 * @example
 * ```ts
 * import { decodeLatents, encodePng, encodePrompt, loadPipeline, sampleLatents } from "@denoise/sd";
 * const pipe = await loadPipeline("path/to/stable-diffusion-v1-5");
 * const embeds = await encodePrompt(pipe, "a photo of an astronaut riding a horse on mars");
 * let latents;
 * for await (const step of sampleLatents(pipe, embeds, { steps: 20, seed: 42 })) {
 *   latents = step.latents;
 * }
 * const image = await decodeLatents(pipe, latents!);
 * await Deno.writeFile("astronaut.png", encodePng(image));
 * ```
 *
 * @module
 */
export {
  assertNotLost,
  type DType,
  getGpu,
  type Gpu,
  type GpuOptions,
  NO_ADAPTER_HELP,
  supportsDType,
} from "./src/gpu/device.ts";
export {
  type Dispatch,
  grid1d,
  KERNEL_TEMPLATES,
  Runtime,
  type RuntimeOptions,
} from "./src/gpu/runtime.ts";
export { dtypeBytes, numel, Tensor } from "./src/gpu/tensor.ts";
export { BufferPool, type PoolStats, sizeClass } from "./src/gpu/pool.ts";
export {
  type CompiledKernel,
  keyString,
  loadTemplates,
  PipelineCache,
  type PipelineKey,
  registerTemplate,
  renderKernel,
} from "./src/gpu/kernel.ts";
export { type ProfileEntry, Profiler, type ProfileRow } from "./src/gpu/profiler.ts";
export {
  binary,
  type BinaryOp,
  cast,
  lincomb,
  unary,
  type UnaryOp,
} from "./src/ops/elementwise.ts";
export { type NpyArray, parseNpy, readNpy } from "./src/io/npy.ts";
export {
  type ClipTokenizer,
  loadTokenizer,
  type LoadTokenizerOptions,
} from "./src/tokenizer/mod.ts";
export {
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
  runPlanGpu,
  sampleLatents,
  type SampleOptions,
  type SampleStep,
  type SampleTarget,
  schedulerFor,
  sizeFactor,
} from "./src/pipeline/sample.ts";
export { type DecodedImage, decodeLatents, type DecodeOptions } from "./src/pipeline/decode.ts";
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
export {
  loadLora,
  type Lora,
  type LoraFactor,
  type LoraFamily,
  type LoraModule,
} from "./src/weights/lora.ts";
export { loadEmbedding, type TextualInversion } from "./src/weights/textual_inversion.ts";
export {
  binaryMask,
  defaultStrength,
  imageToChw,
  maskToLatent,
  strengthSchedule,
} from "./src/pipeline/condition.ts";
export * from "./src/pipeline/prompt_parse.ts";
export { type Rng, torchRandn } from "./src/rng/torch_randn.ts";
export {
  a1111Name,
  a1111ScheduleType,
  createScheduler,
  type CreateSchedulerOptions,
  resolveSchedulerName,
  type SamplerInfo,
  samplerInfo,
  SAMPLERS,
  type Scheduler,
  SCHEDULER_NAMES,
  type SchedulerConfig,
  type StepPlan,
} from "./src/schedulers/mod.ts";
export { runPlanCpu, sampleCpu } from "./src/schedulers/cpu.ts";
export * from "./src/io/png.ts";
export { resizeImage, type ResizeOptions } from "./src/io/resize.ts";
export {
  closeModelSource,
  type ModelSource,
  openModelSource,
  readComponent,
} from "./src/weights/source.ts";
export { openSafetensors, type SafetensorsFile } from "./src/weights/safetensors.ts";
export { StrictImportError } from "./src/weights/strict.ts";
export { checkComponentConfig, checkModelConfigs } from "./src/weights/config_check.ts";
export { linear, type LinearOptions, matmul, type MatmulOptions } from "./src/ops/gemm.ts";
export { conv2d, type Conv2dOptions } from "./src/ops/conv2d.ts";
export { groupNorm, layerNorm } from "./src/ops/norm.ts";
export { attention, type AttentionOptions, attentionQkv } from "./src/ops/attention.ts";
export {
  batchConcat,
  batchSlice,
  concatChannels,
  nchwToTokens,
  tokensToNchw,
  upsampleNearest2x,
} from "./src/ops/layout.ts";
export { geglu } from "./src/ops/geglu.ts";
export { ClipTextModel, type ClipTextOutput } from "./src/models/clip.ts";
export { UNet2DConditionModel, type UNetForwardOptions } from "./src/models/unet.ts";
export { AutoencoderKL } from "./src/models/vae.ts";
export { loadTaesdDecoder, type TaesdDecoder } from "./src/models/taesd.ts";
export { timestepEmbedding } from "./src/models/embeddings.ts";
export { SD15, SD21 } from "./src/weights/configs.ts";
