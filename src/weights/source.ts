/**
 * Layout-agnostic weight loading: opens either a diffusers folder or a single-file checkpoint and
 * yields each component's tensors under diffusers keys, so model loaders never see the layout.
 * Host side only: the GPU upload lives elsewhere.
 *
 * @module
 */
import type {
  AutoencoderKLConfig,
  CLIPTextConfig,
  SchedulerConfig,
  TokenizerSettings,
  UNet2DConditionConfig,
} from "./configs.ts";
import { checkModelConfigs } from "./config_check.ts";
import { detectCheckpoint, type Detection, type PredictionType } from "./detect.ts";
import { type DiffusersFolder, openDiffusersFolder } from "./diffusers.ts";
import {
  applyTransform,
  type Component,
  type IgnoredKey,
  type KeyMapping,
  type MappingEntry,
  mapSingleFileKeys,
  mapVaeFileKeys,
  transformedShape,
} from "./names.ts";
import {
  type Dtype,
  filePath,
  openSafetensors,
  type SafetensorsFile,
  toFloat32,
} from "./safetensors.ts";

/** The configs a model source provides. */
export interface ModelConfigs {
  /** U-Net config. */
  unet: UNet2DConditionConfig;
  /** VAE config. */
  vae: AutoencoderKLConfig;
  /** Text encoder config. */
  text_encoder: CLIPTextConfig;
  /** Scheduler config, when known. */
  scheduler?: SchedulerConfig;
  /** Tokenizer settings, when known. */
  tokenizer?: TokenizerSettings | Record<string, unknown>;
}

/** A diffusers folder opened for loading. */
export interface FolderSource {
  /** Discriminant. */
  kind: "diffusers";
  /** The parsed folder. */
  folder: DiffusersFolder;
  /** Its configs. */
  configs: ModelConfigs;
}

/** A single-file checkpoint opened for loading (holds the file open until closed). */
export interface SingleFileSource {
  /** Discriminant. */
  kind: "single_file";
  /** The open file. */
  file: SafetensorsFile;
  /** The key mapping to diffusers keys (with ignored and unknown keys). */
  mapping: KeyMapping;
  /** What the checkpoint was recognised as. */
  detection: Detection;
  /** The configs in use: the caller's, else the detected family's standard ones. */
  configs: ModelConfigs;
}

/** Either layout. */
export type ModelSource = FolderSource | SingleFileSource;

/** Options for {@link openModelSource}. */
export interface OpenModelOptions {
  /** Configs to use for a single file (required when its family is not recognised). */
  configs?: ModelConfigs;
  /** Overrides the detected prediction type of a single file. */
  predictionType?: PredictionType;
  /** For folders: prefer `*.fp16.safetensors` weights. */
  variant?: "fp16";
}

/** One loaded tensor under its diffusers key. */
export interface LoadedTensor {
  /** Shape, outermost axis first. */
  shape: number[];
  /** Element type of `data` (`F32` when read with `f32: true`). */
  dtype: Dtype;
  /** Raw little-endian bytes, or float32 values when read with `f32: true`. */
  data: Uint8Array | Float32Array;
  /**
   * The buffer under `data` belongs to this value alone (a fresh read, as
   * {@link ComponentTensors.get} returns): a consumer done with it may free it at once
   * (`data.buffer.transfer(0)`) instead of leaving it to the garbage collector.
   */
  owned?: boolean;
}

/** Folder keys that are constant buffers, not parameters (older transformers saved them). */
const FOLDER_BUFFERS = new Set(["text_model.embeddings.position_ids"]);

/**
 * Opens a model for loading: a diffusers folder (with `model_index.json`) or a single
 * `.safetensors` checkpoint in the CompVis/LDM layout, whose family is detected from its keys.
 *
 * @example
 * ```ts no-run
 * import { closeModelSource, openModelSource, readComponent } from "@denoise/sd/weights";
 * const src = await openModelSource("v1-5-pruned-emaonly.safetensors");
 * const unet = await readComponent(src, "unet", { f32: true });
 * console.log(unet.get("conv_in.weight")?.shape); // [320, 4, 3, 3]
 * closeModelSource(src);
 * ```
 */
