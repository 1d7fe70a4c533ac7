import assert from "node:assert/strict";
import { openDiffusersFolder } from "../../src/weights/diffusers.ts";
import {
  applyTransform,
  type Component,
  type KeyMappingOptions,
  mapSingleFileKeys,
  transformedShape,
  type UNetLayoutConfig,
} from "../../src/weights/names.ts";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import { modelDir, MODELS, singleFile } from "./fixtures.ts";

async function folderOptions(model: string): Promise<KeyMappingOptions> {
  const { configs } = await openDiffusersFolder(modelDir(model));
  return {
    unet: configs.unet as unknown as UNetLayoutConfig,
    vae: configs.vae as unknown as { block_out_channels: number[] },
    textEncoder: configs.text_encoder as unknown as { num_hidden_layers: number },
  };
}

async function singleFileShapes(path: string): Promise<Map<string, { shape: number[] }>> {
  const f = await openSafetensors(path);
  f.close();
  return new Map([...f.tensors].map(([k, v]) => [k, { shape: v.shape }]));
}

for (const model of MODELS) {
  Deno.test(`names: ${model} single file maps onto exactly the folder's keys and shapes`, async () => {
    const path = singleFile(model);
    if (path === undefined) return;
    const shapes = await singleFileShapes(path);
    const mapping = mapSingleFileKeys(shapes, await folderOptions(model));
    assert.deepEqual(mapping.unknown, []);
    assert.deepEqual(mapping.ignored, []);
    const folder = await openDiffusersFolder(modelDir(model));
    for (const component of ["unet", "vae", "text_encoder"] as Component[]) {
      const f = await openSafetensors(folder.weights[component]);
      f.close();
      const entries = mapping.entries.filter((e) => e.target.component === component);
      const got = new Map(entries.map((e) => [e.target.key, e.shape]));
      assert.equal(got.size, entries.length, `${component}: duplicate target keys`);
      assert.deepEqual([...got.keys()].sort(), [...f.tensors.keys()].sort(), component);
      for (const [key, info] of f.tensors) assert.deepEqual(got.get(key), info.shape, key);
    }
  });
}

Deno.test("names: tiny-sd2 uses the fused-q/k/v split and the VAE 1×1-conv squeeze", async () => {
  const path = singleFile("tiny-sd2");
  if (path === undefined) return;
  const mapping = mapSingleFileKeys(await singleFileShapes(path), await folderOptions("tiny-sd2"));
  const bySource = (s: string) => mapping.entries.filter((e) => e.source === s);
  const qkv = bySource("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight");
  assert.deepEqual(qkv.map((e) => [e.target.key, e.transform, e.shape]), [
    ["text_model.encoder.layers.1.self_attn.q_proj.weight", { split: 0, of: 3, axis: 0 }, [32, 32]],
    ["text_model.encoder.layers.1.self_attn.k_proj.weight", { split: 1, of: 3, axis: 0 }, [32, 32]],
    ["text_model.encoder.layers.1.self_attn.v_proj.weight", { split: 2, of: 3, axis: 0 }, [32, 32]],
  ]);
  const [proj] = bySource("first_stage_model.decoder.mid.attn_1.proj_out.weight");
  assert.deepEqual(proj.target, {
    component: "vae",
    key: "decoder.mid_block.attentions.0.to_out.0.weight",
  });
  assert.equal(proj.transform, "squeeze_1x1");
  assert.deepEqual(proj.shape, [64, 64]);
  const [up] = bySource("first_stage_model.decoder.up.3.upsample.conv.weight");
  assert.equal(up.target.key, "decoder.up_blocks.0.upsamplers.0.conv.weight");
  const [upsampler] = bySource("model.diffusion_model.output_blocks.5.2.conv.weight");
  assert.equal(upsampler.target.key, "up_blocks.1.upsamplers.0.conv.weight");
});

