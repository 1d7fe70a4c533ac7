/**
 * What Deno's WebGPU sees: the adapter (vendor, architecture, description, software or not), its
 * features (`shader-f16`, `subgroups`, `timestamp-query`, …) and limits, and whether the device
 * denoise creates on it has f16 and timestamps. The first thing `gpu_suite.sh` records on a GPU
 * machine: a run on `llvmpipe` there means the NVIDIA driver was not found.
 *
 * usage: deno run -A bench/gpu_adapter.ts [--json FILE]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getGpu } from "../src/gpu/device.ts";

/** The adapter and device as `gpu_adapter.ts` reports them. */
export interface AdapterReport {
  /** ISO date. */
  date: string;
  /** `adapter.info` fields. */
  info: Record<string, unknown>;
  /** Every feature the adapter offers, sorted. */
  features: string[];
  /** Every limit the adapter offers. */
  limits: Record<string, number>;
  /** What denoise's device got. */
  device: { adapterName: string; hasF16: boolean; hasTimestamps: boolean; isFallback: boolean };
}

/**
 * Asks for the adapter and denoise's device and reports both.
 *
 * @example
 * ```ts
 * import { adapterReport } from "./gpu_adapter.ts";
 * const r = await adapterReport();
 * console.log(r.device.adapterName, r.features.includes("shader-f16"));
 * ```
 */
export async function adapterReport(): Promise<AdapterReport> {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter (is the Vulkan driver there?)");
  const info: Record<string, unknown> = {};
  for (const k of ["vendor", "architecture", "device", "description", "isFallbackAdapter"]) {
    info[k] = (adapter.info as unknown as Record<string, unknown>)[k];
  }
  const limits: Record<string, number> = {};
  const raw = adapter.limits as unknown as Record<string, number>;
  for (const k in raw) if (typeof raw[k] === "number") limits[k] = raw[k];
  const gpu = await getGpu();
  return {
    date: new Date().toISOString(),
    info,
    features: [...adapter.features].sort(),
    limits,
    device: {
      adapterName: gpu.adapterName,
      hasF16: gpu.hasF16,
      hasTimestamps: gpu.hasTimestamps,
      isFallback: gpu.isFallback,
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { json: { type: "string" } } });
  const r = await adapterReport();
  console.log(`adapter: ${r.device.adapterName} (${JSON.stringify(r.info)})`);
  console.log(`features: ${r.features.join(", ")}`);
  for (const f of ["shader-f16", "subgroups", "timestamp-query"]) {
    console.log(`  ${f}: ${r.features.includes(f) ? "yes" : "NO"}`);
  }
  console.log(`device: f16 ${r.device.hasF16}, timestamps ${r.device.hasTimestamps}`);
  const keys = [
    "maxBufferSize",
    "maxStorageBufferBindingSize",
    "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup",
    "minStorageBufferOffsetAlignment",
    "minUniformBufferOffsetAlignment",
    "maxStorageBuffersPerShaderStage",
  ];
  for (const k of keys) console.log(`  ${k}: ${r.limits[k]}`);
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(r, null, 2) + "\n");
}
