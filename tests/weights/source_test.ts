import assert from "node:assert/strict";
import type { Component } from "../../src/weights/names.ts";
import {
  closeModelSource,
  type ModelConfigs,
  openModelSource,
  readComponent,
} from "../../src/weights/source.ts";
import { bytesOf, encodeSafetensors, modelDir, MODELS, singleFile } from "./fixtures.ts";

const COMPONENTS: Component[] = ["unet", "vae", "text_encoder"];

for (const model of MODELS) {
  Deno.test(`source: ${model} single file yields the folder's tensors byte for byte`, async () => {
    const path = singleFile(model);
    if (path === undefined) return;
    const folder = await openModelSource(modelDir(model));
    assert.equal(folder.kind, "diffusers");
    const single = await openModelSource(path, { configs: folder.configs });
    try {
      assert.equal(single.kind, "single_file");
      for (const component of COMPONENTS) {
        const want = await readComponent(folder, component);
        const got = await readComponent(single, component);
        assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), component);
        for (const [key, w] of want) {
          const g = got.get(key)!;
          assert.deepEqual(g.shape, w.shape, key);
          assert.equal(g.dtype, w.dtype, key);
          assert.deepEqual(g.data, w.data, key);
        }
      }
      const f32 = await readComponent(single, "text_encoder", { f32: true });
      const ref = await readComponent(folder, "text_encoder", { f32: true });
      const key = "text_model.encoder.layers.0.self_attn.v_proj.weight";
      assert.equal(f32.get(key)!.dtype, "F32");
      assert.ok(f32.get(key)!.data instanceof Float32Array);
      assert.deepEqual(f32.get(key)!.data, ref.get(key)!.data);
    } finally {
      closeModelSource(single);
    }
  });
}

Deno.test("source: an unrecognised single file needs explicit configs", async () => {
  const path = singleFile("tiny-sd15");
  if (path === undefined) return;
  await assert.rejects(
    openModelSource(path),
    /not recognised as SD 1\.x or SD 2\.x \(cross-attention width 32, text encoder clip\): pass the model's configs explicitly/,
  );
});

Deno.test("source: missing path, and folder buffers such as position_ids are left out", async () => {
  await assert.rejects(openModelSource("/nonexistent/model.safetensors"), /does not exist/);
  const dir = await Deno.makeTempDir({ prefix: "denoise_src_" });
  try {
    const src = modelDir("tiny-sd15");
    for (const sub of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
      await Deno.mkdir(`${dir}/${sub}`);
    }
    const copy = [
      "model_index.json",
      "unet/config.json",
      "unet/diffusion_pytorch_model.safetensors",
      "vae/config.json",
      "vae/diffusion_pytorch_model.safetensors",
      "text_encoder/config.json",
      "tokenizer/vocab.json",
      "tokenizer/merges.txt",
      "scheduler/scheduler_config.json",
    ];
    for (const f of copy) await Deno.copyFile(`${src}/${f}`, `${dir}/${f}`);
    const w = bytesOf(new Float32Array([1, 2]));
    const ids = bytesOf(new BigInt64Array([0n, 1n]));
    await Deno.writeFile(
      `${dir}/text_encoder/model.safetensors`,
      encodeSafetensors([
        { name: "text_model.final_layer_norm.weight", dtype: "F32", shape: [2], data: w },
        { name: "text_model.embeddings.position_ids", dtype: "I64", shape: [1, 2], data: ids },
      ]),
    );
    const source = await openModelSource(dir);
    const configs: ModelConfigs = source.configs;
    assert.equal(configs.unet.cross_attention_dim, 32);
    const text = await readComponent(source, "text_encoder");
    assert.deepEqual([...text.keys()], ["text_model.final_layer_norm.weight"]);
    assert.deepEqual(text.get("text_model.final_layer_norm.weight")!.data, w);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
