import assert from "node:assert/strict";
import {
  blockOf,
  paramShapes,
  partOf,
  unetFlops,
  unetLayers,
  vaeDecodeFlops,
  vaeDecoderLayers,
} from "../bench/flops.ts";
import { SD15, SD21, type UNet2DConditionConfig } from "../src/weights/configs.ts";
import type { AutoencoderKLConfig } from "../src/weights/configs.ts";
import { openSafetensors } from "../src/weights/safetensors.ts";
import { FIXTURES, modelDir } from "./util.ts";

const TINY = new URL("models/tiny-sd15/", FIXTURES);

async function json<T>(path: string, root = TINY): Promise<T> {
  return JSON.parse(await Deno.readTextFile(new URL(path, root)));
}

async function headerShapes(path: string, root = TINY): Promise<Map<string, number[]>> {
  const file = await openSafetensors(new URL(path, root));
  try {
    return new Map([...file.tensors].map(([k, info]) => [k, info.shape]));
  } finally {
    file.close();
  }
}

function count(shapes: Map<string, number[]>): number {
  let n = 0;
  for (const s of shapes.values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/** Differences between two key → shape tables, for a readable failure. */
function diffShapes(got: Map<string, number[]>, want: Map<string, number[]>): string[] {
  const out: string[] = [];
  for (const [k, s] of want) {
    const g = got.get(k);
    if (!g) out.push(`missing ${k} [${s}]`);
    else if (g.join() !== s.join()) out.push(`${k}: [${g}] ≠ [${s}]`);
  }
  for (const k of got.keys()) if (!want.has(k)) out.push(`extra ${k}`);
  return out;
}

Deno.test("SD 1.5 U-Net: ≈0.80 TFLOP per call at 64² latent, twice that per CFG step", () => {
  const one = unetFlops(SD15.unet, { height: 64, width: 64 });
  const two = unetFlops(SD15.unet, { batch: 2, height: 64, width: 64 });
  assert.ok(one.total > 0.79e12 && one.total < 0.82e12, `batch 1: ${one.total / 1e12} TFLOP`);
  assert.ok(two.total > 1.6e12 && two.total < 1.7e12, `batch 2: ${two.total / 1e12} TFLOP`);
  assert.equal(two.total, 2 * one.total);
  const kinds = one.byKind.conv + one.byKind.linear + one.byKind.attention + one.byKind.norm;
  assert.equal(kinds, one.total);
  const blocks = Object.values(one.byBlock).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(blocks - one.total) < 1, `blocks sum to ${blocks}, total ${one.total}`);
  assert.deepEqual(Object.keys(one.byBlock).sort(), [
    "down_blocks.0",
    "down_blocks.1",
    "down_blocks.2",
    "down_blocks.3",
    "mid_block",
    "other",
    "up_blocks.0",
    "up_blocks.1",
    "up_blocks.2",
    "up_blocks.3",
  ]);
});

Deno.test("U-Net layers count the FLOPs of each op by hand", () => {
  const layers = unetLayers(SD15.unet, { batch: 2, height: 64, width: 64, contextLength: 154 });
  const get = (name: string, kind?: string) => {
    const l = layers.find((x) => x.name === name && (!kind || x.kind === kind));
    assert.ok(l, `no layer ${name}`);
    return l;
  };
  assert.equal(get("conv_in").flops, 2 * 2 * 320 * 4 * 9 * 64 * 64);
  assert.equal(get("down_blocks.0.downsamplers.0.conv").flops, 2 * 2 * 320 * 320 * 9 * 32 * 32);
  assert.equal(get("up_blocks.0.upsamplers.0.conv").flops, 2 * 2 * 1280 * 1280 * 9 * 16 * 16);
  const tb = "down_blocks.0.attentions.0.transformer_blocks.0";
  assert.equal(get(`${tb}.attn1`, "attention").flops, 4 * 2 * 4096 * 4096 * 320);
  assert.equal(get(`${tb}.attn2`, "attention").flops, 4 * 2 * 4096 * 154 * 320);
  assert.equal(get(`${tb}.attn2.to_k`).flops, 2 * 2 * 154 * 768 * 320);
  assert.equal(get(`${tb}.ff.net.0.proj`).flops, 2 * 2 * 4096 * 320 * 2560);
  assert.equal(get("up_blocks.3.resnets.0.conv1").flops, 2 * 2 * 320 * 960 * 9 * 64 * 64);
  assert.equal(get("up_blocks.3.resnets.0.conv_shortcut").flops, 2 * 2 * 320 * 960 * 64 * 64);
  assert.equal(get("mid_block.resnets.0.time_emb_proj").flops, 2 * 2 * 1280 * 1280);
});

Deno.test("SD VAE decode at 512² ≈ 2.5 TFLOP", () => {
  const s = vaeDecodeFlops(SD15.vae, { height: 64, width: 64 });
  assert.ok(s.total > 2.45e12 && s.total < 2.55e12, `${s.total / 1e12} TFLOP`);
  const mid = vaeDecoderLayers(SD15.vae, { height: 64, width: 64 })
    .find((l) => l.name === "decoder.mid_block.attentions.0" && l.kind === "attention");
  assert.equal(mid?.flops, 4 * 4096 * 4096 * 512);
  assert.ok(s.byBlock["up_blocks.3"] > s.byBlock["up_blocks.0"]);
});

Deno.test("parameter tables match diffusers' parameter counts for SD 1.5 and SD 2.1", () => {
  const sd15 = paramShapes(unetLayers(SD15.unet, { height: 8, width: 8 }));
  const sd21 = paramShapes(unetLayers(SD21.unet, { height: 8, width: 8 }));
  assert.equal(count(sd15), 859_520_964);
  assert.equal(count(sd21), 865_910_724);
  assert.deepEqual(sd15.get("down_blocks.0.attentions.0.proj_in.weight"), [320, 320, 1, 1]);
  assert.deepEqual(sd21.get("down_blocks.0.attentions.0.proj_in.weight"), [320, 320]);
  assert.deepEqual(sd21.get("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"), [
    1280,
    1024,
  ]);
});

Deno.test("parameter tables equal the tiny-sd15 checkpoints' headers", async () => {
  const unetConfig = await json<UNet2DConditionConfig>("unet/config.json");
  const unet = paramShapes(unetLayers(unetConfig, { height: 8, width: 8 }));
  const unetFile = await headerShapes("unet/diffusion_pytorch_model.safetensors");
  assert.deepEqual(diffShapes(unet, unetFile), []);
  const vaeConfig = await json<AutoencoderKLConfig>("vae/config.json");
  const vae = paramShapes(vaeDecoderLayers(vaeConfig, { height: 8, width: 8 }));
  const vaeFile = await headerShapes("vae/diffusion_pytorch_model.safetensors");
  const decoderOnly = new Map(
    [...vaeFile].filter(([k]) => k.startsWith("decoder.") || k.startsWith("post_quant_conv.")),
  );
  assert.deepEqual(diffShapes(vae, decoderOnly), []);
});

Deno.test("the U-Net table equals the tiny-sd2 checkpoint (linear projections, heads per block)", async () => {
  const dir = modelDir("tiny-sd2");
  if (!dir) return;
  const root = new URL(`file://${dir}/`);
  const config = await json<UNet2DConditionConfig>("unet/config.json", root);
  assert.equal(config.use_linear_projection, true);
  const table = paramShapes(unetLayers(config, { height: 8, width: 8 }));
  const file = await headerShapes("unet/diffusion_pytorch_model.safetensors", root);
  assert.deepEqual(diffShapes(table, file), []);
});

Deno.test("blockOf and partOf name the block and part of a module", () => {
  assert.equal(blockOf("down_blocks.2.resnets.1.conv1"), "down_blocks.2");
  assert.equal(blockOf("mid_block"), "mid_block");
  assert.equal(blockOf("decoder.up_blocks.3.upsamplers.0.conv"), "up_blocks.3");
  assert.equal(blockOf("time_embedding.linear_1"), "other");
  assert.equal(blockOf("down_blocks_x.1"), "other");
  assert.equal(partOf("up_blocks.1.resnets.2"), "resnet");
  assert.equal(partOf("up_blocks.1.attentions.0.transformer_blocks.0.attn1"), "attention");
  assert.equal(partOf("down_blocks.0.downsamplers.0.conv"), "sampler");
  assert.equal(partOf("up_blocks.1"), "other");
  assert.equal(partOf("conv_out"), "other");
});

Deno.test("bad latent sizes are refused with the reason", () => {
  assert.throws(() => unetFlops(SD15.unet, { height: 60, width: 64 }), /multiple of 8/);
  assert.throws(() => unetFlops(SD15.unet, { height: 64, width: 64, batch: 0 }), /batch/);
});