Deno.test("names: real-checkpoint extras are ignored with reasons, unknown keys reported", async () => {
  const path = singleFile("tiny-sd2");
  if (path === undefined) return;
  const shapes = await singleFileShapes(path);
  // A real SD 2.x file has one more OpenCLIP block than SD uses (24 vs 23); mimic it: 3 vs 2.
  for (const [k, v] of [...shapes]) {
    const m = /^(cond_stage_model\.model\.transformer\.resblocks\.)1\.(.+)$/.exec(k);
    if (m) shapes.set(`${m[1]}2.${m[2]}`, v);
  }
  const extras = [
    "model_ema.decay",
    "model_ema.diffusion_modelinput_blocks00weight",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "betas",
    "posterior_mean_coef1",
    "log_one_minus_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "lvlb_weights",
    "cond_stage_model.model.text_projection",
    "cond_stage_model.model.logit_scale",
    "first_stage_model.loss.logvar",
  ];
  for (const k of extras) shapes.set(k, { shape: [1] });
  const strange = ["some_lora.alpha", "model.diffusion_model.input_blocks.10.1.norm.weight"];
  for (const k of strange) shapes.set(k, { shape: [1] });
  const mapping = mapSingleFileKeys(shapes, await folderOptions("tiny-sd2"));
  const ignored = mapping.ignored.map((i) => i.key);
  for (const k of extras) assert.ok(ignored.includes(k), `${k} should be ignored`);
  const block2 = ignored.filter((k) => k.includes("resblocks.2."));
  assert.equal(block2.length, 12);
  assert.match(
    mapping.ignored.find((i) => i.key.includes("resblocks.2."))!.reason,
    /beyond num_hidden_layers = 2/,
  );
  assert.ok(mapping.entries.every((e) => !e.source.includes("resblocks.2.")));
  assert.deepEqual(mapping.unknown, strange); // block 3 (DownBlock2D) has no attention
});

Deno.test("names: legacy CLIP naming, position_ids and linear proj_in squeeze", async () => {
  const path = singleFile("tiny-sd15");
  if (path === undefined) return;
  const shapes = await singleFileShapes(path);
  const legacy = new Map<string, { shape: number[] }>();
  for (const [k, v] of shapes) {
    legacy.set(
      k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."),
      v,
    );
  }
  legacy.set("cond_stage_model.transformer.embeddings.position_ids", { shape: [1, 77] });
  const options = await folderOptions("tiny-sd15");
  const a = mapSingleFileKeys(shapes, options);
  const b = mapSingleFileKeys(legacy, options);
  assert.deepEqual(b.entries.map((e) => e.target), a.entries.map((e) => e.target));
  assert.deepEqual(b.ignored.map((i) => i.key), [
    "cond_stage_model.transformer.embeddings.position_ids",
  ]);

  const projIn = (o: KeyMappingOptions) =>
    mapSingleFileKeys(shapes, o).entries.find((e) =>
      e.source === "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    )!;
  assert.deepEqual(projIn(options).shape, [32, 32, 1, 1]);
  const linear = projIn({ ...options, unet: { ...options.unet, use_linear_projection: true } });
  assert.equal(linear.transform, "squeeze_1x1");
  assert.deepEqual(linear.shape, [32, 32]);
});

Deno.test("names: applyTransform splits without copying and rejects impossible shapes", () => {
  const data = Float32Array.from({ length: 12 }, (_, i) => i);
  const { data: k, shape } = applyTransform(data, [6, 2], { split: 1, of: 3, axis: 0 });
  assert.deepEqual(shape, [2, 2]);
  assert.deepEqual([...k], [4, 5, 6, 7]);
  assert.equal(k.buffer, data.buffer);
  const bytes = new Uint8Array(24);
  assert.equal(applyTransform(bytes, [6], { split: 2, of: 3, axis: 0 }).data.byteOffset, 16);
  assert.equal(applyTransform(bytes, [6, 1, 1], "squeeze_1x1").data, bytes);
  assert.throws(() => transformedShape([5, 2], { split: 0, of: 3, axis: 0 }), /cannot split/);
  assert.throws(() => transformedShape([4, 3, 3, 3], "squeeze_1x1"), /cannot squeeze/);
});