export async function openModelSource(
  path: string | URL,
  options: OpenModelOptions = {},
): Promise<ModelSource> {
  const p = filePath(path);
  const info = await Deno.stat(p).catch((e) => {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${p} does not exist: check the path (or download the model first)`);
    }
    throw e;
  });
  if (info.isDirectory) {
    const folder = await openDiffusersFolder(p, { variant: options.variant });
    const c = folder.configs;
    return {
      kind: "diffusers",
      folder,
      configs: {
        unet: c.unet as UNet2DConditionConfig,
        vae: c.vae as AutoencoderKLConfig,
        text_encoder: c.text_encoder as CLIPTextConfig,
        scheduler: c.scheduler as SchedulerConfig,
        ...(c.tokenizer ? { tokenizer: c.tokenizer } : {}),
      },
    };
  }
  const file = await openSafetensors(p);
  try {
    const detection = detectCheckpoint(file.tensors, { predictionType: options.predictionType });
    if (options.configs) {
      checkModelConfigs(options.configs, {
        unet: "configs.unet",
        vae: "configs.vae",
        text_encoder: "configs.text_encoder",
      });
    }
    const configs = options.configs ?? detection.configs;
    if (configs === undefined) {
      throw new Error(
        `${p}: not recognised as SD 1.x or SD 2.x (cross-attention width ` +
          `${detection.crossAttentionDim ?? "unknown"}, text encoder ${detection.textEncoder}): ` +
          `pass the model's configs explicitly with { configs: { unet, vae, text_encoder } }`,
      );
    }
    const mapping = mapSingleFileKeys(file.tensors, {
      unet: configs.unet,
      vae: configs.vae,
      textEncoder: configs.text_encoder,
    });
    return { kind: "single_file", file, mapping, detection, configs };
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * Reads every tensor of one component under diffusers keys, from either layout. Each source byte
 * range is read once (a fused q/k/v becomes three views of one buffer); with `f32: true` the data
 * is widened to float32. Constant buffers such as `text_model.embeddings.position_ids` are left
 * out.
 *
 * @example
 * ```ts no-run
 * import { openModelSource, readComponent } from "@denoise/sd/weights";
 * const src = await openModelSource("models/tiny-sd15");
 * const vae = await readComponent(src, "vae");
 * for (const [key, t] of vae) console.log(key, t.dtype, t.shape);
 * ```
 */
export async function readComponent(
  source: ModelSource,
  component: Component,
  options: { f32?: boolean } = {},
): Promise<Map<string, LoadedTensor>> {
  const out = new Map<string, LoadedTensor>();
  const convert = (bytes: Uint8Array, dtype: Dtype) =>
    options.f32 ? { data: toFloat32(bytes, dtype), dtype: "F32" as Dtype } : { data: bytes, dtype };
  if (source.kind === "diffusers") {
    const file = await openSafetensors(source.folder.weights[component]);
    try {
      const names = [...file.tensors.entries()]
        .filter(([k]) => !FOLDER_BUFFERS.has(k))
        .sort((a, b) => a[1].byteOffset - b[1].byteOffset);
      for (const [key, info] of names) {
        out.set(key, { shape: info.shape.slice(), ...convert(await file.read(key), info.dtype) });
      }
    } finally {
      file.close();
    }
    return out;
  }
  const { file, mapping } = source;
  const bySource = new Map<string, typeof mapping.entries>();
  for (const e of mapping.entries) {
    if (e.target.component !== component) continue;
    const list = bySource.get(e.source) ?? [];
    list.push(e);
    bySource.set(e.source, list);
  }
  const sources = [...bySource.keys()].sort((a, b) =>
    file.tensors.get(a)!.byteOffset - file.tensors.get(b)!.byteOffset
  );
  for (const name of sources) {
    const info = file.tensors.get(name)!;
    const { data, dtype } = convert(await file.read(name), info.dtype);
    for (const e of bySource.get(name)!) {
      const t = applyTransform(data, info.shape, e.transform);
      out.set(e.target.key, { shape: t.shape, dtype, data: t.data });
    }
  }
  return out;
}

/** Where one tensor's bytes lie: a byte range of a file (a fused q/k/v part is a sub-range). */
export interface TensorRange {
  /** The file. */
  path: string;
  /** Absolute offset of the first byte. */
  byteOffset: number;
  /** Length in bytes. */
  byteLength: number;
  /** Element type of the bytes. */
  dtype: Dtype;
  /** The tensor's shape (after any squeeze or split). */
  shape: number[];
}

function readRangeSync(range: TensorRange): Uint8Array {
  const out = new Uint8Array(range.byteLength);
  const file = Deno.openSync(range.path, { read: true });
  try {
    file.seekSync(range.byteOffset, Deno.SeekMode.Start);
    let done = 0;
    while (done < out.byteLength) {
      const n = file.readSync(out.subarray(done));
      if (n === null) {
        throw new Error(
          `${range.path}: unexpected end of file at byte ${range.byteOffset + done}: the file ` +
            `is truncated or changed while loading — re-download it`,
        );
      }
      done += n;
    }
  } finally {
    file.close();
  }
  return out;
}

/**
 * One component's tensors under diffusers keys, read on demand: keys, shapes and dtypes are known
 * up front, and `get(key)` reads that tensor from the file (synchronously, on every call) into a
 * fresh buffer that the caller owns (`owned: true`). A model built from it therefore holds one
 * tensor in host memory at a time instead of the whole component. Iterating `values()` or
 * `entries()` reads every tensor.
 *
 * @example
 * ```ts no-run
 * import { closeModelSource, openComponent, openModelSource } from "@denoise/sd/weights";
 * const src = await openModelSource("v1-5-pruned-emaonly.safetensors");
 * const unet = await openComponent(src, "unet");
 * console.log(unet.size, unet.info("conv_in.weight")); // 686 { shape: [320, 4, 3, 3], dtype: "F32" }
 * const w = unet.get("conv_in.weight"); // read now
 * closeModelSource(src);
 * ```
 */
export class ComponentTensors implements ReadonlyMap<string, LoadedTensor> {
  readonly #ranges: ReadonlyMap<string, TensorRange>;
  readonly #f32: boolean;

  /** Wraps byte ranges by key; prefer {@link openComponent}. */
  constructor(ranges: ReadonlyMap<string, TensorRange>, options: { f32?: boolean } = {}) {
    this.#ranges = ranges;
    this.#f32 = options.f32 ?? false;
  }

  /** The number of tensors. */
  get size(): number {
    return this.#ranges.size;
  }

  /** Whether `key` is present (reads nothing). */
  has(key: string): boolean {
    return this.#ranges.has(key);
  }

  /** The shape and stored dtype of `key` (reads nothing). */
  info(key: string): { shape: number[]; dtype: Dtype } | undefined {
    const r = this.#ranges.get(key);
    return r && { shape: r.shape.slice(), dtype: r.dtype };
  }

  /** Reads the tensor `key` from the file now (widened to float32 with `f32: true`). */
  get(key: string): LoadedTensor | undefined {
    const r = this.#ranges.get(key);
    if (r === undefined) return undefined;
    const bytes = readRangeSync(r);
    const shape = r.shape.slice();
    if (this.#f32) return { shape, dtype: "F32", data: toFloat32(bytes, r.dtype), owned: true };
    return { shape, dtype: r.dtype, data: bytes, owned: true };
  }

  /** The keys, in file order. */
  keys(): MapIterator<string> {
    return this.#ranges.keys();
  }

  /** Reads and yields every tensor. */
  *values(): MapIterator<LoadedTensor> {
    for (const key of this.#ranges.keys()) yield this.get(key)!;
  }

  /** Reads and yields every `[key, tensor]`. */
  *entries(): MapIterator<[string, LoadedTensor]> {
    for (const key of this.#ranges.keys()) yield [key, this.get(key)!];
  }

  /** Same as {@link ComponentTensors.entries}. */
  [Symbol.iterator](): MapIterator<[string, LoadedTensor]> {
    return this.entries();
  }

  /** Reads every tensor and calls `fn` with it. */
  forEach(
    fn: (value: LoadedTensor, key: string, map: ReadonlyMap<string, LoadedTensor>) => void,
  ): void {
    for (const [key, value] of this.entries()) fn(value, key, this);
  }
}

/**
 * Opens one component of a model source for on-demand reading: only headers are read now, each
 * tensor when the model asks for it (see {@link ComponentTensors}). Same keys and data as
 * {@link readComponent}; a single-file source must stay open until the model is built.
 *
 * @example
 * ```ts no-run
 * import { Runtime } from "@denoise/sd/gpu";
 * import { UNet2DConditionModel } from "@denoise/sd/models";
 * import { closeModelSource, openComponent, openModelSource } from "@denoise/sd/weights";
 * const rt = await Runtime.create();
 * const src = await openModelSource("v1-5-pruned-emaonly.safetensors");
 * const unet = UNet2DConditionModel.load(rt, {
 *   tensors: await openComponent(src, "unet"),
 *   config: src.configs.unet,
 * });
 * closeModelSource(src);
 * ```
 */
export async function openComponent(
  source: ModelSource,
  component: Component,
  options: { f32?: boolean } = {},
): Promise<ComponentTensors> {
  const ranges = new Map<string, TensorRange>();
  if (source.kind === "diffusers") {
    const path = source.folder.weights[component];
    const file = await openSafetensors(path);
    file.close();
    const names = [...file.tensors.entries()]
      .filter(([k]) => !FOLDER_BUFFERS.has(k))
      .sort((a, b) => a[1].byteOffset - b[1].byteOffset);
    for (const [key, info] of names) {
      const { byteOffset, byteLength, dtype } = info;
      ranges.set(key, { path, byteOffset, byteLength, dtype, shape: info.shape.slice() });
    }
    return new ComponentTensors(ranges, options);
  }
  const { file, mapping } = source;
  return new ComponentTensors(
    rangesOf(file, mapping.entries.filter((e) => e.target.component === component)),
    options,
  );
}

/** Byte ranges of mapped entries by target key, in file order (a split is a sub-range). */
function rangesOf(
  file: SafetensorsFile,
  mapped: readonly MappingEntry[],
): Map<string, TensorRange> {
  const ranges = new Map<string, TensorRange>();
  const entries = mapped
    .map((e) => ({ e, info: file.tensors.get(e.source)! }))
    .sort((a, b) => a.info.byteOffset - b.info.byteOffset);
  for (const { e, info } of entries) {
    const t = e.transform;
    let { byteOffset, byteLength } = info;
    if (t !== undefined && t !== "squeeze_1x1") {
      byteLength /= t.of; // an axis-0 split is a contiguous slice of the bytes
      byteOffset += t.split * byteLength;
    }
    const shape = transformedShape(info.shape, t);
    ranges.set(e.target.key, { path: file.path, byteOffset, byteLength, dtype: info.dtype, shape });
  }
  return ranges;
}

/** An external VAE opened for loading (see {@link openVaeSource}). */
export interface VaeSource {
  /** Its tensors under diffusers keys, read on demand. */
  tensors: ComponentTensors;
  /** Its config: the folder's own, or the model's for a single file. */
  config: AutoencoderKLConfig;
  /** The `.safetensors` file the weights are in. */
  weights: string;
  /** Keys deliberately not loaded (EMA counters, training loss weights). */
  ignored: IgnoredKey[];
}

async function isFile(path: string): Promise<boolean> {
  return (await Deno.stat(path).catch(() => undefined))?.isFile ?? false;
}

/** The config and weights file of a diffusers `AutoencoderKL` folder (or a pipeline's `vae/`). */
async function vaeFolder(dir: string): Promise<{ config: AutoencoderKLConfig; weights: string }> {
  const root = await isFile(`${dir}/config.json`) ? dir : `${dir}/vae`;
  if (!(await isFile(`${root}/config.json`))) {
    throw new Error(
      `${dir} is a folder without config.json (or vae/config.json): a VAE folder is a diffusers ` +
        `AutoencoderKL (config.json + diffusion_pytorch_model.safetensors), else pass the .safetensors file`,
    );
  }
  const config = JSON.parse(await Deno.readTextFile(`${root}/config.json`));
  if (config._class_name !== undefined && config._class_name !== "AutoencoderKL") {
    throw new Error(`${root}/config.json describes a ${config._class_name}, not an AutoencoderKL`);
  }
  for (
    const name of [
      "diffusion_pytorch_model.safetensors",
      "diffusion_pytorch_model.fp16.safetensors",
    ]
  ) {
    if (await isFile(`${root}/${name}`)) return { config, weights: `${root}/${name}` };
  }
  throw new Error(
    `${root} has no diffusion_pytorch_model.safetensors (pickled .bin weights are refused: ` +
      `loading pickle can run code); convert it to .safetensors`,
  );
}

/**
 * Opens an external VAE: a diffusers `AutoencoderKL` folder (its own config) or a single
 * `.safetensors` VAE — LDM keys with or without `first_stage_model.` (the ft-MSE/EMA VAEs), or
 * diffusers keys — read with the model's VAE config. Every key is mapped or deliberately ignored;
 * unknown keys are an error, and `AutoencoderKL.load` then checks every shape strictly.
 *
 * @example
 * ```ts no-run
 * import { openVaeSource } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * const vae = await openVaeSource("vae-ft-mse-840000-ema-pruned.safetensors", { config: SD15.vae });
 * console.log(vae.tensors.size, vae.ignored.length);
 * ```
 */
export async function openVaeSource(
  path: string,
  options: { config: AutoencoderKLConfig },
): Promise<VaeSource> {
  const info = await Deno.stat(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`VAE ${path} does not exist: check the path`);
    }
    throw e;
  });
  const { config, weights } = info.isDirectory
    ? await vaeFolder(path)
    : { config: options.config, weights: path };
  const file = await openSafetensors(weights);
  file.close();
  const mapping = mapVaeFileKeys(file.tensors, { levels: config.block_out_channels.length });
  if (mapping.unknown.length > 0) {
    const shown = mapping.unknown.slice(0, 6).join(", ");
    throw new Error(
      `${weights} is not a VAE this loader knows: ${mapping.unknown.length} keys match no VAE ` +
        `layout (${shown}${mapping.unknown.length > 6 ? ", …" : ""}); a VAE file has ` +
        `encoder./decoder./quant_conv keys, optionally under first_stage_model.`,
    );
  }
  return {
    tensors: new ComponentTensors(rangesOf(file, mapping.entries)),
    config,
    weights,
    ignored: mapping.ignored,
  };
}

/**
 * Releases a model source (closes a single file; a folder holds nothing open).
 *
 * @example
 * ```ts no-run
 * import { closeModelSource, openModelSource } from "@denoise/sd/weights";
 * const src = await openModelSource("models/tiny-sd15");
 * closeModelSource(src);
 * ```
 */
export function closeModelSource(source: ModelSource): void {
  if (source.kind === "single_file") source.file.close();
}
