/**
 * LoRA files on the host: {@link loadLora} reads a `.safetensors` LoRA in any of the formats people
 * download — kohya/A1111 (`lora_unet_…`/`lora_te_…` with diffusers or LDM module paths, `lora_down`,
 * `lora_up`, `alpha`; LoCon's conv layers), diffusers/PEFT (`lora_A`/`lora_B`) and older diffusers
 * attention processors — and {@link matchLora} resolves its modules against a model's parameters,
 * strictly: incomplete modules, wrong shapes and a LoRA made for another model family are errors;
 * keys that match no module are listed. The merge itself (W' = W + scale·(alpha/rank)·up·down) runs
 * on the GPU in `src/pipeline/lora.ts`.
 *
 * @module
 */
import { addnetHash } from "./hashes.ts";
import { loraModuleAliases, parseLoraKey, type UNetLayoutConfig } from "./names.ts";
import { filePath, openSafetensors, toFloat32 } from "./safetensors.ts";

/** A LoRA factor on the host, widened to float32. */
export interface LoraFactor {
  /** Shape as stored: `[rank, in]`, `[rank, in, k, k]` (down) or `[out, rank]`, `[out, rank, 1, 1]` (up). */
  shape: number[];
  /** Values, row-major. */
  data: Float32Array;
}

/** One adapted layer of a LoRA file. */
export interface LoraModule {
  /** The module name as the file spells it. */
  name: string;
  /** `lora_down` / `lora_A`. */
  down: LoraFactor;
  /** `lora_up` / `lora_B`. */
  up: LoraFactor;
  /** The rank: `down.shape[0]`. */
  rank: number;
  /** The stored `alpha`; absent means alpha = rank (scale 1), as in A1111 and PEFT's default. */
  alpha?: number;
}

/** The model family a LoRA was made for. */
export type LoraFamily = "SD 1.x" | "SD 2.x" | "SDXL";

/** A LoRA file read into memory (see {@link loadLora}). */
export interface Lora {
  /** A number unique to this load, telling two loads of one file apart. */
  readonly id: number;
  /** The file name without `.safetensors`: what `<lora:NAME:…>` refers to. */
  readonly name: string;
  /** kohya's `ss_output_name` when the file has it, else `name` (A1111's alias). */
  readonly alias: string;
  /** The file's path. */
  readonly path: string;
  /** A1111's hash: the metadata's `sshs_model_hash`, else kohya's addnet hash (SHA-256 of the data). */
  readonly hash: string;
  /** Its first 12 hex digits, as in A1111's `Lora hashes`. */
  readonly shorthash: string;
  /** The header's `__metadata__`. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The adapted layers by module name. */
  readonly modules: ReadonlyMap<string, LoraModule>;
  /** Keys that are not LoRA factors (for example bundled embeddings): listed, never applied. */
  readonly unknown: readonly string[];
  /** The family the metadata names (kohya `ss_base_model_version`/`ss_v2`, `modelspec.architecture`). */
  readonly family?: LoraFamily;
}

let nextId = 1;

function familyFromMetadata(meta: Record<string, string>): LoraFamily | undefined {
  const base = meta.ss_base_model_version ?? "";
  const arch = meta["modelspec.architecture"] ?? "";
  if (base.startsWith("sdxl") || arch.includes("stable-diffusion-xl")) return "SDXL";
  if (meta.ss_v2 === "True" || base.startsWith("sd_v2") || arch.includes("stable-diffusion-v2")) {
    return "SD 2.x";
  }
  if (meta.ss_v2 === "False" || base.startsWith("sd_v1") || arch.includes("stable-diffusion-v1")) {
    return "SD 1.x";
  }
  return undefined;
}

function checkFactors(m: { name: string; down: LoraFactor; up: LoraFactor }): string | undefined {
  const { down, up } = m;
  const trailingOnes = (s: number[]) => s.slice(2).every((d) => d === 1);
  if (![2, 4].includes(down.shape.length) || ![2, 4].includes(up.shape.length)) {
    return `${m.name}: down [${down.shape}] and up [${up.shape}] must be 2-D or 4-D`;
  }
  if (!trailingOnes(up.shape)) {
    return `${m.name}: up [${up.shape}] must be [out, rank] or [out, rank, 1, 1]`;
  }
  if (up.shape[1] !== down.shape[0]) {
    return `${m.name}: up [${up.shape}] and down [${down.shape}] disagree on the rank`;
  }
  return undefined;
}

/**
 * Reads a LoRA `.safetensors` file (f32, f16 or bf16) into memory, grouping its keys into modules
 * and widening the factors to float32. Throws, naming the keys, when a module lacks its up or down
 * factor or has inconsistent shapes, and when the file holds another network type (LyCORIS LoHa,
 * LoKr, DoRA, …). Keys that are no LoRA factor are kept in `unknown`. Pickles are refused.
 *
 * @example
 * ```ts no-run
 * import { loadLora } from "@denoise/sd/weights";
 * const lora = await loadLora("loras/add_detail.safetensors");
 * console.log(lora.name, lora.modules.size, lora.shorthash);
 * ```
 */
