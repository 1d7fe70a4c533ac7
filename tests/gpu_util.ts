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
