/**
 * The GPU runtime: device, tensors, buffer pool, kernel templates and pipeline cache, profiler.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./kernel.ts";
export * from "./pool.ts";
export * from "./profiler.ts";
export { DEFAULT_RECORDER, type RecorderOptions, type RecorderStats } from "./recorder.ts";
export * from "./runtime.ts";
export { bindScope, chain, type ChainStep, isScoped, keepTensors, tensorScope } from "./scope.ts";
export * from "./tensor.ts";
export * from "./wgsl_lib.ts";
