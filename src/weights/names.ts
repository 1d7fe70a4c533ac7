/**
 * Every key rename: the original CompVis/LDM single-file layout (A1111-style `.safetensors`) to
 * diffusers' `unet` / `vae` / `text_encoder` keys (every rename, the 1×1-conv → linear squeeze of
 * attention weights, the split of OpenCLIP's fused `in_proj` q/k/v), stand-alone VAE files (LDM or
 * diffusers keys), and the module names LoRA files use (kohya/A1111 `lora_unet_…`/`lora_te_…` with
 * diffusers or LDM module paths, diffusers/PEFT `…lora_A`/`lora_B`, older diffusers attention
 * processors). Mappings are lists of entries so a loader can read each source byte range once.
 *
 * @module
 */

/** A diffusers pipeline component that holds weights. */
export type Component = "unet" | "vae" | "text_encoder";

/**
 * How a source tensor becomes its target: `"squeeze_1x1"` drops trailing unit axes of a 1×1 conv
 * weight ([C, C, 1, 1] → [C, C], same bytes); `{ split: i, of: n, axis: 0 }` takes the i-th of n
 * equal slices along axis 0 (a contiguous byte range).
 */
export type Transform = "squeeze_1x1" | { split: number; of: number; axis: 0 };

/** One target tensor and where its data comes from. */
export interface MappingEntry {
  /** The diffusers component and key. */
  target: { component: Component; key: string };
  /** The single-file key to read. Several entries may share one source (a fused q/k/v). */
  source: string;
  /** What to do to the source data, if anything. */
  transform?: Transform;
  /** The target's shape, after the transform. */
  shape: number[];
}

/** A single-file key that is deliberately not loaded, and why. */
export interface IgnoredKey {
  /** The single-file key. */
  key: string;
  /** Why it is not needed. */
  reason: string;
}

/** The result of {@link mapSingleFileKeys}. */
export interface KeyMapping {
  /** Every target tensor, in source order. */
  entries: MappingEntry[];
  /** Known extras that are not loaded (EMA copies, schedule buffers, unused CLIP parts). */
  ignored: IgnoredKey[];
  /** Keys that match no rule: reported, not loaded. */
  unknown: string[];
}

/** The parts of a diffusers UNet2DConditionModel config that decide key names. */
export interface UNetLayoutConfig {
  /** Resnets per down block (up blocks have one more). */
  layers_per_block: number;
  /** Down block types; names containing `Attn` have attentions. */
  down_block_types: readonly string[];
  /** Up block types; names containing `Attn` have attentions. */
  up_block_types: readonly string[];
  /** SD 2.x: `proj_in`/`proj_out` are linear ([C, C]) rather than 1×1 convs. */
  use_linear_projection?: boolean;
}

/** Options for {@link mapSingleFileKeys}. */
export interface KeyMappingOptions {
  /** The U-Net config (layers per block, block types). */
  unet: UNetLayoutConfig;
  /** The VAE config; only the number of levels is used (default: counted from the keys). */
  vae?: { block_out_channels: readonly number[] };
  /**
   * The text encoder config; layers at or beyond `num_hidden_layers` are ignored (a real SD 2.x
   * checkpoint has 24 OpenCLIP blocks and SD uses 23). Default: every layer present.
   */
  textEncoder?: { num_hidden_layers: number };
}

const UNET = "model.diffusion_model.";
const VAE = "first_stage_model.";
const CLIP = "cond_stage_model.transformer.";
const OPENCLIP = "cond_stage_model.model.";

const SCHEDULE_BUFFER =
  /^(betas|alphas_cumprod.*|posterior_.*|log_one_minus_.*|sqrt_.*|lvlb_weights|logvar)$/;

