import assert from "node:assert/strict";
import { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { assertClose, errorStats, randomArray } from "../util.ts";
import { encodeSafetensors, modelDir, singleFile } from "../weights/fixtures.ts";

const FOLDER = modelDir("tiny-sd15");

let folderPipe: Promise<Pipeline> | undefined;
function folder(): Promise<Pipeline> {
  folderPipe ??= testRuntime().then((runtime) => loadPipeline(FOLDER, { dtype: "f32", runtime }));
  return folderPipe;
}

/** One denoising step at 64×64 from fixed latents, and its VAE decode. */
async function stepAndDecode(
  pipe: Pipeline,
): Promise<{ latents: Float32Array; image: Float32Array }> {
  const embeds = await encodePrompt(pipe, "a red fox", { negativePrompt: "blurry" });
  let last: Tensor | undefined;
  for await (
    const s of sampleLatents(pipe, embeds, {
      steps: 1,
      width: 64,
      height: 64,
      latents: randomArray(4 * 8 * 8, 3),
    })
  ) last = s.latents;
  embeds.dispose();
  const latents = await last!.read();
  const image = await decodeLatents(pipe, last!);
  last!.dispose();
  return { latents, image: image.float };
}

Deno.test({
  name: "load: the tiny-sd15 single file with configFrom steps and decodes as the folder does",
  ...GPU_TEST,
  fn: async () => {
    const path = singleFile("tiny-sd15");
    if (path === undefined) return;
    const runtime = await testRuntime();
    const single = await loadPipeline(path, { dtype: "f32", runtime, configFrom: FOLDER });
    try {
      const pipe = await folder();
      assert.equal(single.name, "tiny-sd15");
      for (const c of ["unet", "vae", "text_encoder"] as const) {
        assert.deepEqual(
          single.unused[c].toSorted(),
          pipe.unused[c].toSorted(),
          `unused ${c} keys`,
        );
      }
      assert.deepEqual(single.schedulerConfig, pipe.schedulerConfig);
      const want = await stepAndDecode(pipe);
      const got = await stepAndDecode(single);
      const moved = errorStats(want.latents, randomArray(4 * 8 * 8, 3)).maxAbs;
      assert.ok(moved > 1e-3, `the step changed the latents (max |Δ| ${moved})`);
      assertClose(got.latents, want.latents, { atol: 1e-6, rtol: 0, label: "step-0 latents" });
      assertClose(got.image, want.image, { atol: 1e-6, rtol: 0, label: "decoded image" });
    } finally {
      single.dispose();
    }
  },
});

Deno.test({
  name: "load: bad paths and single files without configs or a tokenizer get errors with the fix",
  ...GPU_TEST,
  fn: async () => {
    const runtime = await testRuntime();
    await assert.rejects(
      loadPipeline("models/v1-5.ckpt", { runtime }),
      /v1-5\.ckpt: pickle checkpoints are refused .*convert it to \.safetensors first/,
    );
    await assert.rejects(
      loadPipeline("/nonexistent/model.safetensors", { runtime }),
      /\/nonexistent\/model\.safetensors does not exist: check the path/,
    );
    const path = singleFile("tiny-sd15");
    if (path !== undefined) {
      await assert.rejects(
        loadPipeline(path, { runtime }),
        /not recognised as SD 1\.x or SD 2\.x .*pass \{ configFrom: "a diffusers folder/,
      );
    }
    // A file recognised as SD 1.x (by its cross-attention width and CLIP keys) but carrying no
    // tokenizer is refused before any weight is read.
    const dir = await Deno.makeTempDir({ prefix: "denoise_load_" });
    try {
      const file = `${dir}/sd15-like.safetensors`;
      const zeros = (n: number) => new Uint8Array(n * 2);
      await Deno.writeFile(
        file,
        encodeSafetensors([
          {
            name: "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            dtype: "F16",
            shape: [320, 768],
            data: zeros(320 * 768),
          },
          {
            name: "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
            dtype: "F16",
            shape: [77, 768],
            data: zeros(77 * 768),
          },
        ]),
      );
      await assert.rejects(
        loadPipeline(file, { runtime }),
        /is a single file and carries no tokenizer: pass \{ tokenizer: .*or \{ configFrom: /,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: 'load: dtype "f16" is refused on an adapter without shader-f16; "auto" picks f32 there',
  ...GPU_TEST,
  fn: async () => {
    const runtime = await Runtime.create({ disableF16: true });
    assert.equal(runtime.gpu.hasF16, false);
    await assert.rejects(
      loadPipeline(FOLDER, { dtype: "f16", runtime }),
      /f16 needs the WebGPU feature shader-f16, which .* lacks; use dtype "f32"/,
    );
    const pipe = await loadPipeline(FOLDER, { runtime });
    assert.equal(pipe.dtype, "f32");
    pipe.dispose();
  },
});

Deno.test({
  name: "load: dispose() gives back every buffer the pipeline and a full run took",
  ...GPU_TEST,
  fn: async () => {
    const runtime = await testRuntime();
    await runtime.flush();
    const before = runtime.pool.stats().inUseBytes;
    const pipe = await loadPipeline(FOLDER, { dtype: "f32", runtime });
    const loaded = runtime.pool.stats().inUseBytes;
    assert.ok(loaded > before + 1e6, `the weights take memory (${loaded - before} bytes)`);
    await stepAndDecode(pipe);
    assert.equal(runtime.pool.stats().inUseBytes, loaded, "a run leaves nothing in use");
    pipe.dispose();
    assert.equal(runtime.pool.stats().inUseBytes, before, "dispose() frees the weights");
  },
});
