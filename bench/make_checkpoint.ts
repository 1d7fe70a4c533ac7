/**
 * Synthetic full-size Stable Diffusion single-file checkpoints in the original CompVis/LDM layout
 * (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`, the noise-schedule
 * buffers and `model_ema.*` scalars), for testing key mapping and measuring loading at real scale
 * without downloading a model. The key names and shapes follow the CompVis `ldm` modules
 * (`openaimodel.UNetModel`, `diffusionmodules.model.Encoder/Decoder`, `FrozenCLIPEmbedder`,
 * `FrozenOpenCLIPEmbedder`), written independently of `src/weights/names.ts`. Values are
 * deterministic: weights N(0, 0.02), norm weights 1, norm biases 0, the real scaled-linear schedule.
 * The file is written tensor by tensor in chunks, never held in memory.
 *
 * ```sh
 * deno run -A bench/make_checkpoint.ts --out /tmp/sd15.safetensors --dtype f32   # ≈ 4.3 GB
 * deno run -A bench/make_checkpoint.ts --out /tmp/sd15-f16.safetensors --dtype f16
 * deno run -A bench/make_checkpoint.ts --out /tmp/sd21.safetensors --family sd21
 * ```
 *
 * @module
 */

/** The checkpoint families this generator writes. */
export type LdmFamily = "sd15" | "sd21";

/** How a tensor's values are generated. */
export type LdmInit =
  | "normal"
  | "one"
  | "zero"
  | "position_ids"
  | "ema_decay"
  | "ema_updates"
  | `schedule:${string}`;

/** One tensor of an LDM checkpoint. */
export interface LdmTensor {
  /** The key, e.g. `model.diffusion_model.input_blocks.0.0.weight`. */
  name: string;
  /** Shape, outermost axis first. */
  shape: number[];
  /** Element type in the file. */
  dtype: "F32" | "F16" | "I64" | "I32";
  /** How its values are generated. */
  init: LdmInit;
}

/** The schedule buffers `ldm.models.diffusion.ddpm.DDPM.register_schedule` stores. */
const SCHEDULE_KEYS = [
  "betas",
  "alphas_cumprod",
  "alphas_cumprod_prev",
  "sqrt_alphas_cumprod",
  "sqrt_one_minus_alphas_cumprod",
  "log_one_minus_alphas_cumprod",
  "sqrt_recip_alphas_cumprod",
  "sqrt_recipm1_alphas_cumprod",
  "posterior_variance",
  "posterior_log_variance_clipped",
  "posterior_mean_coef1",
  "posterior_mean_coef2",
];

type Add = (name: string, shape: number[], init?: LdmInit) => void;

function linear(add: Add, p: string, out: number, inp: number, bias = true): void {
  add(`${p}.weight`, [out, inp]);
  if (bias) add(`${p}.bias`, [out]);
}

function conv(add: Add, p: string, out: number, inp: number, k: number): void {
  add(`${p}.weight`, [out, inp, k, k]);
  add(`${p}.bias`, [out]);
}

function norm(add: Add, p: string, c: number): void {
  add(`${p}.weight`, [c], "one");
  add(`${p}.bias`, [c], "zero");
}

/** `openaimodel.ResBlock`: GroupNorm, SiLU, conv | time Linear | GroupNorm, SiLU, dropout, conv. */
function resBlock(add: Add, p: string, inp: number, out: number): void {
  norm(add, `${p}.in_layers.0`, inp);
  conv(add, `${p}.in_layers.2`, out, inp, 3);
  linear(add, `${p}.emb_layers.1`, out, 1280);
  norm(add, `${p}.out_layers.0`, out);
  conv(add, `${p}.out_layers.3`, out, out, 3);
  if (inp !== out) conv(add, `${p}.skip_connection`, out, inp, 1);
}