const RESNET_RENAMES: Record<string, string> = {
  "in_layers.0": "norm1",
  "in_layers.2": "conv1",
  "out_layers.0": "norm2",
  "out_layers.3": "conv2",
  "emb_layers.1": "time_emb_proj",
  "skip_connection": "conv_shortcut",
};
const UNET_RESNET =
  /^(in_layers\.0|in_layers\.2|out_layers\.0|out_layers\.3|emb_layers\.1|skip_connection)\.(weight|bias)$/;
const UNET_ATTN = [
  /^(norm|proj_in|proj_out)\.(weight|bias)$/,
  /^transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v)\.weight$/,
  /^transformer_blocks\.\d+\.attn[12]\.to_out\.0\.(weight|bias)$/,
  /^transformer_blocks\.\d+\.norm[123]\.(weight|bias)$/,
  /^transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)\.(weight|bias)$/,
];
const VAE_RESNET = /^(norm1|norm2|conv1|conv2|nin_shortcut)\.(weight|bias)$/;
const VAE_ATTN: Record<string, string> = {
  norm: "group_norm",
  q: "to_q",
  k: "to_k",
  v: "to_v",
  proj_out: "to_out.0",
};
const CLIP_LAYER =
  /^text_model\.encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])\.(weight|bias)$/;
const CLIP_OTHER =
  /^text_model\.(embeddings\.(token|position)_embedding\.weight|final_layer_norm\.(weight|bias))$/;
const OPENCLIP_SUB: Record<string, string> = {
  "ln_1": "layer_norm1",
  "ln_2": "layer_norm2",
  "mlp.c_fc": "mlp.fc1",
  "mlp.c_proj": "mlp.fc2",
  "attn.out_proj": "self_attn.out_proj",
};

function hasAttention(blockType: string | undefined): boolean {
  return blockType !== undefined && blockType.includes("Attn");
}

function squeezedShape(shape: readonly number[]): number[] {
  const out = shape.slice();
  while (out.length > 2 && out[out.length - 1] === 1) out.pop();
  return out;
}

/**
 * The target shape of a source tensor after a transform.
 *
 * @example
 * ```ts
 * import { transformedShape } from "@denoise/sd/weights";
 * transformedShape([96, 32], { split: 1, of: 3, axis: 0 }); // [32, 32]
 * transformedShape([64, 64, 1, 1], "squeeze_1x1"); // [64, 64]
 * ```
 */
export function transformedShape(shape: readonly number[], transform?: Transform): number[] {
  if (transform === undefined) return shape.slice();
  if (transform === "squeeze_1x1") {
    const out = squeezedShape(shape);
    if (out.length !== 2) {
      throw new Error(`cannot squeeze shape [${shape.join(", ")}] to a linear weight`);
    }
    return out;
  }
  if (shape.length === 0 || shape[0] % transform.of !== 0) {
    throw new Error(
      `cannot split shape [${shape.join(", ")}] into ${transform.of} equal parts along axis 0`,
    );
  }
  return [shape[0] / transform.of, ...shape.slice(1)];
}

/**
 * Applies a transform to a tensor's data without copying: a squeeze keeps the data, a split
 * returns a subarray. Works on raw bytes and on typed element arrays alike.
 *
 * @example
 * ```ts
 * import { applyTransform } from "@denoise/sd/weights";
 * const qkv = new Float32Array(6 * 2); // [6, 2] fused q/k/v
 * const { data, shape } = applyTransform(qkv, [6, 2], { split: 2, of: 3, axis: 0 });
 * console.log(shape, data.length); // [2, 2] 4
 * ```
 */
export function applyTransform<T extends Uint8Array | Float32Array>(
  data: T,
  shape: readonly number[],
  transform?: Transform,
): { data: T; shape: number[] } {
  const out = transformedShape(shape, transform);
  if (transform === undefined || transform === "squeeze_1x1") return { data, shape: out };
  const part = data.length / transform.of;
  return {
    data: data.subarray(transform.split * part, (transform.split + 1) * part) as T,
    shape: out,
  };
}

/** Tensor shapes by key (a `SafetensorsFile.tensors` map fits). */
export type Shapes = ReadonlyMap<string, { shape: readonly number[] }>;

