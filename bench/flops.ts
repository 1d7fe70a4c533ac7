/**
 * FLOP counts of the Stable Diffusion U-Net and VAE decoder, computed from a diffusers config and
 * the latent size by walking the architecture layer by layer (the same topology as
 * `src/models/unet.ts` and `src/models/vae.ts`). Each layer lists its parameters under their
 * diffusers keys, so the walk doubles as the model's parameter-shape table.
 *
 * Convention: one multiply-add is 2 FLOPs; only the matrix products are counted — convolutions,
 * linear layers and the two products of attention (`Q·Kᵀ` and `P·V`, `4·B·L·Lk·C`). Norms,
 * softmax and elementwise ops (< 1 % of the total) count 0.
 *
 * @module
 */
import type { AutoencoderKLConfig, UNet2DConditionConfig } from "../src/weights/configs.ts";

/** What kind of work a layer is. */
export type LayerKind = "conv" | "linear" | "attention" | "norm";

/** One layer of a network at a given input size. */
export interface LayerCost {
  /** The diffusers module name, for example `down_blocks.0.resnets.0.conv1`. */
  name: string;
  /** Convolution, linear layer, attention core (`softmax(Q·Kᵀ)·V`) or normalisation. */
  kind: LayerKind;
  /** FLOPs of one call (2 per multiply-add). */
  flops: number;
  /** The layer's parameters: diffusers key and shape. */
  params: [string, number[]][];
}

/** The input size a count is made for. */
export interface LatentShape {
  /** Batch size (2 for a classifier-free-guidance step); default 1. */
  batch?: number;
  /** Latent height (image height / 8). */
  height: number;
  /** Latent width (image width / 8). */
  width: number;
  /** Text tokens the cross-attention reads (default 77). */
  contextLength?: number;
}

/** FLOP totals of a list of layers. */
export interface FlopSummary {
  /** All FLOPs. */
  total: number;
  /** FLOPs per layer kind. */
  byKind: Record<LayerKind, number>;
  /** FLOPs per top-level block (see {@link blockOf}). */
  byBlock: Record<string, number>;
}

/**
 * The top-level block a module name belongs to: `down_blocks.N`, `mid_block`, `up_blocks.N`
 * (after an optional `encoder.` / `decoder.`), else `other` (embeddings, `conv_in`, `conv_out`…).
 *
 * @example
 * ```ts
 * import { blockOf } from "./flops.ts";
 * blockOf("up_blocks.1.attentions.2.proj_in"); // "up_blocks.1"
 * blockOf("conv_in"); // "other"
 * ```
 */
export function blockOf(name: string): string {
  const m = /^(?:(?:en|de)coder\.)?(down_blocks\.\d+|up_blocks\.\d+|mid_block)(?:\.|$)/.exec(name);
  return m ? m[1] : "other";
}

/**
 * The part of a block a module name belongs to: `resnet`, `attention` (a transformer or VAE
 * attention), `sampler` (down/up-sampling conv) or `other`.
 *
 * @example
 * ```ts
 * import { partOf } from "./flops.ts";
 * partOf("mid_block.attentions.0.transformer_blocks.0.ff.net.2"); // "attention"
 * ```
 */
export function partOf(name: string): "resnet" | "attention" | "sampler" | "other" {
  if (/(^|\.)resnets\.\d+(\.|$)/.test(name)) return "resnet";
  if (/(^|\.)attentions\.\d+(\.|$)/.test(name)) return "attention";
  if (/(^|\.)(down|up)samplers\.\d+(\.|$)/.test(name)) return "sampler";
  return "other";
}

/** Collects layers while the architecture is walked. */
class Walk {
  readonly layers: LayerCost[] = [];
  constructor(readonly batch: number) {}

  conv(name: string, cin: number, cout: number, k: number, size: [number, number]): void {
    this.layers.push({
      name,
      kind: "conv",
      flops: 2 * this.batch * cout * cin * k * k * size[0] * size[1],
      params: [[`${name}.weight`, [cout, cin, k, k]], [`${name}.bias`, [cout]]],
    });
  }

