/**
 * Self-made add-on files for the tiny models, in every format people download: LoRAs (kohya with
 * diffusers or LDM module names, LoCon convs, diffusers/PEFT `lora_A`/`lora_B`, old diffusers
 * attention processors), textual-inversion embeddings (A1111 `emb_params`, diffusers `<token>`)
 * and stand-alone VAEs (diffusers or LDM keys, with or without `first_stage_model.`). Values are
 * seeded; each generator also returns what it wrote (after rounding to the file's dtype), so tests
 * can check against a float64 reference. LDM names come from diffusers' own single-file conversion
 * (the shared tiny single file), not from our mapping.
 *
 * @module
 */
import { openModelSource } from "../../src/weights/source.ts";
import type { ModelConfigs } from "../../src/weights/source.ts";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import { seededRandom } from "../util.ts";
import { bytesOf, encodeSafetensors, type RawTensor, singleFile } from "../weights/fixtures.ts";

/** The LoRA file formats. */
export type LoraFormat = "kohya" | "kohya_ldm" | "peft" | "diffusers_old";

/** Which layers a generated LoRA adapts. */
export type LoraLayers = "attention" | "locon";

/** One written LoRA module, with the values as stored. */
export interface WrittenModule {
  /** The adapted component. */
  component: "unet" | "text_encoder";
  /** The weight key it adapts. */
  key: string;
  /** `[rank, in(, k, k)]`. */
  down: { shape: number[]; data: Float32Array };
  /** `[out, rank(, 1, 1)]`. */
  up: { shape: number[]; data: Float32Array };
  /** The stored alpha, if any. */
  alpha?: number;
  /** The rank. */
  rank: number;
}

/** Shapes of a tiny model's weights by component, read from its folder's headers. */
export async function modelShapes(
  dir: string,
): Promise<{ unet: Map<string, number[]>; text_encoder: Map<string, number[]> }> {
  const read = async (path: string) => {
    const f = await openSafetensors(path);
    f.close();
    return new Map([...f.tensors].map(([k, t]) => [k, t.shape]));
  };
  return {
    unet: await read(`${dir}/unet/diffusion_pytorch_model.safetensors`),
    text_encoder: await read(`${dir}/text_encoder/model.safetensors`),
  };
}

/**
 * The LDM names of a tiny model's U-Net weights, from the shared single file that diffusers'
 * conversion wrote (diffusers key → LDM key without `model.diffusion_model.`); undefined (after
 * printing why) when the shared file is absent outside CI.
 */
export async function ldmNames(
  model: string,
  configs: ModelConfigs,
): Promise<Map<string, string> | undefined> {
  const path = singleFile(model);
  if (path === undefined) return undefined;
  const src = await openModelSource(path, { configs });
  if (src.kind === "single_file") src.file.close();
  const out = new Map<string, string>();
  if (src.kind !== "single_file") return out;
  for (const e of src.mapping.entries) {
    if (e.target.component !== "unet") continue;
    out.set(e.target.key, e.source.slice("model.diffusion_model.".length));
  }
  return out;
}

const ATTENTION =
  /attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))\.weight$/;
const TEXT = /self_attn\.(q|k|v|out)_proj\.weight$|mlp\.fc[12]\.weight$/;
const PROCESSOR = /attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/;

function pick(key: string, shape: number[], format: LoraFormat, layers: LoraLayers): boolean {
  if (!key.endsWith(".weight") || (shape.length !== 2 && shape.length !== 4)) return false;
  if (format === "diffusers_old") return PROCESSOR.test(key);
  return ATTENTION.test(key) || (layers === "locon" && shape.length === 4);
}

function values(n: number, seed: number, scale: number, f16: boolean): Float32Array {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return f16 ? Float32Array.from(Float16Array.from(out)) : out;
}

function raw(name: string, shape: number[], data: Float32Array, f16: boolean): RawTensor {
  return f16
    ? { name, dtype: "F16", shape, data: bytesOf(Float16Array.from(data)) }
    : { name, dtype: "F32", shape, data: bytesOf(data) };
}

