import assert from "node:assert/strict";
import { openDiffusersFolder } from "../../src/weights/diffusers.ts";
import { modelDir } from "./fixtures.ts";

Deno.test("diffusers: opens the tiny SD 1.5 folder: configs, weights, tokenizer", async () => {
  const dir = modelDir("tiny-sd15");
  const f = await openDiffusersFolder(new URL(`file://${dir}/`));
  assert.equal(f.root, dir);
  assert.deepEqual(f.modelIndex.unet, ["diffusers", "UNet2DConditionModel"]);
  assert.equal(f.configs.unet.cross_attention_dim, 32);
  assert.equal(f.configs.vae.scaling_factor, 0.18215);
  assert.equal(f.configs.text_encoder.hidden_act, "quick_gelu");
  assert.equal(f.configs.scheduler._class_name, "PNDMScheduler");
  assert.equal(f.configs.tokenizer?.pad_token, "<|endoftext|>");
  assert.deepEqual(f.weights, {
    unet: `${dir}/unet/diffusion_pytorch_model.safetensors`,
    vae: `${dir}/vae/diffusion_pytorch_model.safetensors`,
    text_encoder: `${dir}/text_encoder/model.safetensors`,
  });
  assert.deepEqual(f.tokenizer, {
    vocab: `${dir}/tokenizer/vocab.json`,
    merges: `${dir}/tokenizer/merges.txt`,
    config: `${dir}/tokenizer/tokenizer_config.json`,
    specialTokensMap: `${dir}/tokenizer/special_tokens_map.json`,
  });
});

/** Builds a minimal pipeline folder (configs copied, placeholder weights) in a temp dir. */
async function scratchFolder(): Promise<string> {
  const src = modelDir("tiny-sd2");
  const dir = await Deno.makeTempDir({ prefix: "denoise_df_" });
  for (const sub of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
    await Deno.mkdir(`${dir}/${sub}`);
  }
  for (
    const f of [
      "model_index.json",
      "unet/config.json",
      "vae/config.json",
      "text_encoder/config.json",
      "tokenizer/vocab.json",
      "tokenizer/merges.txt",
      "scheduler/scheduler_config.json",
    ]
  ) await Deno.copyFile(`${src}/${f}`, `${dir}/${f}`);
  for (
    const f of [
      "unet/diffusion_pytorch_model.safetensors",
      "vae/diffusion_pytorch_model.safetensors",
      "text_encoder/model.safetensors",
    ]
  ) await Deno.writeFile(`${dir}/${f}`, new Uint8Array(1));
  return dir;
}

async function withScratch(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await scratchFolder();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("diffusers: fp16 variants are preferred on request and used as a fallback", async () => {
  await withScratch(async (dir) => {
    await Deno.writeFile(`${dir}/unet/diffusion_pytorch_model.fp16.safetensors`, new Uint8Array(1));
    const plain = await openDiffusersFolder(dir);
    assert.equal(plain.weights.unet, `${dir}/unet/diffusion_pytorch_model.safetensors`);
    assert.equal(plain.tokenizer.config, undefined);
    const half = await openDiffusersFolder(dir, { variant: "fp16" });
    assert.equal(half.weights.unet, `${dir}/unet/diffusion_pytorch_model.fp16.safetensors`);
    assert.equal(half.weights.vae, `${dir}/vae/diffusion_pytorch_model.safetensors`);
    await Deno.remove(`${dir}/unet/diffusion_pytorch_model.safetensors`);
    const only = await openDiffusersFolder(dir);
    assert.equal(only.weights.unet, `${dir}/unet/diffusion_pytorch_model.fp16.safetensors`);
  });
});

Deno.test("diffusers: missing or broken parts get errors that name them", async () => {
  await assert.rejects(openDiffusersFolder("/nonexistent/sd"), /does not exist: check the path/);
  await withScratch(async (dir) => {
    await assert.rejects(
      openDiffusersFolder(`${dir}/model_index.json`),
      /is a file, not a diffusers folder/,
    );

    await Deno.rename(`${dir}/unet/diffusion_pytorch_model.safetensors`, `${dir}/unet/x`);
    await assert.rejects(
      openDiffusersFolder(dir),
      /unet has no diffusion_pytorch_model\.safetensors \(nor diffusion_pytorch_model\.fp16\.safetensors\); it holds \[config\.json, x\]/,
    );
    await Deno.writeFile(`${dir}/unet/diffusion_pytorch_model.bin`, new Uint8Array(1));
    await assert.rejects(
      openDiffusersFolder(dir),
      /diffusion_pytorch_model\.bin is a PyTorch pickle file, which is refused/,
    );
    await Deno.rename(`${dir}/unet/x`, `${dir}/unet/diffusion_pytorch_model.safetensors`);

    await Deno.writeTextFile(`${dir}/scheduler/scheduler_config.json`, "{oops");
    await assert.rejects(openDiffusersFolder(dir), /scheduler_config\.json is not valid JSON/);
    await Deno.remove(`${dir}/scheduler/scheduler_config.json`);
    await assert.rejects(
      openDiffusersFolder(dir),
      /scheduler_config\.json is missing: the scheduler is incomplete/,
    );
    await Deno.remove(`${dir}/scheduler`, { recursive: true });
    await assert.rejects(openDiffusersFolder(dir), /has no scheduler\/ folder/);
    await Deno.mkdir(`${dir}/scheduler`);
    await Deno.copyFile(
      `${modelDir("tiny-sd2")}/scheduler/scheduler_config.json`,
      `${dir}/scheduler/scheduler_config.json`,
    );

    await Deno.remove(`${dir}/tokenizer/merges.txt`);
    await Deno.remove(`${dir}/text_encoder/model.safetensors`);
    await assert.rejects(
      openDiffusersFolder(dir),
      /merges\.txt is missing: the tokenizer is incomplete/,
    );

    await Deno.writeTextFile(`${dir}/model_index.json`, JSON.stringify({ unet: [] }));
    await assert.rejects(openDiffusersFolder(dir), /model_index\.json lists no "vae"/);
    await Deno.remove(`${dir}/model_index.json`);
    await assert.rejects(
      openDiffusersFolder(dir),
      /has no model_index\.json, so it is not a diffusers pipeline folder/,
    );
  });
});