  /** A linear map on `rows` rows per batch item; `conv1x1` stores the weight as a 1×1 conv. */
  linear(
    name: string,
    cin: number,
    cout: number,
    rows: number,
    options: { bias?: boolean; conv1x1?: boolean } = {},
  ): void {
    const params: [string, number[]][] = [
      [`${name}.weight`, options.conv1x1 ? [cout, cin, 1, 1] : [cout, cin]],
    ];
    if (options.bias ?? true) params.push([`${name}.bias`, [cout]]);
    this.layers.push({ name, kind: "linear", flops: 2 * this.batch * rows * cin * cout, params });
  }

  norm(name: string, channels: number): void {
    this.layers.push({
      name,
      kind: "norm",
      flops: 0,
      params: [[`${name}.weight`, [channels]], [`${name}.bias`, [channels]]],
    });
  }

  /** The attention core of `len` queries over `keys` keys, `channels` = heads · head dim. */
  attention(name: string, len: number, keys: number, channels: number): void {
    this.layers.push({
      name,
      kind: "attention",
      flops: 4 * this.batch * len * keys * channels,
      params: [],
    });
  }
}

function positive(name: string, v: number | undefined): number {
  if (v === undefined || !Number.isInteger(v) || v < 1) {
    throw new Error(`${name} must be a positive whole number, got ${v}`);
  }
  return v;
}

/** The U-Net's resnet (`ResnetBlock2D` with a time-embedding projection). */
function unetResnet(
  w: Walk,
  name: string,
  cin: number,
  cout: number,
  temb: number,
  size: [number, number],
): void {
  w.norm(`${name}.norm1`, cin);
  w.conv(`${name}.conv1`, cin, cout, 3, size);
  w.linear(`${name}.time_emb_proj`, temb, cout, 1);
  w.norm(`${name}.norm2`, cout);
  w.conv(`${name}.conv2`, cout, cout, 3, size);
  if (cin !== cout) w.conv(`${name}.conv_shortcut`, cin, cout, 1, size);
}

/** `Transformer2DModel` with one `BasicTransformerBlock`. */
function transformer(
  w: Walk,
  name: string,
  c: number,
  size: [number, number],
  ctx: { dim: number; length: number; linearProjection: boolean },
): void {
  const l = size[0] * size[1];
  w.norm(`${name}.norm`, c);
  w.linear(`${name}.proj_in`, c, c, l, { conv1x1: !ctx.linearProjection });
  const b = `${name}.transformer_blocks.0`;
  w.norm(`${b}.norm1`, c);
  for (const p of ["to_q", "to_k", "to_v"]) w.linear(`${b}.attn1.${p}`, c, c, l, { bias: false });
  w.attention(`${b}.attn1`, l, l, c);
  w.linear(`${b}.attn1.to_out.0`, c, c, l);
  w.norm(`${b}.norm2`, c);
  w.linear(`${b}.attn2.to_q`, c, c, l, { bias: false });
  w.linear(`${b}.attn2.to_k`, ctx.dim, c, ctx.length, { bias: false });
  w.linear(`${b}.attn2.to_v`, ctx.dim, c, ctx.length, { bias: false });
  w.attention(`${b}.attn2`, l, ctx.length, c);
  w.linear(`${b}.attn2.to_out.0`, c, c, l);
  w.norm(`${b}.norm3`, c);
  w.linear(`${b}.ff.net.0.proj`, c, 8 * c, l);
  w.linear(`${b}.ff.net.2`, 4 * c, c, l);
  w.linear(`${name}.proj_out`, c, c, l, { conv1x1: !ctx.linearProjection });
}

/**
 * Every layer of a `UNet2DConditionModel` (SD 1.x / 2.x topology) for one call on latents of
 * `shape`, in execution order, with FLOPs and parameter shapes.
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { unetLayers } from "./flops.ts";
 * const layers = unetLayers(SD15.unet, { height: 64, width: 64 });
 * console.log(layers.length, layers[0].name);
 * ```
 */