class Mapper {
  entries: MappingEntry[] = [];
  ignored: IgnoredKey[] = [];
  unknown: string[] = [];
  constructor(private shapes: Shapes) {}

  add(component: Component, key: string, source: string, transform?: Transform): true {
    const shape = this.shapes.get(source)!.shape;
    this.entries.push({
      target: { component, key },
      source,
      ...(transform === undefined ? {} : { transform }),
      shape: transformedShape(shape, transform),
    });
    return true;
  }

  /** Adds a squeeze when the source weight is a 1×1 conv ([C, C, 1, 1] or [C, C, 1]). */
  addLinear(component: Component, key: string, source: string): true {
    const ndim = this.shapes.get(source)!.shape.length;
    return this.add(component, key, source, ndim > 2 ? "squeeze_1x1" : undefined);
  }

  ignore(key: string, reason: string): true {
    this.ignored.push({ key, reason });
    return true;
  }
}

function mapUnet(m: Mapper, source: string, cfg: UNetLayoutConfig): boolean {
  const k = source.slice(UNET.length);
  const lpb = cfg.layers_per_block;
  const nDown = cfg.down_block_types.length, nUp = cfg.up_block_types.length;
  let r: RegExpExecArray | null;
  const resnet = (prefix: string, rest: string) => {
    const x = UNET_RESNET.exec(rest);
    return x !== null && m.add("unet", `${prefix}.${RESNET_RENAMES[x[1]]}.${x[2]}`, source);
  };
  const attention = (prefix: string, rest: string) => {
    if (!UNET_ATTN.some((re) => re.test(rest))) return false;
    const key = `${prefix}.${rest}`;
    const isWeight = rest.endsWith(".weight");
    if (isWeight && /\.to_(q|k|v|out\.0)\.weight$/.test(rest)) {
      return m.addLinear("unet", key, source);
    }
    if (isWeight && /^proj_(in|out)\./.test(rest) && cfg.use_linear_projection) {
      return m.addLinear("unet", key, source);
    }
    return m.add("unet", key, source);
  };
  if ((r = /^time_embed\.([02])\.(weight|bias)$/.exec(k))) {
    return m.add("unet", `time_embedding.linear_${r[1] === "0" ? 1 : 2}.${r[2]}`, source);
  }
  if ((r = /^input_blocks\.0\.0\.(weight|bias)$/.exec(k))) {
    return m.add("unet", `conv_in.${r[1]}`, source);
  }
  if ((r = /^out\.([02])\.(weight|bias)$/.exec(k))) {
    return m.add("unet", `${r[1] === "0" ? "conv_norm_out" : "conv_out"}.${r[2]}`, source);
  }
  if ((r = /^input_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(k))) {
    const i = Number(r[1]), j = Number(r[2]), rest = r[3];
    const b = Math.floor((i - 1) / (lpb + 1)), l = (i - 1) % (lpb + 1);
    if (i < 1 || b >= nDown) return false;
    if (l === lpb) {
      const op = /^op\.(weight|bias)$/.exec(rest);
      return j === 0 && b < nDown - 1 && op !== null &&
        m.add("unet", `down_blocks.${b}.downsamplers.0.conv.${op[1]}`, source);
    }
    if (j === 0) return resnet(`down_blocks.${b}.resnets.${l}`, rest);
    return j === 1 && hasAttention(cfg.down_block_types[b]) &&
      attention(`down_blocks.${b}.attentions.${l}`, rest);
  }
  if ((r = /^middle_block\.([012])\.(.+)$/.exec(k))) {
    if (r[1] === "1") return attention("mid_block.attentions.0", r[2]);
    return resnet(`mid_block.resnets.${r[1] === "0" ? 0 : 1}`, r[2]);
  }
  if ((r = /^output_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(k))) {
    const i = Number(r[1]), j = Number(r[2]), rest = r[3];
    const b = Math.floor(i / (lpb + 1)), l = i % (lpb + 1);
    if (b >= nUp) return false;
    const attn = hasAttention(cfg.up_block_types[b]);
    if (j === 0) return resnet(`up_blocks.${b}.resnets.${l}`, rest);
    const conv = /^conv\.(weight|bias)$/.exec(rest);
    if (conv !== null && l === lpb && b < nUp - 1 && j === (attn ? 2 : 1)) {
      return m.add("unet", `up_blocks.${b}.upsamplers.0.conv.${conv[1]}`, source);
    }
    return j === 1 && attn && attention(`up_blocks.${b}.attentions.${l}`, rest);
  }
  return false;
}