/** `attention.SpatialTransformer` with one `BasicTransformerBlock` (GEGLU feed-forward). */
function spatialTransformer(add: Add, p: string, c: number, context: number, lin: boolean): void {
  norm(add, `${p}.norm`, c);
  if (lin) linear(add, `${p}.proj_in`, c, c);
  else conv(add, `${p}.proj_in`, c, c, 1);
  const b = `${p}.transformer_blocks.0`;
  for (const [attn, kv] of [["attn1", c], ["attn2", context]] as const) {
    linear(add, `${b}.${attn}.to_q`, c, c, false);
    linear(add, `${b}.${attn}.to_k`, c, kv, false);
    linear(add, `${b}.${attn}.to_v`, c, kv, false);
    linear(add, `${b}.${attn}.to_out.0`, c, c);
  }
  linear(add, `${b}.ff.net.0.proj`, 8 * c, c); // GEGLU: value and gate, 4c each
  linear(add, `${b}.ff.net.2`, c, 4 * c);
  for (const n of ["norm1", "norm2", "norm3"]) norm(add, `${b}.${n}`, c);
  if (lin) linear(add, `${p}.proj_out`, c, c);
  else conv(add, `${p}.proj_out`, c, c, 1);
}

/** `openaimodel.UNetModel` of SD 1.x / 2.x: 320 channels × (1, 2, 4, 4), 2 res blocks per level. */
function unetModel(add: Add, context: number, lin: boolean): void {
  const p = "model.diffusion_model";
  const mult = [1, 2, 4, 4];
  const attnAt = [true, true, true, false]; // attention_resolutions 4, 2, 1
  linear(add, `${p}.time_embed.0`, 1280, 320);
  linear(add, `${p}.time_embed.2`, 1280, 1280);
  conv(add, `${p}.input_blocks.0.0`, 320, 4, 3);
  const skips = [320];
  let ch = 320;
  let block = 1;
  for (let level = 0; level < 4; level++) {
    for (let i = 0; i < 2; i++) {
      const out = 320 * mult[level];
      resBlock(add, `${p}.input_blocks.${block}.0`, ch, out);
      ch = out;
      if (attnAt[level]) spatialTransformer(add, `${p}.input_blocks.${block}.1`, ch, context, lin);
      skips.push(ch);
      block++;
    }
    if (level < 3) {
      conv(add, `${p}.input_blocks.${block}.0.op`, ch, ch, 3); // Downsample (stride-2 conv)
      skips.push(ch);
      block++;
    }
  }
  resBlock(add, `${p}.middle_block.0`, ch, ch);
  spatialTransformer(add, `${p}.middle_block.1`, ch, context, lin);
  resBlock(add, `${p}.middle_block.2`, ch, ch);
  block = 0;
  for (let level = 3; level >= 0; level--) {
    for (let i = 0; i < 3; i++) {
      const out = 320 * mult[level];
      resBlock(add, `${p}.output_blocks.${block}.0`, ch + skips.pop()!, out);
      ch = out;
      let sub = 1;
      if (attnAt[level]) {
        spatialTransformer(add, `${p}.output_blocks.${block}.${sub++}`, ch, context, lin);
      }
      if (level > 0 && i === 2) conv(add, `${p}.output_blocks.${block}.${sub}.conv`, ch, ch, 3);
      block++;
    }
  }
  norm(add, `${p}.out.0`, 320);
  conv(add, `${p}.out.2`, 4, 320, 3);
}

/** `diffusionmodules.model.ResnetBlock` (no time embedding in the VAE). */
function vaeResnet(add: Add, p: string, inp: number, out: number): void {
  norm(add, `${p}.norm1`, inp);
  conv(add, `${p}.conv1`, out, inp, 3);
  norm(add, `${p}.norm2`, out);
  conv(add, `${p}.conv2`, out, out, 3);
  if (inp !== out) conv(add, `${p}.nin_shortcut`, out, inp, 1);
}

/** `diffusionmodules.model.AttnBlock`: q, k, v and proj_out are 1×1 convs. */
function vaeAttn(add: Add, p: string, c: number): void {
  norm(add, `${p}.norm`, c);
  for (const n of ["q", "k", "v", "proj_out"]) conv(add, `${p}.${n}`, c, c, 1);
}

function vaeMid(add: Add, p: string, c: number): void {
  vaeResnet(add, `${p}.mid.block_1`, c, c);
  vaeAttn(add, `${p}.mid.attn_1`, c);
  vaeResnet(add, `${p}.mid.block_2`, c, c);
}

