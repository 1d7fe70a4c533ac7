/**
 * The add-ons a pipeline carries besides its checkpoint: the LoRA folder that `<lora:NAME:…>`
 * prompt tags resolve in, the textual-inversion embeddings its prompts may name, and the external
 * VAE it was loaded with — and the A1111 infotext fields that record them (`VAE hash`, `VAE`,
 * `Lora hashes`, `TI hashes`).
 *
 * @module
 */
import type { EmbeddingMatch } from "./prompt_parse.ts";
import { activateLoras, type ActiveLora, applyLoras, type LoraSpec } from "./lora.ts";
import { parseExtraNetworks } from "./extra_networks.ts";
import type { Pipeline } from "./load.ts";
import { sha256File } from "../weights/hashes.ts";
import { loadLora, type LoraModelInfo, matchLora } from "../weights/lora.ts";
import { openSafetensors } from "../weights/safetensors.ts";
import { loadEmbedding, type TextualInversion } from "../weights/textual_inversion.ts";

/** The add-on options of `loadPipeline`. */
export interface AddonOptions {
  /**
   * An external VAE replacing the checkpoint's: a diffusers `AutoencoderKL` folder or a single
   * `.safetensors` VAE (LDM keys with or without `first_stage_model.`, or diffusers keys).
   */
  vae?: string;
  /** LoRAs merged after loading (switch them later with `applyLoras`). */
  loras?: LoraSpec[];
  /** The folder `<lora:NAME:WEIGHT>` prompt tags resolve in (sd.cpp's `--lora-model-dir`). */
  loraDir?: string;
  /** Textual-inversion embeddings (loaded ones, or `.safetensors` paths) prompts may name. */
  embeddings?: (TextualInversion | string)[];
  /** A folder of `.safetensors` embeddings, searched recursively (sd.cpp's `--embd-dir`). */
  embeddingDir?: string;
  /** Called with notes about skipped files (default `console.warn`). */
  onWarning?: (message: string) => void;
}

/** The external VAE a pipeline was loaded with. */
export interface VaeInfo {
  /** What A1111 records as `VAE`: the file name (or folder name). */
  name: string;
  /** The weights file, whose SHA-256 gives `VAE hash`. */
  weights: string;
}

interface AddonState {
  loraDir?: string;
  embeddings: Map<string, TextualInversion>;
  /** Trigger token ids by their first id, longest first. */
  lookup: Map<number, { ids: number[]; embedding: TextualInversion }[]>;
  vae?: VaeInfo;
  hashes: Map<string, string>;
  /** Triggers with punctuation (diffusers' `<token>`): the text is split around them first. */
  splitters: Set<string>;
}

const states = new WeakMap<Pipeline, AddonState>();

function stateOf(pipe: Pipeline): AddonState {
  let s = states.get(pipe);
  if (s === undefined) {
    s = { embeddings: new Map(), lookup: new Map(), hashes: new Map(), splitters: new Set() };
    states.set(pipe, s);
  }
  return s;
}

async function checkDir(path: string, what: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (!info?.isDirectory) throw new Error(`${what} ${path} is not a folder: check the path`);
}

/**
 * Checks the add-on paths before a model is loaded, so a typo fails in a second.
 *
 * @example
 * ```ts no-run
 * import { checkAddonPaths } from "@denoise/sd/pipeline";
 * await checkAddonPaths({ loraDir: "loras/", embeddings: ["embeddings/style.safetensors"] });
 * ```
 */
export async function checkAddonPaths(options: AddonOptions): Promise<void> {
  if (options.loraDir !== undefined) await checkDir(options.loraDir, "the LoRA folder");
  if (options.embeddingDir !== undefined) {
    await checkDir(options.embeddingDir, "the embedding folder");
  }
  const files = [
    ...(options.loras ?? []).map((l) => l.lora),
    ...(options.embeddings ?? []),
  ].filter((f): f is string => typeof f === "string");
  for (const f of files) {
    if (!(await Deno.stat(f).catch(() => undefined))?.isFile) {
      throw new Error(`${f} does not exist: check the path`);
    }
  }
}