function mapVae(m: Mapper, source: string, nLevels: number, prefix = VAE): boolean {
  const k = source.slice(prefix.length);
  let r: RegExpExecArray | null;
  const resnet = (prefix: string, rest: string) => {
    const x = VAE_RESNET.exec(rest);
    if (x === null) return false;
    const name = x[1] === "nin_shortcut" ? "conv_shortcut" : x[1];
    return m.add("vae", `${prefix}.${name}.${x[2]}`, source);
  };
  if (k.startsWith("loss.")) return m.ignore(source, "VAE training loss (discriminator) weights");
  if (/^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$/.test(k)) {
    return m.add("vae", k, source);
  }
  if (/^(quant_conv|post_quant_conv)\.(weight|bias)$/.test(k)) return m.add("vae", k, source);
  if ((r = /^(encoder|decoder)\.norm_out\.(weight|bias)$/.exec(k))) {
    return m.add("vae", `${r[1]}.conv_norm_out.${r[2]}`, source);
  }
  if ((r = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(k))) {
    return resnet(`encoder.down_blocks.${r[1]}.resnets.${r[2]}`, r[3]);
  }
  if ((r = /^encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)$/.exec(k))) {
    return m.add("vae", `encoder.down_blocks.${r[1]}.downsamplers.0.conv.${r[2]}`, source);
  }
  if ((r = /^decoder\.up\.(\d+)\.(block\.(\d+)\.(.+)|upsample\.conv\.(weight|bias))$/.exec(k))) {
    const i = nLevels - 1 - Number(r[1]);
    if (i < 0) return false;
    if (r[3] !== undefined) return resnet(`decoder.up_blocks.${i}.resnets.${r[3]}`, r[4]);
    return m.add("vae", `decoder.up_blocks.${i}.upsamplers.0.conv.${r[5]}`, source);
  }
  if ((r = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(k))) {
    return resnet(`${r[1]}.mid_block.resnets.${Number(r[2]) - 1}`, r[3]);
  }
  if ((r = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(k))) {
    const key = `${r[1]}.mid_block.attentions.0.${VAE_ATTN[r[2]]}.${r[3]}`;
    return r[2] !== "norm" && r[3] === "weight"
      ? m.addLinear("vae", key, source)
      : m.add("vae", key, source);
  }
  return false;
}

function mapClip(m: Mapper, source: string, layers: number): boolean {
  let k = source.slice(CLIP.length);
  if (/^(embeddings|encoder|final_layer_norm)\./.test(k)) k = `text_model.${k}`; // pre-4.x naming
  if (k === "text_model.embeddings.position_ids") {
    return m.ignore(source, "constant position-id buffer, recomputed by the text encoder");
  }
  const layer = CLIP_LAYER.exec(k);
  if (layer !== null && Number(layer[1]) >= layers) {
    return m.ignore(
      source,
      `text encoder layer ${layer[1]} is beyond num_hidden_layers = ${layers}`,
    );
  }
  return (layer !== null || CLIP_OTHER.test(k)) && m.add("text_encoder", k, source);
}