export function unetLayers(config: UNet2DConditionConfig, shape: LatentShape): LayerCost[] {
  const w = new Walk(positive("batch", shape.batch ?? 1));
  const ch = config.block_out_channels;
  const levels = ch.length;
  const m = 2 ** (levels - 1);
  let h = positive("latent height", shape.height), wd = positive("latent width", shape.width);
  if (h % m !== 0 || wd % m !== 0) {
    throw new Error(`latent ${h}×${wd} must be a multiple of ${m} for ${levels} U-Net levels`);
  }
  const ctx = {
    dim: config.cross_attention_dim,
    length: positive("contextLength", shape.contextLength ?? 77),
    linearProjection: config.use_linear_projection,
  };
  const layers = config.layers_per_block;
  const temb = 4 * ch[0];
  const cross = (t: string) => t.startsWith("CrossAttn");
  w.linear("time_embedding.linear_1", ch[0], temb, 1);
  w.linear("time_embedding.linear_2", temb, temb, 1);
  w.conv("conv_in", config.in_channels, ch[0], 3, [h, wd]);
  config.down_block_types.forEach((type, i) => {
    const name = `down_blocks.${i}`;
    for (let j = 0; j < layers; j++) {
      const cin = j > 0 ? ch[i] : i === 0 ? ch[0] : ch[i - 1];
      unetResnet(w, `${name}.resnets.${j}`, cin, ch[i], temb, [h, wd]);
      if (cross(type)) transformer(w, `${name}.attentions.${j}`, ch[i], [h, wd], ctx);
    }
    if (i < levels - 1) {
      h /= 2;
      wd /= 2;
      w.conv(`${name}.downsamplers.0.conv`, ch[i], ch[i], 3, [h, wd]);
    }
  });
  const last = ch[levels - 1];
  unetResnet(w, "mid_block.resnets.0", last, last, temb, [h, wd]);
  transformer(w, "mid_block.attentions.0", last, [h, wd], ctx);
  unetResnet(w, "mid_block.resnets.1", last, last, temb, [h, wd]);
  const rch = [...ch].reverse();
  config.up_block_types.forEach((type, i) => {
    const name = `up_blocks.${i}`;
    const c = rch[i];
    const below = rch[Math.min(i + 1, levels - 1)];
    for (let j = 0; j <= layers; j++) {
      const skip = j === layers ? below : c;
      const prev = j > 0 ? c : i === 0 ? last : rch[i - 1];
      unetResnet(w, `${name}.resnets.${j}`, prev + skip, c, temb, [h, wd]);
      if (cross(type)) transformer(w, `${name}.attentions.${j}`, c, [h, wd], ctx);
    }
    if (i < levels - 1) {
      h *= 2;
      wd *= 2;
      w.conv(`${name}.upsamplers.0.conv`, c, c, 3, [h, wd]);
    }
  });
  w.norm("conv_norm_out", ch[0]);
  w.conv("conv_out", ch[0], config.out_channels, 3, [h, wd]);
  return w.layers;
}

/** The VAE's resnet (no time embedding). */
function vaeResnet(w: Walk, name: string, cin: number, cout: number, size: [number, number]) {
  w.norm(`${name}.norm1`, cin);
  w.conv(`${name}.conv1`, cin, cout, 3, size);
  w.norm(`${name}.norm2`, cout);
  w.conv(`${name}.conv2`, cout, cout, 3, size);
  if (cin !== cout) w.conv(`${name}.conv_shortcut`, cin, cout, 1, size);
}

/**
 * Every layer of the `AutoencoderKL` decoder path (`post_quant_conv`, then `decoder.*`) for latents
 * of `shape`, in execution order, with FLOPs and parameter shapes.
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { summarizeFlops, vaeDecoderLayers } from "./flops.ts";
 * const tflop = summarizeFlops(vaeDecoderLayers(SD15.vae, { height: 64, width: 64 })).total / 1e12;
 * ```
 */
