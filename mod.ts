/**
 * denoise — Stable Diffusion in TypeScript on Deno's built-in WebGPU, with its own WGSL kernels.
 *
 * The GPU runtime (device, tensors, kernels, profiler) and the ops are exported here; the
 * text-to-image functions (`loadPipeline`, `encodePrompt`, `sampleLatents`, `decodeLatents`) are
 * exported from this module as they land.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd";
 * const rt = await Runtime.create();
 * console.log(rt.gpu.adapterName);
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