/**
 * Reads the LoRA files of `specs` and matches them against a checkpoint's tensor shapes (from
 * their headers: `openComponent`'s maps), so a wrong file fails before the model's weights are
 * read. Returns the specs with the LoRAs loaded.
 *
 * @example
 * ```ts no-run
 * import { checkLoras } from "@denoise/sd/pipeline";
 * import { openComponent, openModelSource } from "@denoise/sd/weights";
 * const src = await openModelSource("models/sd15");
 * const specs = await checkLoras([{ lora: "loras/ink.safetensors" }], {
 *   unet: await openComponent(src, "unet"),
 *   textEncoder: await openComponent(src, "text_encoder"),
 *   unetConfig: src.configs.unet,
 * });
 * ```
 */
export async function checkLoras(
  specs: readonly LoraSpec[],
  model: { unet: ShapeTable; textEncoder: ShapeTable; unetConfig: LoraModelInfo["unetConfig"] },
): Promise<LoraSpec[]> {
  if (specs.length === 0) return [];
  const shapes = (c: ShapeTable) => new Map([...c.keys()].map((k) => [k, c.info(k)!.shape]));
  const info = {
    unet: shapes(model.unet),
    textEncoder: shapes(model.textEncoder),
    unetConfig: model.unetConfig,
  };
  const out: LoraSpec[] = [];
  for (const spec of specs) {
    const lora = typeof spec.lora === "string" ? await loadLora(spec.lora) : spec.lora;
    matchLora(lora, info);
    out.push({ ...spec, lora });
  }
  return out;
}

/** Keys and shapes of a component, read from headers only (`ComponentTensors` fits). */
export interface ShapeTable {
  /** The keys. */
  keys(): Iterable<string>;
  /** A key's shape. */
  info(key: string): { shape: number[] } | undefined;
}

/**
 * Sets up a loaded pipeline's add-ons: embeddings, the LoRA folder, the VAE, then the LoRAs
 * (`loadPipeline` calls it).
 *
 * @example
 * ```ts no-run
 * import { initAddons } from "@denoise/sd/pipeline";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15");
 * await initAddons(pipe, { loraDir: "loras/", embeddingDir: "embeddings/" });
 * ```
 */
export async function initAddons(
  pipe: Pipeline,
  options: AddonOptions,
  vae?: VaeInfo,
): Promise<void> {
  const state = stateOf(pipe);
  state.loraDir = options.loraDir;
  state.vae = vae;
  const warn = options.onWarning ?? ((m: string) => console.warn(`denoise: ${m}`));
  if (options.embeddingDir !== undefined) {
    await addEmbeddingDir(pipe, options.embeddingDir, warn);
  }
  await addEmbeddings(pipe, options.embeddings ?? []);
  if (options.loras !== undefined && options.loras.length > 0) {
    await applyLoras(pipe, options.loras);
  }
}

/**
 * Makes textual-inversion embeddings available to a pipeline's prompts: each is triggered by its
 * name (and a diffusers file's token) written in a prompt. Throws when an embedding's width is not
 * the text encoder's (768 for SD 1.x, 1024 for SD 2.x).
 *
 * @example
 * ```ts no-run
 * import { addEmbeddings, encodePrompt, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15");
 * await addEmbeddings(pipe, ["embeddings/easynegative.safetensors"]);
 * const embeds = await encodePrompt(pipe, "a cat", { negativePrompt: "easynegative" });
 * ```
 */
export async function addEmbeddings(
  pipe: Pipeline,
  embeddings: readonly (TextualInversion | string)[],
): Promise<TextualInversion[]> {
  const loaded = await Promise.all(
    embeddings.map((e) => typeof e === "string" ? loadEmbedding(e) : e),
  );
  const width = pipe.configs.text_encoder.hidden_size;
  for (const e of loaded) {
    if (e.dim !== width) throw widthError(e, width);
  }
  for (const e of loaded) register(pipe, e);
  return loaded;
}