function mapOpenClip(m: Mapper, source: string, layers: number): boolean {
  const k = source.slice(OPENCLIP.length);
  let r: RegExpExecArray | null;
  if (k === "text_projection" || k === "logit_scale") {
    return m.ignore(source, "OpenCLIP projection/logit scale: CLIPTextModel does not use it");
  }
  if (k === "positional_embedding") {
    return m.add("text_encoder", "text_model.embeddings.position_embedding.weight", source);
  }
  if (k === "token_embedding.weight") {
    return m.add("text_encoder", "text_model.embeddings.token_embedding.weight", source);
  }
  if ((r = /^ln_final\.(weight|bias)$/.exec(k))) {
    return m.add("text_encoder", `text_model.final_layer_norm.${r[1]}`, source);
  }
  if ((r = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(k))) {
    const n = Number(r[1]), rest = r[2];
    const prefix = `text_model.encoder.layers.${n}`;
    const fused = /^attn\.in_proj_(weight|bias)$/.exec(rest);
    const sub = /^(ln_1|ln_2|mlp\.c_fc|mlp\.c_proj|attn\.out_proj)\.(weight|bias)$/.exec(rest);
    if (fused === null && sub === null) return false;
    if (n >= layers) {
      return m.ignore(
        source,
        `OpenCLIP block ${n} is beyond num_hidden_layers = ${layers} (SD 2.x stops at the ` +
          `penultimate block)`,
      );
    }
    if (sub !== null) {
      return m.add("text_encoder", `${prefix}.${OPENCLIP_SUB[sub[1]]}.${sub[2]}`, source);
    }
    ["q", "k", "v"].forEach((p, i) =>
      m.add("text_encoder", `${prefix}.self_attn.${p}_proj.${fused![1]}`, source, {
        split: i,
        of: 3,
        axis: 0,
      })
    );
    return true;
  }
  return false;
}

function countVaeLevels(shapes: Shapes): number {
  let n = 0;
  for (const key of shapes.keys()) {
    const r = /^first_stage_model\.decoder\.up\.(\d+)\./.exec(key);
    if (r !== null) n = Math.max(n, Number(r[1]) + 1);
  }
  return n;
}

/**
 * Maps a single-file (CompVis/LDM layout) checkpoint's keys to diffusers keys. `tensors` gives
 * each key's shape (a `SafetensorsFile.tensors` map works as is). Known extras are listed in
 * `ignored`; keys no rule matches are listed in `unknown`.
 *
 * @example
 * ```ts no-run
 * import { openSafetensors } from "@denoise/sd/weights";
 * import { mapSingleFileKeys } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * const f = await openSafetensors("v1-5-pruned-emaonly.safetensors");
 * const { entries, unknown } = mapSingleFileKeys(f.tensors, {
 *   unet: SD15.unet,
 *   vae: SD15.vae,
 *   textEncoder: SD15.text_encoder,
 * });
 * console.log(entries.length, unknown);
 * ```
 */
export function mapSingleFileKeys(
  tensors: Shapes,
  options: KeyMappingOptions,
): KeyMapping {
  const m = new Mapper(tensors);
  const layers = options.textEncoder?.num_hidden_layers ?? Infinity;
  const vaeLevels = options.vae?.block_out_channels.length ?? countVaeLevels(tensors);
  for (const key of tensors.keys()) {
    let mapped: boolean;
    if (key.startsWith("model_ema.")) {
      mapped = m.ignore(key, "EMA copy of the U-Net weights (diffusers loads the non-EMA ones)");
    } else if (SCHEDULE_BUFFER.test(key)) {
      mapped = m.ignore(key, "training noise-schedule buffer, recomputed by the scheduler");
    } else if (key === "v_pred" || key === "ztsnr") {
      mapped = m.ignore(key, "marker key: a hint about the prediction type / noise schedule");
    } else if (key.startsWith(UNET)) {
      mapped = mapUnet(m, key, options.unet);
    } else if (key.startsWith(VAE)) {
      mapped = mapVae(m, key, vaeLevels);
    } else if (key.startsWith(CLIP)) {
      mapped = mapClip(m, key, layers);
    } else if (key.startsWith(OPENCLIP)) {
      mapped = mapOpenClip(m, key, layers);
    } else {
      mapped = false;
    }
    if (!mapped) m.unknown.push(key);
  }
  return { entries: m.entries, ignored: m.ignored, unknown: m.unknown };
}