/** `AutoencoderKL` (ddconfig: ch 128, ch_mult 1, 2, 4, 4, 2 res blocks, z 4, double_z). */
function autoencoderKL(add: Add): void {
  const p = "first_stage_model";
  const chans = [128, 256, 512, 512];
  conv(add, `${p}.encoder.conv_in`, 128, 3, 3);
  let ch = 128;
  for (let level = 0; level < 4; level++) {
    for (let i = 0; i < 2; i++) {
      vaeResnet(add, `${p}.encoder.down.${level}.block.${i}`, ch, chans[level]);
      ch = chans[level];
    }
    if (level < 3) conv(add, `${p}.encoder.down.${level}.downsample.conv`, ch, ch, 3);
  }
  vaeMid(add, `${p}.encoder`, ch);
  norm(add, `${p}.encoder.norm_out`, ch);
  conv(add, `${p}.encoder.conv_out`, 8, ch, 3);
  conv(add, `${p}.decoder.conv_in`, 512, 4, 3);
  vaeMid(add, `${p}.decoder`, 512);
  ch = 512;
  for (let level = 3; level >= 0; level--) {
    for (let i = 0; i < 3; i++) {
      vaeResnet(add, `${p}.decoder.up.${level}.block.${i}`, ch, chans[level]);
      ch = chans[level];
    }
    if (level > 0) conv(add, `${p}.decoder.up.${level}.upsample.conv`, ch, ch, 3);
  }
  norm(add, `${p}.decoder.norm_out`, 128);
  conv(add, `${p}.decoder.conv_out`, 3, 128, 3);
  conv(add, `${p}.quant_conv`, 8, 8, 1);
  conv(add, `${p}.post_quant_conv`, 4, 4, 1);
}

/** `FrozenCLIPEmbedder`: transformers' CLIPTextModel (ViT-L/14), 12 layers of width 768. */
function clipText(add: Add): void {
  const p = "cond_stage_model.transformer.text_model";
  add(`${p}.embeddings.token_embedding.weight`, [49408, 768]);
  add(`${p}.embeddings.position_embedding.weight`, [77, 768]);
  add(`${p}.embeddings.position_ids`, [1, 77], "position_ids");
  for (let i = 0; i < 12; i++) {
    const l = `${p}.encoder.layers.${i}`;
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      linear(add, `${l}.self_attn.${n}`, 768, 768);
    }
    norm(add, `${l}.layer_norm1`, 768);
    linear(add, `${l}.mlp.fc1`, 3072, 768);
    linear(add, `${l}.mlp.fc2`, 768, 3072);
    norm(add, `${l}.layer_norm2`, 768);
  }
  norm(add, `${p}.final_layer_norm`, 768);
}

/** `FrozenOpenCLIPEmbedder`: open_clip ViT-H/14's text tower (24 blocks of width 1024). */
function openClipText(add: Add): void {
  const p = "cond_stage_model.model";
  add(`${p}.token_embedding.weight`, [49408, 1024]);
  add(`${p}.positional_embedding`, [77, 1024]);
  for (let i = 0; i < 24; i++) {
    const b = `${p}.transformer.resblocks.${i}`;
    norm(add, `${b}.ln_1`, 1024);
    add(`${b}.attn.in_proj_weight`, [3072, 1024]); // q, k, v stacked
    add(`${b}.attn.in_proj_bias`, [3072]);
    linear(add, `${b}.attn.out_proj`, 1024, 1024);
    norm(add, `${b}.ln_2`, 1024);
    linear(add, `${b}.mlp.c_fc`, 4096, 1024);
    linear(add, `${b}.mlp.c_proj`, 1024, 4096);
  }
  norm(add, `${p}.ln_final`, 1024);
  add(`${p}.text_projection`, [1024, 1024]);
  add(`${p}.logit_scale`, [], "one");
}

/**
 * Every tensor of a full-size SD 1.5 (`sd15`) or SD 2.1 (`sd21`) single-file checkpoint in the
 * CompVis/LDM layout, sorted by key as safetensors writes them. Floating-point tensors get
 * `dtype`; `position_ids` is I64 and `model_ema.num_updates` I32, as in the released files.
 *
 * @example
 * ```ts
 * import { ldmTensors } from "./make_checkpoint.ts";
 * const keys = ldmTensors("sd15");
 * console.log(keys.length); // 1145
 * ```
 */