export function vaeDecoderLayers(config: AutoencoderKLConfig, shape: LatentShape): LayerCost[] {
  const w = new Walk(positive("batch", shape.batch ?? 1));
  let h = positive("latent height", shape.height), wd = positive("latent width", shape.width);
  const rev = [...config.block_out_channels].reverse();
  const lat = config.latent_channels;
  if (config.use_post_quant_conv !== false) w.conv("post_quant_conv", lat, lat, 1, [h, wd]);
  w.conv("decoder.conv_in", lat, rev[0], 3, [h, wd]);
  vaeResnet(w, "decoder.mid_block.resnets.0", rev[0], rev[0], [h, wd]);
  if (config.mid_block_add_attention !== false) {
    const a = "decoder.mid_block.attentions.0";
    const l = h * wd;
    w.norm(`${a}.group_norm`, rev[0]);
    for (const p of ["to_q", "to_k", "to_v"]) w.linear(`${a}.${p}`, rev[0], rev[0], l);
    w.attention(a, l, l, rev[0]);
    w.linear(`${a}.to_out.0`, rev[0], rev[0], l);
  }
  vaeResnet(w, "decoder.mid_block.resnets.1", rev[0], rev[0], [h, wd]);
  rev.forEach((c, i) => {
    const name = `decoder.up_blocks.${i}`;
    for (let j = 0; j <= config.layers_per_block; j++) {
      const cin = j > 0 ? c : i === 0 ? rev[0] : rev[i - 1];
      vaeResnet(w, `${name}.resnets.${j}`, cin, c, [h, wd]);
    }
    if (i < rev.length - 1) {
      h *= 2;
      wd *= 2;
      w.conv(`${name}.upsamplers.0.conv`, c, c, 3, [h, wd]);
    }
  });
  const c0 = rev[rev.length - 1];
  w.norm("decoder.conv_norm_out", c0);
  w.conv("decoder.conv_out", c0, config.out_channels, 3, [h, wd]);
  return w.layers;
}

/**
 * Totals of `layers`: all FLOPs, per kind and per top-level block.
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { summarizeFlops, unetLayers } from "./flops.ts";
 * const s = summarizeFlops(unetLayers(SD15.unet, { batch: 2, height: 64, width: 64 }));
 * console.log((s.total / 1e12).toFixed(2), "TFLOP per CFG step");
 * ```
 */
export function summarizeFlops(layers: readonly LayerCost[]): FlopSummary {
  const byKind: Record<LayerKind, number> = { conv: 0, linear: 0, attention: 0, norm: 0 };
  const byBlock: Record<string, number> = {};
  let total = 0;
  for (const l of layers) {
    total += l.flops;
    byKind[l.kind] += l.flops;
    const b = blockOf(l.name);
    byBlock[b] = (byBlock[b] ?? 0) + l.flops;
  }
  return { total, byKind, byBlock };
}

/**
 * FLOPs of one U-Net call on latents of `shape` (batch 2 for a CFG step).
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { unetFlops } from "./flops.ts";
 * unetFlops(SD15.unet, { height: 64, width: 64 }).total; // ≈ 0.8e12
 * ```
 */
export function unetFlops(config: UNet2DConditionConfig, shape: LatentShape): FlopSummary {
  return summarizeFlops(unetLayers(config, shape));
}

/**
 * FLOPs of one VAE decode of latents of `shape` (the image is 8× larger per side).
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { vaeDecodeFlops } from "./flops.ts";
 * vaeDecodeFlops(SD15.vae, { height: 64, width: 64 }).total; // ≈ 2.5e12 at 512²
 * ```
 */
export function vaeDecodeFlops(config: AutoencoderKLConfig, shape: LatentShape): FlopSummary {
  return summarizeFlops(vaeDecoderLayers(config, shape));
}

/**
 * The parameter table of `layers`: diffusers key → shape, in execution order.
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { paramShapes, unetLayers } from "./flops.ts";
 * const shapes = paramShapes(unetLayers(SD15.unet, { height: 8, width: 8 }));
 * shapes.get("conv_in.weight"); // [320, 4, 3, 3]
 * ```
 */
export function paramShapes(layers: readonly LayerCost[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of layers) for (const [key, shape] of l.params) out.set(key, shape);
  return out;
}