export async function loadLora(path: string | URL): Promise<Lora> {
  const p = filePath(path);
  const file = await openSafetensors(p);
  try {
    const parts = new Map<string, { down?: LoraFactor; up?: LoraFactor; alpha?: number }>();
    const unknown: string[] = [];
    const others = new Map<string, string>();
    for (const [key, info] of file.tensors) {
      const parsed = parseLoraKey(key);
      if (parsed === undefined) {
        unknown.push(key);
        continue;
      }
      if ("other" in parsed) {
        others.set(parsed.other, others.get(parsed.other) ?? key);
        continue;
      }
      const entry = parts.get(parsed.module) ?? {};
      parts.set(parsed.module, entry);
      const data = toFloat32(await file.read(key), info.dtype);
      if (parsed.part === "alpha") {
        if (data.length !== 1) {
          throw new Error(`${p}: ${key} has shape [${info.shape}], but alpha is one number`);
        }
        entry.alpha = data[0];
      } else {
        entry[parsed.part] = { shape: info.shape.slice(), data: Float32Array.from(data) };
      }
    }
    if (others.size > 0) {
      const kinds = [...others].map(([kind, key]) => `${kind}, e.g. ${key}`).join("; ");
      throw new Error(
        `${p} holds network types denoise does not apply (${kinds}): only LoRA and LoCon ` +
          `(lora_down/lora_up or lora_A/lora_B factors) are supported`,
      );
    }
    const modules = new Map<string, LoraModule>();
    const problems: string[] = [];
    for (const [name, e] of parts) {
      if (e.down === undefined || e.up === undefined) {
        const missing = e.down === undefined
          ? "down (lora_down / lora_A)"
          : "up (lora_up / lora_B)";
        problems.push(`${name}: missing its ${missing} factor`);
        continue;
      }
      const m = { name, down: e.down, up: e.up };
      const bad = checkFactors(m);
      if (bad !== undefined) problems.push(bad);
      else modules.set(name, { ...m, rank: e.down.shape[0], alpha: e.alpha });
    }
    if (problems.length > 0) {
      throw new Error(
        `${p} is not a complete LoRA (${problems.length} problems) — re-download it:\n  ` +
          problems.slice(0, 20).join("\n  ") +
          (problems.length > 20 ? `\n  … and ${problems.length - 20} more` : ""),
      );
    }
    if (modules.size === 0) {
      throw new Error(
        `${p} has no LoRA factors (no lora_down/lora_up or lora_A/lora_B keys): is it a LoRA? ` +
          `(first keys: ${[...file.tensors.keys()].slice(0, 3).join(", ")})`,
      );
    }
    const metadata = { ...file.metadata };
    const hash = metadata.sshs_model_hash || await addnetHash(p);
    const name = p.split("/").pop()!.replace(/\.safetensors$/i, "");
    return {
      id: nextId++,
      name,
      alias: metadata.ss_output_name || name,
      path: p,
      hash,
      shorthash: hash.slice(0, 12),
      metadata,
      modules,
      unknown,
      family: familyFromMetadata(metadata),
    };
  } finally {
    file.close();
  }
}

/** What {@link matchLora} needs to know of a model. */
export interface LoraModelInfo {
  /** Shapes of the U-Net's parameters by diffusers key. */
  unet: ReadonlyMap<string, readonly number[]>;
  /** Shapes of the text encoder's parameters by transformers key. */
  textEncoder: ReadonlyMap<string, readonly number[]>;
  /** The U-Net config (layout, and `use_linear_projection`, which tells SD 2.x from SD 1.x). */
  unetConfig: UNetLayoutConfig;
}

/** One model weight a LoRA module adapts. */
export interface LoraTarget {
  /** The component. */
  component: "unet" | "text_encoder";
  /** The parameter key (`….to_q.weight`). */
  key: string;
  /** The LoRA module. */
  module: LoraModule;
}

/** The result of {@link matchLora}. */
export interface LoraMatch {
  /** Every adapted weight. */
  targets: LoraTarget[];
  /** Modules of the file that match no weight of the model, and keys that are no LoRA factor. */
  unmatched: string[];
}

type AliasTable = Map<string, { component: "unet" | "text_encoder"; key: string }>;
const aliasTables = new WeakMap<LoraModelInfo, AliasTable>();

