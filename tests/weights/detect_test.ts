import assert from "node:assert/strict";
import { SD15, SD21 } from "../../src/weights/configs.ts";
import { detectCheckpoint } from "../../src/weights/detect.ts";
import { openDiffusersFolder } from "../../src/weights/diffusers.ts";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import { modelDir, singleFile } from "./fixtures.ts";

const TO_K = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
const CONV_IN = "model.diffusion_model.input_blocks.0.0.weight";

function shapes(entries: Record<string, number[]>): Map<string, { shape: number[] }> {
  return new Map(Object.entries(entries).map(([k, shape]) => [k, { shape }]));
}

const SD1_KEYS = {
  [TO_K]: [320, 768],
  [CONV_IN]: [320, 4, 3, 3],
  "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
};
const SD2_KEYS = {
  [TO_K]: [320, 1024],
  [CONV_IN]: [320, 4, 3, 3],
  "cond_stage_model.model.token_embedding.weight": [49408, 1024],
};

Deno.test("detect: SD 1.x by 768-wide cross-attention and CLIP keys → SD 1.5 configs", () => {
  const d = detectCheckpoint(shapes(SD1_KEYS));
  assert.equal(d.family, "sd1");
  assert.equal(d.textEncoder, "clip");
  assert.equal(d.crossAttentionDim, 768);
  assert.equal(d.predictionType, "epsilon");
  assert.deepEqual(d.configs, SD15);
  assert.notEqual(d.configs, SD15); // a copy the caller may change
});

Deno.test("detect: SD 2.x by 1024-wide cross-attention and OpenCLIP → 2.1 v-prediction", () => {
  const d = detectCheckpoint(shapes(SD2_KEYS));
  assert.equal(d.family, "sd2");
  assert.equal(d.textEncoder, "openclip");
  assert.equal(d.predictionType, "v_prediction");
  assert.match(d.predictionTypeReason, /SD 2\.x default/);
  assert.deepEqual(d.configs, SD21);
  assert.equal(d.configs!.text_encoder.num_hidden_layers, 23);

  const base = detectCheckpoint(shapes(SD2_KEYS), { predictionType: "epsilon" });
  assert.equal(base.predictionType, "epsilon");
  assert.equal(base.predictionTypeReason, "given by the caller");
  assert.equal(base.configs!.scheduler.prediction_type, "epsilon");
  assert.equal(base.configs!.unet.sample_size, 64);
});

Deno.test("detect: inpainting checkpoints and the v_pred marker key", () => {
  const inpaint = detectCheckpoint(shapes({ ...SD2_KEYS, [CONV_IN]: [320, 9, 3, 3] }));
  assert.equal(inpaint.family, "sd2");
  assert.equal(inpaint.inChannels, 9);
  assert.equal(inpaint.predictionType, "epsilon");
  assert.equal(inpaint.configs!.unet.in_channels, 9);
  const vpred = detectCheckpoint(shapes({ ...SD1_KEYS, v_pred: [] }));
  assert.equal(vpred.family, "sd1");
  assert.equal(vpred.predictionType, "v_prediction");
  assert.equal(vpred.configs!.scheduler.prediction_type, "v_prediction");
});

Deno.test("detect: the tiny fixtures are not a known family (configs must be passed)", async () => {
  for (const [model, encoder] of [["tiny-sd15", "clip"], ["tiny-sd2", "openclip"]]) {
    const path = singleFile(model);
    if (path === undefined) return;
    const f = await openSafetensors(path);
    f.close();
    const d = detectCheckpoint(f.tensors);
    assert.equal(d.family, "unknown", model);
    assert.equal(d.textEncoder, encoder, model);
    assert.equal(d.crossAttentionDim, 32, model);
    assert.equal(d.configs, undefined, model);
  }
});

Deno.test("configs: SD 1.5 / 2.1 configs have the keys of a diffusers 0.30.3 folder", async () => {
  for (const [model, std] of [["tiny-sd15", SD15], ["tiny-sd2", SD21]] as const) {
    const { configs } = await openDiffusersFolder(modelDir(model));
    const keys = (o: Record<string, unknown>, drop: string[]) =>
      Object.keys(o).filter((k) => !drop.includes(k)).sort();
    assert.deepEqual(keys(std.unet, []), keys(configs.unet, ["_diffusers_version"]));
    assert.deepEqual(keys(std.vae, []), keys(configs.vae, ["_diffusers_version"]));
    assert.deepEqual(
      keys(std.text_encoder, []),
      keys(configs.text_encoder, ["torch_dtype", "transformers_version"]),
    );
    // The fixtures' schedulers ARE the SD 1.5 / SD 2.1 scheduler configs.
    const { _diffusers_version: _, ...scheduler } = configs.scheduler;
    assert.deepEqual(std.scheduler, scheduler, model);
  }
});
