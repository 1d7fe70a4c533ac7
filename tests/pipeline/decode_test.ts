import assert from "node:assert/strict";
import { loadTaesdDecoder } from "../../src/models/taesd.ts";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { loadPipeline } from "../../src/pipeline/load.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { assertClose, fixture, modelDir, SHARED, sharedAvailable } from "../util.ts";

const DECODER = "data/taesd/taesd_decoder.safetensors";

Deno.test({
  name: "decode: taesd (a path or a loaded decoder) gives torch's TAESD image, clamped, as HWC",
  ignore: modelDir("tiny-sd15") === undefined,
  ...GPU_TEST,
  fn: async () => {
    if (!sharedAvailable(DECODER)) return;
    const path = decodeURIComponent(new URL(DECODER, SHARED).pathname);
    const runtime = await testRuntime();
    const pipe = await loadPipeline(modelDir("tiny-sd15")!, { dtype: "f32", runtime });
    try {
      const latent = await fixture("taesd/taesd_latent_randn.npy"); // [1, 4, 16, 16]
      const ref = await fixture("taesd/taesd_decode_randn.npy"); // [1, 3, 128, 128], unclamped
      const [, , H, W] = ref.shape;
      const want = new Float32Array(H * W * 3); // [H, W, 3]
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < H * W; i++) {
          want[i * 3 + c] = Math.min(1, Math.max(0, ref.data[c * H * W + i]));
        }
      }
      const x = runtime.upload(latent.data, latent.shape);
      await runtime.flush();
      const before = runtime.pool.stats().inUseBytes;
      const image = await decodeLatents(pipe, x, { taesd: path });
      assert.equal(
        runtime.pool.stats().inUseBytes,
        before,
        "a decoder loaded from a path is freed after the call",
      );
      assert.equal(image.width, W);
      assert.equal(image.height, H);
      assertClose(image.float, want, { atol: 1e-4 * 1.2, rtol: 0, label: "TAESD image_float" });
      for (let i = 0; i < H * W; i++) {
        for (let c = 0; c < 3; c++) {
          const d = Math.abs(image.data[i * 4 + c] - image.float[i * 3 + c] * 255);
          assert.ok(d <= 0.5, `pixel ${i} channel ${c}: byte ${image.data[i * 4 + c]}`);
        }
        assert.equal(image.data[i * 4 + 3], 255);
      }

      const taesd = await loadTaesdDecoder(path, { runtime, dtype: "f32" });
      const again = await decodeLatents(pipe, x, { taesd });
      assertClose(again.float, image.float, { atol: 0, rtol: 0, label: "loaded decoder" });
      const small = runtime.upload(latent.data.subarray(0, 4 * 2 * 2), [1, 4, 2, 2]);
      const reused = await decodeLatents(pipe, small, { taesd }); // the caller's decoder stays
      assert.equal(reused.width, 16);
      small.dispose();
      taesd.dispose();
      await assert.rejects(
        decodeLatents(pipe, runtime.upload(latent.data, [4, 16, 16]), { taesd: path }),
        /decodeLatents takes latents \[1, C, h, w\], got \[4,16,16\]/,
      );
      x.dispose();
    } finally {
      pipe.dispose();
    }
  },
});