export function ldmTensors(
  family: LdmFamily,
  options: { dtype?: "F32" | "F16" } = {},
): LdmTensor[] {
  const dtype = options.dtype ?? "F32";
  const out: LdmTensor[] = [];
  const add: Add = (name, shape, init = "normal") => {
    const type = init === "position_ids" ? "I64" : init === "ema_updates" ? "I32" : dtype;
    out.push({ name, shape, dtype: type, init });
  };
  unetModel(add, family === "sd15" ? 768 : 1024, family === "sd21");
  autoencoderKL(add);
  if (family === "sd15") clipText(add);
  else openClipText(add);
  for (const k of SCHEDULE_KEYS) add(k, [1000], `schedule:${k}`);
  add("model_ema.decay", [], "ema_decay");
  add("model_ema.num_updates", [], "ema_updates");
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The scaled-linear DDPM schedule of SD (β from 0.00085 to 0.012, 1000 steps), as ldm stores it. */
function schedule(key: string): Float64Array {
  const n = 1000;
  const betas = new Float64Array(n);
  const lo = Math.sqrt(0.00085), hi = Math.sqrt(0.012);
  for (let i = 0; i < n; i++) betas[i] = (lo + ((hi - lo) * i) / (n - 1)) ** 2;
  const acp = new Float64Array(n);
  let prod = 1;
  for (let i = 0; i < n; i++) acp[i] = prod *= 1 - betas[i];
  const prev = (i: number) => (i === 0 ? 1 : acp[i - 1]);
  const fns: Record<string, (i: number) => number> = {
    betas: (i) => betas[i],
    alphas_cumprod: (i) => acp[i],
    alphas_cumprod_prev: prev,
    sqrt_alphas_cumprod: (i) => Math.sqrt(acp[i]),
    sqrt_one_minus_alphas_cumprod: (i) => Math.sqrt(1 - acp[i]),
    log_one_minus_alphas_cumprod: (i) => Math.log(1 - acp[i]),
    sqrt_recip_alphas_cumprod: (i) => Math.sqrt(1 / acp[i]),
    sqrt_recipm1_alphas_cumprod: (i) => Math.sqrt(1 / acp[i] - 1),
    posterior_variance: (i) => (betas[i] * (1 - prev(i))) / (1 - acp[i]),
    posterior_log_variance_clipped: (i) =>
      Math.log(Math.max((betas[i] * (1 - prev(i))) / (1 - acp[i]), 1e-20)),
    posterior_mean_coef1: (i) => (betas[i] * Math.sqrt(prev(i))) / (1 - acp[i]),
    posterior_mean_coef2: (i) => ((1 - prev(i)) * Math.sqrt(1 - betas[i])) / (1 - acp[i]),
  };
  return Float64Array.from({ length: n }, (_, i) => fns[key](i));
}

/** FNV-1a of a key mixed with the seed: each tensor has its own stream, whatever the order. */
function hashKey(key: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Fills `out` with N(0, std²) values from a mulberry32 stream (Box–Muller); returns the state. */
function fillNormal(out: Float32Array, state: number, std: number): number {
  let s = state;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = 0; i < out.length; i += 2) {
    const r = std * Math.sqrt(-2 * Math.log(1 - next()));
    const a = 2 * Math.PI * next();
    out[i] = r * Math.cos(a);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(a);
  }
  return s;
}

const BYTES = { F32: 4, F16: 2, I64: 8, I32: 4 } as const;
const CHUNK = 1 << 20; // elements generated per write

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Encodes `values` (one chunk of a tensor) in `dtype`. */
function encode(values: Float32Array, dtype: LdmTensor["dtype"]): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (dtype === "F16") return new Uint8Array(Float16Array.from(values).buffer);
  if (dtype === "I32") return new Uint8Array(Int32Array.from(values).buffer);
  return new Uint8Array(BigInt64Array.from(values, (v) => BigInt(v)).buffer);
}

