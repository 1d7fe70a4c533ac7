import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import { loadTaesdDecoder } from "../../src/models/taesd.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertCloseToScale, fixture, SHARED, sharedAvailable } from "../util.ts";

const DECODER = "data/taesd/taesd_decoder.safetensors";
const ENCODER = "data/taesd/taesd_encoder.safetensors";
/** Of the reference image's scale: f32 is exact up to summation order, f16 rounds activations. */
const TOL: Record<DType, number> = { f32: 1e-4, f16: 1e-2 };

/** Decodes a fixture latent with the real TAESD decoder in every dtype and compares with torch. */
async function check(latentFile: string, imageFile: string): Promise<void> {
  const rt = await testRuntime(["conv2d"]);
  const latent = await fixture(`taesd/${latentFile}`);
  const want = await fixture(`taesd/${imageFile}`);
  for (const dtype of testDTypes(rt)) {
    const taesd = await loadTaesdDecoder(new URL(DECODER, SHARED), { runtime: rt, dtype });
    assert.equal(taesd.latentChannels, 4);
    const x = rt.upload(latent.data, latent.shape);
    const y = taesd.decode(x); // f32 latent, cast to f16 inside for the f16 decoder
    assert.deepEqual(y.shape, want.shape);
    assert.equal(y.dtype, dtype);
    assertCloseToScale(await y.read(), want.data, TOL[dtype], `TAESD ${dtype} → ${imageFile}`);
    x.dispose();
    y.dispose();
    taesd.dispose();
  }
}

Deno.test({
  name: "taesd: the real decoder matches torch on a random latent",
  ...GPU_TEST,
  fn: async () => {
    if (!sharedAvailable(DECODER)) return;
    await check("taesd_latent_randn.npy", "taesd_decode_randn.npy");
  },
});

Deno.test({
  name: "taesd: the real decoder reconstructs the encoded picture as torch does",
  ...GPU_TEST,
  fn: async () => {
    if (!sharedAvailable(DECODER)) return;
    await check("taesd_latent.npy", "taesd_reconstruction.npy");
  },
});

Deno.test({
  name: "taesd: a wrong checkpoint and a wrong latent shape are refused with the reason",
  ...GPU_TEST,
  fn: async () => {
    if (!sharedAvailable(DECODER) || !sharedAvailable(ENCODER)) return;
    const rt = await testRuntime(["conv2d"]);
    await assert.rejects(
      () => loadTaesdDecoder(new URL(ENCODER, SHARED), { runtime: rt, dtype: "f32" }),
      /is not a TAESD decoder \(missing 1\.weight, 7\.weight, .* and 11 more; unexpected 0\.bias/,
    );
    const taesd = await loadTaesdDecoder(new URL(DECODER, SHARED), { runtime: rt, dtype: "f32" });
    assert.throws(
      () => taesd.decode(rt.empty([1, 3, 8, 8])),
      /TAESD decodes latents \[B, 4, h, w\], got \[1,3,8,8\]/,
    );
    taesd.dispose();
  },
});