function widthError(e: TextualInversion, width: number): Error {
  const family = (d: number) => d === 768 ? " (SD 1.x)" : d === 1024 ? " (SD 2.x)" : "";
  return new Error(
    `embedding ${e.path} is ${e.dim} wide${family(e.dim)}, but this model's text encoder is ` +
      `${width} wide${family(width)}: use an embedding made for this model family`,
  );
}

function register(pipe: Pipeline, e: TextualInversion): void {
  const state = stateOf(pipe);
  for (const trigger of e.triggers) {
    const ids = pipe.tokenizer.encode(trigger);
    if (ids.length === 0) continue;
    state.embeddings.set(trigger, e);
    if (/[^\p{L}\p{N}_]/u.test(trigger)) state.splitters.add(trigger);
    const list = (state.lookup.get(ids[0]) ?? []).filter((x) => x.ids.join() !== ids.join());
    list.push({ ids, embedding: e });
    list.sort((a, b) => b.ids.length - a.ids.length);
    state.lookup.set(ids[0], list);
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  const names: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e);
  names.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of names) {
    const path = `${dir.replace(/\/+$/, "")}/${e.name}`;
    if (e.isDirectory) yield* walk(path);
    else yield path;
  }
}

/** Loads every `.safetensors` embedding of a folder (A1111 skips what does not fit; so do we, saying so). */
async function addEmbeddingDir(
  pipe: Pipeline,
  dir: string,
  warn: (m: string) => void,
): Promise<void> {
  const width = pipe.configs.text_encoder.hidden_size;
  const skipped: string[] = [];
  for await (const path of walk(dir)) {
    if (/\.(pt|bin|ckpt|pth)$/i.test(path)) {
      skipped.push(`${path} (a pickle: convert it to .safetensors)`);
      continue;
    }
    if (!/\.safetensors$/i.test(path)) continue;
    try {
      const e = await loadEmbedding(path);
      if (e.dim !== width) {
        skipped.push(`${path} (${widthError(e, width).message.split(": use")[0]})`);
      } else register(pipe, e);
    } catch (err) {
      skipped.push(`${path} (${(err as Error).message})`);
    }
  }
  if (skipped.length > 0) {
    warn(`skipped ${skipped.length} files of the embedding folder:\n  ${skipped.join("\n  ")}`);
  }
}

/**
 * The textual-inversion embeddings a pipeline's prompts can name, by trigger word.
 *
 * @example
 * ```ts no-run
 * import { pipelineEmbeddings } from "@denoise/sd";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { embeddingDir: "embeddings/" });
 * console.log([...pipelineEmbeddings(pipe).keys()]); // ["easynegative", …]
 * ```
 */
export function pipelineEmbeddings(pipe: Pipeline): ReadonlyMap<string, TextualInversion> {
  return states.get(pipe)?.embeddings ?? new Map();
}

/**
 * `findEmbedding` for `chunkTokens`: the longest registered trigger at a position; what it finds
 * goes into `used`. Undefined when the pipeline has no embeddings.
 *
 * @example
 * ```ts no-run
 * import { embeddingFinder } from "@denoise/sd/pipeline";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { embeddingDir: "embeddings/" });
 * const used = new Set<never>();
 * const find = embeddingFinder(pipe, used);
 * find?.(pipe.tokenizer.encode("easynegative"), 0); // { name: "easynegative", length: 3, vectors: 8 }
 * ```
 */
