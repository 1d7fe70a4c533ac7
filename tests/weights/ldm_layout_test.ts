// Full-size SD 1.5 / SD 2.1 single-file key layouts (from bench/make_checkpoint.ts, written from
// the CompVis ldm module structure, not from names.ts) against our key mapping and our models.
// The expected diffusers keys come from the model constructors themselves: each model is built
// on a fake runtime that uploads nothing, so its strict import (ParamStore) checks that the
// mapped keys are exactly the parameters it takes, with the right shapes, with no GPU and no
// 4 GB of data.
import assert from "node:assert/strict";
import { ldmTensors, writeLdmCheckpoint } from "../../bench/make_checkpoint.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { ClipTextModel } from "../../src/models/clip.ts";
import { UNet2DConditionModel } from "../../src/models/unet.ts";
import { AutoencoderKL } from "../../src/models/vae.ts";
import { type PipelineConfigs, SD15, SD21 } from "../../src/weights/configs.ts";
import { detectCheckpoint } from "../../src/weights/detect.ts";
import { type Component, mapSingleFileKeys } from "../../src/weights/names.ts";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import type { LoadedTensor } from "../../src/weights/source.ts";

/** A runtime whose uploads and allocations are no-ops: enough for model constructors. */
function fakeRuntime(): Runtime {
  const tensor = (shape: readonly number[]): unknown => ({
    shape,
    byteSize: 0,
    size: 0,
    dispose() {},
    reshape: tensor, // a 1×1 conv weight used as a linear one
    view: tensor, // a part of a joined parameter
  });
  return {
    preferredDType: "f32",
    assertDType() {},
    empty: tensor,
    upload: (_data: unknown, shape: readonly number[]) => tensor(shape),
    write() {},
    device: { queue: { submit() {} } },
    gpu: { limits: { minStorageBufferOffsetAlignment: 256 } },
  } as unknown as Runtime;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const SCHEDULE = [
  "alphas_cumprod",
  "alphas_cumprod_prev",
  "betas",
  "log_one_minus_alphas_cumprod",
  "posterior_log_variance_clipped",
  "posterior_mean_coef1",
  "posterior_mean_coef2",
  "posterior_variance",
  "sqrt_alphas_cumprod",
  "sqrt_one_minus_alphas_cumprod",
  "sqrt_recip_alphas_cumprod",
  "sqrt_recipm1_alphas_cumprod",
];

/** Maps the layout, then builds the three models strictly from the mapped keys and shapes. */
function mapAndBuild(family: "sd15" | "sd21", configs: PipelineConfigs): string[] {
  const shapes = new Map(ldmTensors(family).map((t) => [t.name, { shape: t.shape }]));
  const mapping = mapSingleFileKeys(shapes, {
    unet: configs.unet,
    vae: configs.vae,
    textEncoder: configs.text_encoder,
  });
  assert.deepEqual(mapping.unknown, []);
  const byComponent = new Map<Component, Map<string, LoadedTensor>>();
  for (const e of mapping.entries) {
    const m = byComponent.get(e.target.component) ?? new Map<string, LoadedTensor>();
    assert.ok(!m.has(e.target.key), `${e.target.key} is mapped twice`);
    m.set(e.target.key, { shape: e.shape, dtype: "F32", data: new Float32Array(0) });
    byComponent.set(e.target.component, m);
  }
  const rt = fakeRuntime();
  const unet = UNet2DConditionModel.load(rt, {
    tensors: byComponent.get("unet")!,
    config: configs.unet,
    dtype: "f32",
  });
  const vae = AutoencoderKL.load(rt, {
    tensors: byComponent.get("vae")!,
    config: configs.vae,
    dtype: "f32",
    parts: ["encoder", "decoder"],
  });
  const text = ClipTextModel.load(rt, {
    tensors: byComponent.get("text_encoder")!,
    config: configs.text_encoder,
    dtype: "f32",
  });
  assert.deepEqual(unet.unused, [], "U-Net keys no module took");
  assert.deepEqual(vae.unused, [], "VAE keys no module took");
  assert.deepEqual(text.unused, [], "text encoder keys no module took");
  return mapping.ignored.map((i) => i.key).sort();
}

Deno.test("ldm layout: the generator's SD 1.5 / 2.1 parameter counts are the published ones", () => {
  for (
    const [family, counts] of [
      ["sd15", { unet: 859_520_964, vae: 83_653_863, text: 123_060_480 }],
      ["sd21", { unet: 865_910_724, vae: 83_653_863, text: 354_032_641 }],
    ] as const
  ) {
    const sum = (prefix: string) =>
      ldmTensors(family)
        .filter((t) => t.name.startsWith(prefix) && !t.name.endsWith("position_ids"))
        .reduce((a, t) => a + numel(t.shape), 0);
    assert.equal(sum("model.diffusion_model."), counts.unet, `${family} U-Net`);
    assert.equal(sum("first_stage_model."), counts.vae, `${family} VAE`);
    assert.equal(sum("cond_stage_model."), counts.text, `${family} text encoder`);
  }
});

Deno.test("ldm layout: full-size SD 1.5 is detected as SD 1.x and loads strictly", () => {
  const shapes = new Map(ldmTensors("sd15").map((t) => [t.name, { shape: t.shape }]));
  const d = detectCheckpoint(shapes);
  assert.equal(d.family, "sd1");
  assert.equal(d.textEncoder, "clip");
  assert.equal(d.crossAttentionDim, 768);
  assert.equal(d.inChannels, 4);
  assert.equal(d.predictionType, "epsilon");
  assert.deepEqual(d.configs, SD15);
  const ignored = mapAndBuild("sd15", d.configs!);
  const want = [
    ...SCHEDULE,
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
    "model_ema.decay",
    "model_ema.num_updates",
  ].sort();
  assert.deepEqual(ignored, want);
});

Deno.test("ldm layout: full-size SD 2.1 (OpenCLIP, 24 blocks) is detected and loads strictly", () => {
  const shapes = new Map(ldmTensors("sd21").map((t) => [t.name, { shape: t.shape }]));
  const d = detectCheckpoint(shapes);
  assert.equal(d.family, "sd2");
  assert.equal(d.textEncoder, "openclip");
  assert.equal(d.crossAttentionDim, 1024);
  assert.equal(d.predictionType, "v_prediction");
  assert.deepEqual(d.configs, SD21);
  const ignored = mapAndBuild("sd21", d.configs!);
  const last = "cond_stage_model.model.transformer.resblocks.23.";
  assert.deepEqual(
    ignored.filter((k) => !SCHEDULE.includes(k) && !k.startsWith(last)),
    [
      "cond_stage_model.model.logit_scale",
      "cond_stage_model.model.text_projection",
      "model_ema.decay",
      "model_ema.num_updates",
    ],
  );
  assert.equal(ignored.filter((k) => k.startsWith(last)).length, 12, "the unused 24th block");
});

Deno.test("ldm layout: the strict build fails on a wrong layout (the check can fail)", () => {
  // An SD 2.1 layout read with the SD 1.5 configs: conv proj_in vs linear, 768 vs 1024 context.
  assert.throws(() => mapAndBuild("sd21", SD15), /StrictImportError|does not fit the model/);
});

Deno.test("ldm layout: writeLdmCheckpoint streams a valid, deterministic safetensors file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_ldm_" });
  try {
    const ids = "cond_stage_model.transformer.text_model.embeddings.position_ids";
    const wanted = new Set([
      ...SCHEDULE,
      "model_ema.decay",
      "model_ema.num_updates",
      ids,
      "first_stage_model.decoder.conv_in.weight",
      "first_stage_model.decoder.norm_out.weight",
      "first_stage_model.decoder.norm_out.bias",
    ]);
    const pick = (name: string) => wanted.has(name);
    const paths = [`${dir}/a.safetensors`, `${dir}/b.safetensors`, `${dir}/c.safetensors`];
    const info = await writeLdmCheckpoint(paths[0], { select: pick });
    await writeLdmCheckpoint(paths[1], { select: pick });
    await writeLdmCheckpoint(paths[2], { select: pick, seed: 1, dtype: "F16" });
    assert.equal((await Deno.stat(paths[0])).size, info.bytes);
    assert.deepEqual(await Deno.readFile(paths[0]), await Deno.readFile(paths[1]));
    const f = await openSafetensors(paths[0]);
    const h = await openSafetensors(paths[2]);
    try {
      assert.equal(f.tensors.size, wanted.size);
      assert.equal(info.tensors, wanted.size);
      assert.equal(f.metadata.format, "pt");
      assert.equal(f.tensors.values().next().value!.byteOffset % 8, 0, "padded header");
      const w = await f.readF32("first_stage_model.decoder.conv_in.weight"); // [512, 4, 3, 3]
      const mean = w.reduce((a, b) => a + b, 0) / w.length;
      const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length);
      assert.ok(Math.abs(mean) < 1e-3 && Math.abs(std - 0.02) < 1e-3, `N(0, 0.02)? ${mean} ${std}`);
      const other = await h.readF32("first_stage_model.decoder.conv_in.weight");
      assert.notDeepEqual(other, w, "another seed gives other values");
      assert.equal(h.tensors.get("first_stage_model.decoder.conv_in.weight")!.dtype, "F16");
      assert.deepEqual(
        await f.readF32("first_stage_model.decoder.norm_out.weight"),
        new Float32Array(128).fill(1),
      );
      assert.deepEqual(
        await f.readF32("first_stage_model.decoder.norm_out.bias"),
        new Float32Array(128),
      );
      assert.equal(f.tensors.get("model_ema.num_updates")!.dtype, "I32");
      assert.deepEqual(f.tensors.get("model_ema.decay")!.shape, []);
      const acp = await f.readF32("alphas_cumprod");
      assert.ok(Math.abs(acp[0] - (1 - 0.00085)) < 1e-7, `alphas_cumprod[0] ${acp[0]}`);
      assert.ok(Math.abs(acp[999] - 0.00466) < 1e-5, `alphas_cumprod[999] ${acp[999]}`);
      assert.equal(f.tensors.get(ids)!.dtype, "I64");
      assert.deepEqual(await f.readF32(ids), Float32Array.from({ length: 77 }, (_, i) => i));
    } finally {
      f.close();
      h.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ldm layout: a full-size SD 1.5 inpainting file (9-channel conv_in) is recognised and loads strictly", () => {
  const conv = "model.diffusion_model.input_blocks.0.0.weight";
  const shapes = new Map(
    ldmTensors("sd15").map((t) => [t.name, { shape: t.name === conv ? [320, 9, 3, 3] : t.shape }]),
  );
  const d = detectCheckpoint(shapes);
  assert.equal(d.family, "sd1");
  assert.equal(d.inChannels, 9);
  assert.equal(d.predictionType, "epsilon");
  assert.equal(d.configs!.unet.in_channels, 9);
  assert.equal(d.configs!.unet.out_channels, 4);
  assert.equal(d.configs!.vae.latent_channels * 2 + 1, 9, "latents + mask + masked latents");
  // mapAndBuild reads the generator's shapes: build the 9-channel U-Net from the edited map
  const mapping = mapSingleFileKeys(shapes, {
    unet: d.configs!.unet,
    vae: d.configs!.vae,
    textEncoder: d.configs!.text_encoder,
  });
  assert.deepEqual(mapping.unknown, []);
  const unetTensors = new Map<string, LoadedTensor>();
  for (const e of mapping.entries) {
    if (e.target.component !== "unet") continue;
    unetTensors.set(e.target.key, { shape: e.shape, dtype: "F32", data: new Float32Array(0) });
  }
  const unet = UNet2DConditionModel.load(fakeRuntime(), {
    tensors: unetTensors,
    config: d.configs!.unet,
    dtype: "f32",
  });
  assert.deepEqual(unet.unused, []);
  assert.deepEqual(unetTensors.get("conv_in.weight")!.shape, [320, 9, 3, 3]);
});
