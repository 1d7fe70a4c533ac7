/**
 * WebGPU device acquisition: one shared device per process, with limits raised to what the adapter
 * offers and the optional features (`shader-f16`, `timestamp-query`) turned on when present.
 *
 * @module
 */

/** The activation and storage dtypes of tensors. */
export type DType = "f32" | "f16";

/** A GPU context: the device plus what we learnt about the adapter. */
export interface Gpu {
  /** The WebGPU device every op records onto. */
  readonly device: GPUDevice;
  /** The adapter's description (for example `NVIDIA H100` or `llvmpipe (LLVM 15.0.6, 256 bits)`). */
  readonly adapterName: string;
  /** Whether the adapter is a software/fallback adapter. */
  readonly isFallback: boolean;
  /** `shader-f16` is enabled: f16 storage and arithmetic are available. */
  readonly hasF16: boolean;
  /** `timestamp-query` is enabled: the profiler can time each dispatch on the GPU. */
  readonly hasTimestamps: boolean;
  /** The device's limits. */
  readonly limits: GPUSupportedLimits;
}

/** Options for {@link getGpu}. */
export interface GpuOptions {
  /** Use this device instead of the shared one (its features decide f16/timestamps). */
  device?: GPUDevice;
  /** Adapter preference passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Refuse `shader-f16` even when the adapter has it (forces the f32 path). */
  disableF16?: boolean;
}

const RAISED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxUniformBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBuffersPerShaderStage",
  "maxBindingsPerBindGroup",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** The message shown when no WebGPU adapter is found. */
export const NO_ADAPTER_HELP: string = [
  "denoise: no WebGPU adapter found.",
  "Install a GPU driver with Vulkan support, or, for the (slow) software adapter, Mesa's Vulkan",
  "drivers: `sudo apt-get install mesa-vulkan-drivers` and run with DENO_WEBGPU_BACKEND=vulkan.",
  "Check with: deno eval 'console.log((await navigator.gpu.requestAdapter())?.info)'",
].join("\n");

let shared: Promise<Gpu> | undefined;

/**
 * Returns the process-wide GPU context, creating it on first use, or wraps a caller's device.
 *
 * @example
 * ```ts
 * import { getGpu } from "@denoise/sd/gpu";
 * const gpu = await getGpu();
 * console.log(gpu.adapterName, gpu.hasF16);
 * ```
 */
export function getGpu(options: GpuOptions = {}): Promise<Gpu> {
  if (options.device) return Promise.resolve(wrapDevice(options.device, "caller's device", false));
  if (options.disableF16 || options.powerPreference) return createGpu(options);
  shared ??= createGpu(options).catch((e) => {
    shared = undefined;
    throw e;
  });
  return shared;
}

async function createGpu(options: GpuOptions): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new Error(`${NO_ADAPTER_HELP}\n(navigator.gpu is missing: this runtime has no WebGPU)`);
  }
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  if (adapter.features.has("shader-f16") && !options.disableF16) {
    requiredFeatures.push("shader-f16");
  }
  if (adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const info = adapter.info;
  const name = info.description || [info.vendor, info.architecture, info.device].join(" ").trim();
  return wrapDevice(device, name, info.isFallbackAdapter ?? false);
}

function wrapDevice(device: GPUDevice, adapterName: string, isFallback: boolean): Gpu {
  const gpu: Gpu & { lost?: string } = {
    device,
    adapterName,
    isFallback,
    hasF16: device.features.has("shader-f16"),
    hasTimestamps: device.features.has("timestamp-query"),
    limits: device.limits,
  };
  device.lost.then((info) => {
    gpu.lost = `${info.reason}: ${info.message}`;
    if (shared) shared = undefined;
  });
  lostState.set(device, gpu);
  return gpu;
}

const lostState = new WeakMap<GPUDevice, { lost?: string }>();

/**
 * Throws a clear error when the device was lost (driver reset, out of memory, destroyed).
 *
 * @example
 * ```ts
 * import { assertNotLost, getGpu } from "@denoise/sd/gpu";
 * assertNotLost((await getGpu()).device);
 * ```
 */
export function assertNotLost(device: GPUDevice): void {
  const lost = lostState.get(device)?.lost;
  if (lost) {
    throw new Error(
      `denoise: the GPU device was lost (${lost}); create a new pipeline to continue`,
    );
  }
}

/**
 * Whether `dtype` can be used on this GPU (f16 needs `shader-f16`).
 *
 * @example
 * ```ts
 * import { getGpu, supportsDType } from "@denoise/sd/gpu";
 * const dtype = supportsDType(await getGpu(), "f16") ? "f16" : "f32";
 * ```
 */
export function supportsDType(gpu: Gpu, dtype: DType): boolean {
  return dtype === "f32" || gpu.hasF16;
}