export function embeddingFinder(
  pipe: Pipeline,
  used: Set<TextualInversion>,
): ((ids: readonly number[], at: number) => EmbeddingMatch | undefined) | undefined {
  const lookup = states.get(pipe)?.lookup;
  if (lookup === undefined || lookup.size === 0) return undefined;
  return (ids, at) => {
    for (const { ids: want, embedding } of lookup.get(ids[at]) ?? []) {
      if (want.every((id, k) => ids[at + k] === id)) {
        used.add(embedding);
        return { name: embedding.name, length: want.length, vectors: embedding.count };
      }
    }
    return undefined;
  };
}

/**
 * The tokenizer's `encode`, but with the text first split around triggers that contain punctuation
 * (diffusers' `<token>`), as diffusers' added tokens split it: `<cat-toy>,` then tokenizes as the
 * trigger and a comma instead of merging `>,` into one token.
 *
 * @example
 * ```ts no-run
 * import { encodeWithTriggers } from "@denoise/sd/pipeline";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { embeddings: ["concepts/cat-toy.safetensors"] });
 * encodeWithTriggers(pipe)("a <cat-toy>, on a table"); // "<cat-toy>" then ","
 * ```
 */
export function encodeWithTriggers(pipe: Pipeline): (text: string) => number[] {
  const tok = pipe.tokenizer;
  const triggers = [...(states.get(pipe)?.splitters ?? [])];
  if (triggers.length === 0) return (text) => tok.encode(text);
  const escaped = triggers.sort((a, b) => b.length - a.length)
    .map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const split = new RegExp(`(${escaped.join("|")})`, "iu");
  return (text) => text.split(split).filter((p) => p !== "").flatMap((p) => tok.encode(p));
}

/**
 * Resolves a LoRA name in a folder: `NAME.safetensors`, else a file (searched recursively) whose
 * alias (`ss_output_name`) is NAME. A pickle of that name is refused; a miss lists what is there.
 *
 * @example
 * ```ts no-run
 * import { findLoraFile } from "@denoise/sd/pipeline";
 * await findLoraFile("loras", "ghibli_style"); // "loras/ghibli_style.safetensors"
 * ```
 */
export async function findLoraFile(dir: string, name: string): Promise<string> {
  const direct = `${dir.replace(/\/+$/, "")}/${name}.safetensors`;
  if ((await Deno.stat(direct).catch(() => undefined))?.isFile) return direct;
  const files: string[] = [];
  for await (const path of walk(dir)) {
    const stem = path.split("/").pop()!.replace(/\.[^.]+$/, "");
    if (/\.(pt|bin|ckpt|pth)$/i.test(path) && stem === name) {
      throw new Error(
        `LoRA ${name} is ${path}, a pickle: pickles are refused (loading one can run code); ` +
          `convert it to .safetensors`,
      );
    }
    if (!/\.safetensors$/i.test(path)) continue;
    if (stem === name) return path;
    files.push(path);
  }
  for (const path of files) {
    const f = await openSafetensors(path);
    f.close();
    if (f.metadata.ss_output_name === name) return path;
  }
  const stems = files.map((f) => f.split("/").pop()!.replace(/\.safetensors$/i, ""));
  throw new Error(
    `LoRA "${name}" is not in ${dir} (no ${name}.safetensors, no file with that alias); ` +
      `it has: ${stems.slice(0, 20).join(", ") || "no .safetensors files"}`,
  );
}

/**
 * Checks a prompt's `<lora:…>` tags before a model is loaded: their syntax, that a LoRA folder is
 * given when there are tags, and that each names a file there. Returns the files.
 *
 * @example
 * ```ts no-run
 * import { checkPromptLoras } from "@denoise/sd";
 * await checkPromptLoras("a castle <lora:ghibli:0.7>", "loras"); // ["loras/ghibli.safetensors"]
 * ```
 */
export async function checkPromptLoras(prompt: string, loraDir?: string): Promise<string[]> {
  const { loras } = parseExtraNetworks(prompt);
  if (loras.length > 0 && loraDir === undefined) throw noLoraDir(loras[0].tag);
  const files: string[] = [];
  for (const tag of loras) files.push(await findLoraFile(loraDir!, tag.name));
  return files;
}

