/**
 * GPU test helpers: one shared runtime per test process, and the dtypes this adapter can test.
 *
 * @module
 */
import type { DType } from "../src/gpu/device.ts";
import { loadTemplates } from "../src/gpu/kernel.ts";
import { Runtime } from "../src/gpu/runtime.ts";

let rt: Promise<Runtime> | undefined;

/** The shared test runtime (templates named in `kernels` are loaded too). */
export async function testRuntime(kernels: string[] = []): Promise<Runtime> {
  rt ??= Runtime.create();
  const r = await rt;
  await loadTemplates(kernels);
  return r;
}

/** The dtypes to test on this adapter: f32, plus f16 where `shader-f16` exists. */
export function testDTypes(r: Runtime): DType[] {
  return r.gpu.hasF16 ? ["f32", "f16"] : ["f32"];
}

/** Deno.test options for GPU tests: WebGPU keeps resources alive across tests by design. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

/**
 * Whether tests that need `shader-f16` must be skipped (for `ignore:`): true, after printing why,
 * when the adapter lacks it; never under CI=true, where they run (and fail without it: CI's
 * llvmpipe has shader-f16).
 */
export async function f16Unavailable(): Promise<boolean> {
  const r = await testRuntime();
  if (r.gpu.hasF16 || Deno.env.get("CI") === "true") return false;
  console.log(`skipped: the f16 tests need shader-f16, which ${r.gpu.adapterName} lacks`);
  return true;
}