function names(
  format: LoraFormat,
  component: "unet" | "text_encoder",
  module: string,
  ldm: Map<string, string> | undefined,
): { down: string; up: string; alpha?: string } {
  const flat = (s: string) => s.replaceAll(".", "_");
  const prefix = component === "unet" ? "lora_unet_" : "lora_te_";
  switch (format) {
    case "kohya":
    case "kohya_ldm": {
      let path = module;
      if (format === "kohya_ldm" && component === "unet") {
        const l = ldm?.get(`${module}.weight`);
        if (l === undefined) throw new Error(`no LDM name for ${module}`);
        path = l.slice(0, -".weight".length);
      }
      const base = `${prefix}${flat(path)}`;
      return {
        down: `${base}.lora_down.weight`,
        up: `${base}.lora_up.weight`,
        alpha: `${base}.alpha`,
      };
    }
    case "peft": {
      const base = `${component}.${module}`;
      return { down: `${base}.lora_A.weight`, up: `${base}.lora_B.weight` };
    }
    case "diffusers_old": {
      if (component === "text_encoder") {
        const base = `text_encoder.${module}.lora_linear_layer`;
        return { down: `${base}.down.weight`, up: `${base}.up.weight` };
      }
      const r = /^(.+)\.(to_q|to_k|to_v|to_out)(\.0)?$/.exec(module)!;
      const base = `${r[1]}.processor.${r[2]}_lora`;
      return { down: `${base}.down.weight`, up: `${base}.up.weight` };
    }
  }
}

/** Options for {@link makeLora}. */
export interface MakeLoraOptions {
  /** The key format. */
  format: LoraFormat;
  /** Stored dtype. */
  dtype: "F16" | "F32";
  /** Which layers (default attention, plus the text encoder). */
  layers?: LoraLayers;
  /** The rank (default 4). */
  rank?: number;
  /** alpha written for kohya formats (default rank / 2, so the scale is 0.5). */
  alpha?: number;
  /** Seed of the values. */
  seed: number;
  /** Header metadata. */
  metadata?: Record<string, string>;
  /** Adapt the text encoder too (default true). */
  textEncoder?: boolean;
  /** LDM names (required for `kohya_ldm`). */
  ldm?: Map<string, string>;
  /** Magnitude of the factors (default 0.3). */
  magnitude?: number;
}

/** Writes a LoRA for a model's weight shapes; returns the file bytes and what it holds. */
export function makeLora(
  shapes: { unet: Map<string, number[]>; text_encoder: Map<string, number[]> },
  options: MakeLoraOptions,
): { bytes: Uint8Array; modules: WrittenModule[] } {
  const { format, dtype, seed } = options;
  const f16 = dtype === "F16";
  const rank = options.rank ?? 4;
  const layers = options.layers ?? "attention";
  const mag = options.magnitude ?? 0.3;
  const tensors: RawTensor[] = [];
  const modules: WrittenModule[] = [];
  let s = seed;
  const components: ("unet" | "text_encoder")[] = options.textEncoder === false
    ? ["unet"]
    : ["unet", "text_encoder"];
  for (const component of components) {
    for (const [key, shape] of shapes[component]) {
      const ok = component === "unet" ? pick(key, shape, format, layers) : TEXT.test(key);
      if (!ok) continue;
      const module = key.slice(0, -".weight".length);
      const [out, inp] = shape;
      const conv = shape.length === 4;
      const downShape = conv ? [rank, inp, shape[2], shape[3]] : [rank, inp];
      const upShape = conv ? [out, rank, 1, 1] : [out, rank];
      const n = names(format, component, module, options.ldm);
      const down = values(downShape.reduce((a, b) => a * b, 1), s++, mag, f16);
      const up = values(out * rank, s++, mag, f16);
      tensors.push(raw(n.down, downShape, down, f16), raw(n.up, upShape, up, f16));
      let alpha: number | undefined;
      if (n.alpha !== undefined) {
        alpha = options.alpha ?? rank / 2;
        tensors.push(raw(n.alpha, [], new Float32Array([alpha]), f16));
      }
      modules.push({
        component,
        key,
        down: { shape: downShape, data: down },
        up: { shape: upShape, data: up },
        alpha,
        rank,
      });
    }
  }
  return { bytes: encodeSafetensors(tensors, options.metadata), modules };
}

/** A textual-inversion embedding file: A1111's `emb_params` [n, D] or diffusers' `{token: [D] or [n, D]}`. */
export function makeEmbedding(
  vectors: Float32Array,
  dim: number,
  options: { format: "a1111" | "diffusers"; dtype: "F16" | "F32"; token?: string },
): Uint8Array {
  const n = vectors.length / dim;
  const name = options.format === "a1111" ? "emb_params" : options.token ?? "<concept>";
  const shape = options.format === "diffusers" && n === 1 ? [dim] : [n, dim];
  return encodeSafetensors([raw(name, shape, vectors, options.dtype === "F16")]);
}