function noLoraDir(tag: string): Error {
  return new Error(
    `the prompt names ${tag}, but no LoRA folder is set: pass { loraDir } to loadPipeline or ` +
      `encodePrompt (gen.ts: --lora-model-dir DIR)`,
  );
}

/**
 * Takes the `<lora:…>` tags out of a prompt and merges the pipeline's LoRAs plus the tagged ones
 * (resolved in the LoRA folder) and `options.loras`. Returns the text to tokenize and the set
 * merged (`encodePrompt` calls it).
 *
 * @example
 * ```ts no-run
 * import { preparePromptLoras } from "@denoise/sd/pipeline";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { loraDir: "loras/" });
 * const { text, loras } = await preparePromptLoras(pipe, "a castle <lora:ghibli:0.7>", {});
 * console.log(text, loras.map((l) => l.name)); // "a castle " ["ghibli"]
 * ```
 */
export async function preparePromptLoras(
  pipe: Pipeline,
  prompt: string,
  options: { loraDir?: string; loras?: readonly LoraSpec[] },
): Promise<{ text: string; loras: ActiveLora[] }> {
  const { text, loras: tags } = parseExtraNetworks(prompt);
  const dir = options.loraDir ?? states.get(pipe)?.loraDir;
  const specs: LoraSpec[] = [...(options.loras ?? [])];
  for (const tag of tags) {
    if (dir === undefined) throw noLoraDir(tag.tag);
    specs.push({
      lora: await findLoraFile(dir, tag.name),
      te: tag.te,
      unet: tag.unet,
      name: tag.name,
    });
  }
  const loras = await activateLoras(pipe, specs);
  return { text, loras };
}

/** The add-on fields of an A1111 infotext. */
export interface AddonInfotext {
  /** `VAE hash`: the external VAE's SHA-256, first 10 hex digits. */
  vaeHash?: string;
  /** `VAE`: its file name. */
  vae?: string;
  /** `Lora hashes`: `name: shorthash, …`. */
  loraHashes?: string;
  /** `TI hashes`: `name: shorthash, …`. */
  tiHashes?: string;
}

/**
 * The A1111 infotext fields for what a generation used: the pipeline's external VAE, and the
 * LoRAs and embeddings its prompt embeddings record (names with `:` and `,` removed, as A1111).
 *
 * @example
 * ```ts no-run
 * import { addonInfotext, encodePrompt, formatA1111Parameters, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { loraDir: "loras", vae: "vae-ft-mse.safetensors" });
 * const embeds = await encodePrompt(pipe, "a castle <lora:ghibli:0.7>");
 * const fields = await addonInfotext(pipe, embeds); // { vae, vaeHash, loraHashes }
 * ```
 */
export async function addonInfotext(
  pipe: Pipeline,
  used: { loras?: readonly ActiveLora[]; embeddings?: readonly TextualInversion[] },
): Promise<AddonInfotext> {
  const out: AddonInfotext = {};
  const state = states.get(pipe);
  if (state?.vae !== undefined) {
    let hash = state.hashes.get(state.vae.weights);
    if (hash === undefined) {
      hash = await sha256File(state.vae.weights);
      state.hashes.set(state.vae.weights, hash);
    }
    out.vaeHash = hash.slice(0, 10);
    out.vae = state.vae.name;
  }
  const clean = (s: string) => s.replaceAll(":", "").replaceAll(",", "");
  const loras = (used.loras ?? []).filter((l) => l.te !== 0 || l.unet !== 0);
  if (loras.length > 0) {
    out.loraHashes = loras.map((l) => `${clean(l.name)}: ${l.lora.shorthash}`).join(", ");
  }
  if (used.embeddings !== undefined && used.embeddings.length > 0) {
    out.tiHashes = used.embeddings.map((e) => `${clean(e.name)}: ${e.shorthash}`).join(", ");
  }
  return out;
}