const RESNET_LDM: Record<string, string> = Object.fromEntries(
  Object.entries(RESNET_RENAMES).map(([ldm, diffusers]) => [diffusers, ldm]),
);

/**
 * The LDM (CompVis `openaimodel.UNetModel`) path of a diffusers U-Net module path, the inverse of
 * the single-file rules above: `down_blocks.0.attentions.1.proj_in` → `input_blocks.2.1.proj_in`,
 * `up_blocks.1.resnets.0.conv1` → `output_blocks.3.0.in_layers.2`. `undefined` for a path the
 * layout has no counterpart for.
 *
 * @example
 * ```ts
 * import { ldmUnetModule } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * ldmUnetModule("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", SD15.unet);
 * // "middle_block.1.transformer_blocks.0.attn2.to_k"
 * ```
 */
export function ldmUnetModule(module: string, cfg: UNetLayoutConfig): string | undefined {
  const lpb = cfg.layers_per_block;
  const resnet = (at: string, rest: string | undefined) => {
    if (rest === undefined) return at;
    const [head, ...tail] = rest.split(".");
    const renamed = RESNET_LDM[head];
    return renamed === undefined ? undefined : [at, renamed, ...tail].join(".");
  };
  const sub = (rest: string | undefined) => rest === undefined ? "" : `.${rest}`;
  let r: RegExpExecArray | null;
  if ((r = /^time_embedding\.linear_([12])$/.exec(module))) {
    return `time_embed.${r[1] === "1" ? 0 : 2}`;
  }
  const fixed: Record<string, string> = {
    conv_in: "input_blocks.0.0",
    conv_norm_out: "out.0",
    conv_out: "out.2",
  };
  if (fixed[module] !== undefined) return fixed[module];
  if ((r = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.+))?$/.exec(module))) {
    const i = 1 + Number(r[1]) * (lpb + 1) + Number(r[3]);
    return r[2] === "resnets"
      ? resnet(`input_blocks.${i}.0`, r[4])
      : `input_blocks.${i}.1${sub(r[4])}`;
  }
  if ((r = /^down_blocks\.(\d+)\.downsamplers\.0\.conv$/.exec(module))) {
    return `input_blocks.${1 + Number(r[1]) * (lpb + 1) + lpb}.0.op`;
  }
  if ((r = /^mid_block\.(resnets|attentions)\.(\d)(?:\.(.+))?$/.exec(module))) {
    if (r[1] === "attentions") return r[2] === "0" ? `middle_block.1${sub(r[3])}` : undefined;
    return resnet(`middle_block.${r[2] === "0" ? 0 : 2}`, r[3]);
  }
  if ((r = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.+))?$/.exec(module))) {
    const i = Number(r[1]) * (lpb + 1) + Number(r[3]);
    return r[2] === "resnets"
      ? resnet(`output_blocks.${i}.0`, r[4])
      : `output_blocks.${i}.1${sub(r[4])}`;
  }
  if ((r = /^up_blocks\.(\d+)\.upsamplers\.0\.conv$/.exec(module))) {
    const b = Number(r[1]);
    return `output_blocks.${b * (lpb + 1) + lpb}.${
      hasAttention(cfg.up_block_types[b]) ? 2 : 1
    }.conv`;
  }
  return undefined;
}

const VAE_LDM_KEY =
  /^(encoder\.down\.\d+\.|decoder\.up\.\d+\.|(encoder|decoder)\.mid\.(block_|attn_))/;
const VAE_DIFFUSERS_KEY =
  /^(encoder|decoder)\.(conv_in|conv_out|conv_norm_out|down_blocks|up_blocks|mid_block)\.|^(quant_conv|post_quant_conv)\./;