/** Yields a tensor's bytes chunk by chunk. */
function* tensorChunks(t: LdmTensor, seed: number): Generator<Uint8Array> {
  const n = numel(t.shape);
  if (t.init === "normal") {
    let state = hashKey(t.name, seed);
    for (let done = 0; done < n; done += CHUNK) {
      const part = new Float32Array(Math.min(CHUNK, n - done));
      state = fillNormal(part, state, 0.02);
      yield encode(part, t.dtype);
    }
    return;
  }
  let values: Float32Array;
  if (t.init === "one") values = new Float32Array(n).fill(1);
  else if (t.init === "zero") values = new Float32Array(n);
  else if (t.init === "position_ids") values = Float32Array.from({ length: n }, (_, i) => i);
  else if (t.init === "ema_decay") values = new Float32Array([0.9999]);
  else if (t.init === "ema_updates") values = new Float32Array([1]);
  else values = Float32Array.from(schedule(t.init.slice("schedule:".length)));
  yield encode(values, t.dtype);
}

/** What {@link writeLdmCheckpoint} wrote. */
export interface WrittenCheckpoint {
  /** File size in bytes. */
  bytes: number;
  /** Number of tensors. */
  tensors: number;
  /** Number of floating-point parameters. */
  parameters: number;
}

/**
 * Writes a synthetic full-size LDM-layout checkpoint to `path`, streaming: the header first, then
 * each tensor in chunks of 2²⁰ values, so memory stays at a few MB whatever the file size.
 *
 * @example
 * ```ts
 * import { writeLdmCheckpoint } from "./make_checkpoint.ts";
 * const info = await writeLdmCheckpoint("/tmp/sd15-f16.safetensors", { dtype: "F16" });
 * console.log(info.bytes); // ≈ 2.13 GB
 * ```
 */
export async function writeLdmCheckpoint(
  path: string,
  options: {
    family?: LdmFamily;
    dtype?: "F32" | "F16";
    seed?: number;
    /** Writes only the tensors whose key passes (a partial file, for tests). */
    select?: (name: string) => boolean;
  } = {},
): Promise<WrittenCheckpoint> {
  const select = options.select ?? (() => true);
  const tensors = ldmTensors(options.family ?? "sd15", { dtype: options.dtype })
    .filter((t) => select(t.name));
  const seed = options.seed ?? 0;
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  let parameters = 0;
  for (const t of tensors) {
    const size = numel(t.shape) * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
    if (t.dtype === "F32" || t.dtype === "F16") parameters += numel(t.shape);
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8; // safetensors pads the header with spaces
  json = Uint8Array.from({ length: padded }, (_, i) => (i < json.byteLength ? json[i] : 0x20));
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
    await writeAll(file, prefix);
    await writeAll(file, json);
    for (const t of tensors) for (const chunk of tensorChunks(t, seed)) await writeAll(file, chunk);
  } finally {
    file.close();
  }
  return { bytes: 8 + padded + offset, tensors: tensors.length, parameters };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += await file.write(bytes.subarray(done));
}

function parseArgs(
  args: string[],
): { out: string; family: LdmFamily; dtype: "F32" | "F16"; seed: number } {
  const get = (name: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const out = get("out");
  const family = get("family") ?? "sd15";
  const dtype = (get("dtype") ?? "f32").toUpperCase();
  const seed = Number(get("seed") ?? 0);
  if (out === undefined) {
    throw new Error("--out is required: the .safetensors path to write (outside the repository)");
  }
  if (family !== "sd15" && family !== "sd21") {
    throw new Error(`--family must be sd15 or sd21, got ${family}`);
  }
  if (dtype !== "F32" && dtype !== "F16") {
    throw new Error(`--dtype must be f32 or f16, got ${dtype}`);
  }
  if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${get("seed")}`);
  return { out, family, dtype, seed };
}

if (import.meta.main) {
  const { out, family, dtype, seed } = parseArgs(Deno.args);
  const t0 = performance.now();
  const info = await writeLdmCheckpoint(out, { family, dtype, seed });
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `${out}: ${family} ${dtype}, ${info.tensors} tensors, ${info.parameters} parameters, ` +
      `${info.bytes} bytes, written in ${s} s`,
  );
}