function aliasTable(model: LoraModelInfo): AliasTable {
  let table = aliasTables.get(model);
  if (table !== undefined) return table;
  table = new Map();
  const add = (component: "unet" | "text_encoder", shapes: LoraModelInfo["unet"]) => {
    for (const [key, shape] of shapes) {
      if (!key.endsWith(".weight") || (shape.length !== 2 && shape.length !== 4)) continue;
      const module = key.slice(0, -".weight".length);
      for (const alias of loraModuleAliases(component, module, model.unetConfig)) {
        table!.set(alias, { component, key });
      }
    }
  };
  add("unet", model.unet);
  add("text_encoder", model.textEncoder);
  aliasTables.set(model, table);
  return table;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Why a module's factors do not fit the weight, or undefined when they do. */
function fitProblem(module: LoraModule, weight: readonly number[]): string | undefined {
  const { down, up, rank } = module;
  const [out, inp] = weight;
  const kernel = numel(weight.slice(2));
  const ok = up.shape[0] === out && down.shape[1] === inp &&
    numel(down.shape) === rank * inp * kernel;
  return ok ? undefined : `down [${down.shape}], up [${up.shape}] vs weight [${weight}]`;
}

/** Evidence that a U-Net module's LoRA was made for the other SD family. */
function familyEvidence(target: LoraTarget, weight: readonly number[]): string | undefined {
  const { key, module } = target;
  if (target.component === "unet" && /\.attn2\.to_[kv]\.weight$/.test(key)) {
    if (module.down.shape[1] !== weight[1]) {
      return `its cross-attention takes ${module.down.shape[1]}-wide text embeddings, the model's ${
        weight[1]
      }`;
    }
  }
  if (target.component === "unet" && /\.proj_(in|out)\.weight$/.test(key)) {
    const loraLinear = module.down.shape.length === 2, modelLinear = weight.length === 2;
    if (loraLinear !== modelLinear) {
      return `its proj_in/proj_out are ${loraLinear ? "linear (SD 2.x)" : "1×1 convs (SD 1.x)"}, ` +
        `the model's are ${modelLinear ? "linear (SD 2.x)" : "1×1 convs (SD 1.x)"}`;
    }
  }
  if (target.component === "text_encoder" && module.down.shape[1] !== weight[1]) {
    return `its text-encoder layers are ${module.down.shape[1]} wide, the model's ${weight[1]}`;
  }
  return undefined;
}

/**
 * Resolves a LoRA's modules against a model: each module name is looked up among every name the
 * formats give the model's weights, and its factors are checked against the weight's shape. Throws
 * when the LoRA was made for another family (SDXL; SD 2.x on SD 1.x or the reverse — told by the
 * metadata or by the shapes: context width, linear vs conv projections, text-encoder width), when
 * any factor has the wrong shape, or when nothing matches. Returns the targets and the list of
 * module names that match nothing.
 *
 * @example
 * ```ts no-run
 * import { loadLora, matchLora } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * declare const unetShapes: Map<string, number[]>, textShapes: Map<string, number[]>;
 * const lora = await loadLora("my_lora.safetensors");
 * const { targets, unmatched } = matchLora(lora, {
 *   unet: unetShapes,
 *   textEncoder: textShapes,
 *   unetConfig: SD15.unet,
 * });
 * ```
 */
export function matchLora(lora: Lora, model: LoraModelInfo): LoraMatch {
  const modelFamily: LoraFamily = model.unetConfig.use_linear_projection ? "SD 2.x" : "SD 1.x";
  const names = [...lora.modules.keys()];
  const sdxl = names.find((n) => /^(lora_te[12]_|text_encoder_2\.)/.test(n));
  const refuse = (family: string, why: string) =>
    new Error(
      `${lora.path} is a LoRA for ${family} (${why}); the model is ${modelFamily}: use a LoRA ` +
        `trained for ${modelFamily}`,
    );
  if (lora.family === "SDXL" || sdxl !== undefined) {
    throw refuse("SDXL", sdxl ? `it has ${sdxl}` : "its metadata says so");
  }
  if (lora.family !== undefined && lora.family !== modelFamily) {
    throw refuse(lora.family, "its metadata says so");
  }
  const table = aliasTable(model);
  const targets: LoraTarget[] = [];
  const unmatched: string[] = [];
  const misfits: string[] = [];
  const evidence: string[] = [];
  for (const module of lora.modules.values()) {
    const hit = table.get(module.name);
    if (hit === undefined) {
      unmatched.push(module.name);
      continue;
    }
    const shapes = hit.component === "unet" ? model.unet : model.textEncoder;
    const weight = shapes.get(hit.key)!;
    const target = { ...hit, module };
    const family = familyEvidence(target, weight);
    if (family !== undefined) evidence.push(family);
    const misfit = fitProblem(module, weight);
    if (misfit !== undefined) misfits.push(`${module.name} → ${hit.key}: ${misfit}`);
    else targets.push(target);
  }
  if (evidence.length > 0) {
    throw refuse(modelFamily === "SD 1.x" ? "SD 2.x" : "SD 1.x", [...new Set(evidence)].join("; "));
  }
  if (misfits.length > 0) {
    throw new Error(
      `${lora.path} does not fit this model (${misfits.length} layers with the wrong shape):\n  ` +
        misfits.slice(0, 20).join("\n  ") +
        (misfits.length > 20 ? `\n  … and ${misfits.length - 20} more` : ""),
    );
  }
  if (targets.length === 0) {
    throw new Error(
      `${lora.path}: none of its ${lora.modules.size} layers matches this model (e.g. ` +
        `${names.slice(0, 3).join(", ")}): is it a LoRA for Stable Diffusion 1.x/2.x?`,
    );
  }
  return { targets, unmatched: [...unmatched, ...lora.unknown] };
}