/** diffusers < 0.14 VAE attention names. */
const VAE_OLD_ATTENTION: Record<string, string> = {
  query: "to_q",
  key: "to_k",
  value: "to_v",
  proj_attn: "to_out.0",
};

/**
 * Maps the keys of a stand-alone VAE file to diffusers `AutoencoderKL` keys, whichever layout it
 * uses: LDM keys with or without the `first_stage_model.` prefix (the ft-MSE/EMA VAEs A1111 users
 * download), or diffusers keys (a `diffusion_pytorch_model.safetensors`, also with the pre-0.14
 * attention names `query`/`key`/`value`/`proj_attn`). EMA counters and the training loss are
 * ignored; anything else that matches no rule is listed in `unknown`.
 *
 * @example
 * ```ts no-run
 * import { openSafetensors } from "@denoise/sd/weights";
 * import { mapVaeFileKeys } from "@denoise/sd/weights";
 * const f = await openSafetensors("vae-ft-mse-840000-ema-pruned.safetensors");
 * const { entries, unknown } = mapVaeFileKeys(f.tensors, { levels: 4 });
 * console.log(entries.length, unknown); // 248 []
 * ```
 */
export function mapVaeFileKeys(tensors: Shapes, options: { levels: number }): KeyMapping {
  const m = new Mapper(tensors);
  const ldm = [...tensors.keys()].some((k) =>
    VAE_LDM_KEY.test(k.replace(/^first_stage_model\./, ""))
  );
  for (const key of tensors.keys()) {
    let mapped: boolean;
    const bare = key.replace(/^first_stage_model\./, "");
    if (bare === "model_ema.decay" || bare === "model_ema.num_updates") {
      mapped = m.ignore(key, "EMA bookkeeping counter, not a weight");
    } else if (ldm) {
      mapped = mapVae(m, key, options.levels, key.length - bare.length === 0 ? "" : VAE);
    } else if (VAE_DIFFUSERS_KEY.test(key)) {
      const r = /^(.+\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/.exec(key);
      const target = r ? `${r[1]}.${VAE_OLD_ATTENTION[r[2]]}.${r[3]}` : key;
      mapped = /\.attentions\.\d+\.to_(q|k|v|out\.0)\.weight$/.test(target)
        ? m.addLinear("vae", target, key)
        : m.add("vae", target, key);
    } else {
      mapped = bare.startsWith("loss.") &&
        m.ignore(key, "VAE training loss (discriminator) weights");
    }
    if (!mapped) m.unknown.push(key);
  }
  return { entries: m.entries, ignored: m.ignored, unknown: m.unknown };
}

/** Which factor of a LoRA module a key holds. */
export type LoraPart = "down" | "up" | "alpha";

/** A LoRA file key split into the module name the file uses and the part. */
export interface LoraKey {
  /** The module as the file names it: `lora_unet_down_blocks_0_…_to_q`, `unet.down_blocks.0.….to_q`. */
  module: string;
  /** `down` (kohya `lora_down`, PEFT `lora_A`), `up` (`lora_up`, `lora_B`) or the `alpha` scalar. */
  part: LoraPart;
}

const LORA_PARTS: [RegExp, LoraPart][] = [
  [/^(.+)\.lora_down\.weight$/, "down"], // kohya / A1111 / LoCon
  [/^(.+)\.lora_up\.weight$/, "up"],
  [/^(.+)\.alpha$/, "alpha"],
  [/^(.+)\.lora_A(?:\.[A-Za-z_]\w*)?\.weight$/, "down"], // PEFT (optionally with an adapter name)
  [/^(.+)\.lora_B(?:\.[A-Za-z_]\w*)?\.weight$/, "up"],
  [/^(.+)\.(?:lora|lora_linear_layer)\.down\.weight$/, "down"], // diffusers LoRACompatible layers
  [/^(.+)\.(?:lora|lora_linear_layer)\.up\.weight$/, "up"],
];
/** diffusers ≤ 0.20 attention processors: `attn1.processor.to_q_lora.down.weight`. */
const LORA_PROCESSOR = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;
/** Network types other than LoRA/LoCon that share the files, by a key that only they have. */
const LORA_OTHER: [RegExp, string][] = [
  [/\.hada_[wt][12](_[ab])?$/, "LyCORIS LoHa (hada_*)"],
  [/\.lokr_[wt][12](_[ab])?$/, "LyCORIS LoKr (lokr_*)"],
  [/\.lora_mid\.weight$/, "LyCORIS LoCon with CP decomposition (lora_mid)"],
  [/\.dora_scale$/, "DoRA (dora_scale)"],
  [/\.(diff|diff_b)$/, "LyCORIS full difference (diff)"],
  [/\.(w_norm|b_norm)$/, "LyCORIS norm layers (w_norm/b_norm)"],
  [/\.(oft_blocks|oft_diag|oft_R)$/, "OFT/BOFT"],
  [/\.on_input$/, "(IA)³"],
];

/**
 * Splits a LoRA file key into its module name and part (`down`, `up`, `alpha`), for every format
 * the module names in {@link loraModuleAliases} cover. Returns `{ other }` naming the network type
 * for keys of other LyCORIS algorithms (LoHa, LoKr, DoRA, …), and `undefined` for anything else.
 *
 * @example
 * ```ts
 * import { parseLoraKey } from "@denoise/sd/weights";
 * parseLoraKey("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight");
 * // { module: "lora_unet_mid_block_attentions_0_proj_in", part: "down" }
 * parseLoraKey("unet.mid_block.attentions.0.proj_in.lora_B.weight");
 * // { module: "unet.mid_block.attentions.0.proj_in", part: "up" }
 * ```
 */
export function parseLoraKey(key: string): LoraKey | { other: string } | undefined {
  const p = LORA_PROCESSOR.exec(key);
  if (p !== null) {
    const proj = p[2] === "to_out" ? "to_out.0" : p[2];
    return { module: `${p[1]}.${proj}`, part: p[3] === "down" ? "down" : "up" };
  }
  for (const [re, part] of LORA_PARTS) {
    const r = re.exec(key);
    if (r !== null) return { module: r[1], part };
  }
  for (const [re, other] of LORA_OTHER) if (re.test(key)) return { other };
  return undefined;
}

/**
 * Every name a LoRA file may give the model module `module` (a diffusers parameter path without
 * `.weight`) of `component`: kohya/A1111 (`lora_unet_` + the diffusers path or, with `unet`, the
 * LDM path, dots as underscores; `lora_te_` for the text encoder) and diffusers/PEFT (`unet.` /
 * `text_encoder.` prefixed, bare, or under PEFT's `base_model.model.`).
 *
 * @example
 * ```ts
 * import { loraModuleAliases } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * loraModuleAliases("unet", "down_blocks.0.attentions.0.proj_in", SD15.unet);
 * // ["lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_input_blocks_1_1_proj_in",
 * //  "unet.down_blocks.0.attentions.0.proj_in", "down_blocks.0.attentions.0.proj_in",
 * //  "base_model.model.down_blocks.0.attentions.0.proj_in"]
 * ```
 */
export function loraModuleAliases(
  component: "unet" | "text_encoder",
  module: string,
  unet?: UNetLayoutConfig,
): string[] {
  const flat = (path: string) => path.replaceAll(".", "_");
  if (component === "text_encoder") {
    return [`lora_te_${flat(module)}`, `text_encoder.${module}`, module];
  }
  const ldm = unet && ldmUnetModule(module, unet);
  return [
    `lora_unet_${flat(module)}`,
    ...(ldm === undefined ? [] : [`lora_unet_${flat(ldm)}`]),
    `unet.${module}`,
    module,
    `base_model.model.${module}`,
  ];
}
