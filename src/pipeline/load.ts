/**
 * `loadPipeline`: a checkpoint (diffusers folder or single-file `.safetensors`) turned into the
 * tokenizer, text encoder, U-Net and VAE on the GPU, with the model's default scheduler config.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { Runtime } from "../gpu/runtime.ts";
import { ClipTextModel } from "../models/clip.ts";
import { UNet2DConditionModel } from "../models/unet.ts";
import { AutoencoderKL } from "../models/vae.ts";
import { type ClipTokenizer, loadTokenizer } from "../tokenizer/mod.ts";
import type { SchedulerConfig } from "../schedulers/mod.ts";
import { type DiffusersFolder, openDiffusersFolder } from "../weights/diffusers.ts";
import {
  closeModelSource,
  type ModelConfigs,
  type ModelSource,
  openComponent,
  openModelSource,
  openVaeSource,
} from "../weights/source.ts";
import type { PredictionType } from "../weights/detect.ts";
import { type AddonOptions, checkAddonPaths, checkLoras, initAddons } from "./addons.ts";

/** Options for {@link loadPipeline}; the add-ons (`vae`, `loras`, `loraDir`, `embeddings`, `embeddingDir`) are {@link AddonOptions}. */
export interface LoadPipelineOptions extends AddonOptions {
  /** `"auto"` (f16 where the adapter has shader-f16 and the weights are half precision), `"f16"` or `"f32"`. */
  dtype?: "auto" | DType;
  /** A `GPUDevice` to use instead of the shared one. */
  device?: GPUDevice;
  /** A runtime to share (takes precedence over `device`). */
  runtime?: Runtime;
  /**
   * A diffusers folder whose configs and tokenizer serve a single-file checkpoint that is not a
   * standard SD 1.x / 2.x one (the tiny test models, fine-tunes with other shapes).
   */
  configFrom?: string;
  /** A tokenizer folder or CLIP merges file (`bpe_simple_vocab_16e6.txt.gz`) for single files. */
  tokenizer?: string;
  /** Overrides the prediction type a single file was recognised with. */
  predictionType?: PredictionType;
  /** Load the VAE encoder too (for img2img); the decoder is always loaded. */
  vaeEncoder?: boolean;
  /**
   * The VAE's dtype. By default the VAE runs in f32 when its config says `force_upcast` (the SD
   * VAEs overflow f16 at high resolution, as diffusers knows), else in the pipeline's dtype.
   */
  vaeDType?: DType;
}

/** A loaded text-to-image pipeline. Free its GPU memory with `dispose()`. */
export interface Pipeline {
  /** The GPU runtime every model records on. */
  readonly rt: Runtime;
  /** The compute dtype. */
  readonly dtype: DType;
  /** The CLIP tokenizer. */
  readonly tokenizer: ClipTokenizer;
  /** The CLIP text encoder. */
  readonly textEncoder: ClipTextModel;
  /** The U-Net. */
  readonly unet: UNet2DConditionModel;
  /** The VAE. */
  readonly vae: AutoencoderKL;
  /** The configs of the components. */
  readonly configs: ModelConfigs;
  /** The model's own scheduler config (the default sampler). */
  readonly schedulerConfig: SchedulerConfig;
  /** A short name of the model (folder or file name), for PNG metadata. */
  readonly name: string;
  /** Checkpoint keys no module used, per component. */
  readonly unused: Record<"text_encoder" | "unet" | "vae", string[]>;
  /** Frees the models' GPU memory. */
  dispose(): void;
  /** `using pipe = await loadPipeline(…)` frees it at the end of the block. */
  [Symbol.dispose](): void;
}

/**
 * The VAE's latent factor, diffusers' `vae_scale_factor`: 2^(len(vae.block_out_channels) − 1) (8 for
 * the SD VAEs, 4 for a 3-level VAE). An image of H×W pixels has latents of H/f × W/f.
 *
 * @example
 * ```ts no-run
 * import { latentFactor, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * console.log(latentFactor(pipe)); // 8
 * ```
 */
export function latentFactor(pipe: Pick<Pipeline, "configs">): number {
  const levels = pipe.configs.vae.block_out_channels?.length;
  if (!Number.isInteger(levels) || levels < 1) {
    throw new Error(
      "denoise: the VAE config has no block_out_channels; its latent factor is unknown",
    );
  }
  return 2 ** (levels - 1);
}

/**
 * The model that ships with denoise, `models/denoise-emoji`: a tiny Stable Diffusion (diffusers
 * layout) trained from scratch on open emoji by `train/`, 32×32 pictures; what `loadPipeline()`
 * and `gen.ts` load when no model is named. It lives in the repository (not in the published
 * package): a path in a checkout.
 *
 * @example
 * ```ts
 * import { DEFAULT_MODEL, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline(DEFAULT_MODEL); // the same as loadPipeline()
 * pipe.dispose();
 * ```
 */
export const DEFAULT_MODEL: string = bundledModel(
  new URL("../../models/denoise-emoji", import.meta.url),
);

/** A file path in a checkout; the URL itself (which no loader reads) when imported remotely. */
function bundledModel(url: URL): string {
  return url.protocol === "file:" ? decodeURIComponent(url.pathname) : url.href;
}

/**
 * Loads a Stable Diffusion checkpoint: a diffusers folder (`model_index.json`, `unet/`, `vae/`,
 * `text_encoder/`, `tokenizer/`, `scheduler/`) or a single-file `.safetensors` (SD 1.x, SD 2.x).
 * Without a path (`undefined`) it loads {@link DEFAULT_MODEL}, the tiny emoji model that ships
 * with denoise.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15", { dtype: "f32" });
 * console.log(pipe.name, pipe.dtype);
 * pipe.dispose();
 * ```
 */
export async function loadPipeline(
  path: string = DEFAULT_MODEL,
  options: LoadPipelineOptions = {},
): Promise<Pipeline> {
  await checkAddonPaths(options);
  const rt = options.runtime ?? await Runtime.create({ device: options.device });
  if (options.dtype !== undefined && options.dtype !== "auto") rt.assertDType(options.dtype);
  const { source, helper } = await openPipelineSource(path, options);
  const disposers: (() => void)[] = [];
  try {
    // an external VAE is opened (and its keys checked) before gigabytes are read
    const vaeSource = options.vae === undefined
      ? undefined
      : await openVaeSource(options.vae, { config: source.configs.vae });
    const configs = vaeSource ? { ...source.configs, vae: vaeSource.config } : source.configs;
    if (configs.vae.latent_channels !== source.configs.vae.latent_channels) {
      throw new Error(
        `VAE ${options.vae} has ${configs.vae.latent_channels} latent channels, the model ` +
          `${source.configs.vae.latent_channels}: use a VAE made for this model family`,
      );
    }
    // the tokenizer first: a single file without one fails before gigabytes are read
    const tokenizer = await openTokenizer(path, source, options, helper?.root);
    // Each tensor is read from the file when its model takes it, uploaded, and dropped.
    const unetTensors = await openComponent(source, "unet");
    const textTensors = await openComponent(source, "text_encoder");
    // LoRAs are read and matched against the checkpoint's shapes before its weights are read
    const loras = await checkLoras(options.loras ?? [], {
      unet: unetTensors,
      textEncoder: textTensors,
      unetConfig: configs.unet,
    });
    const first = unetTensors.keys().next().value;
    const dtype = chooseDType(
      rt,
      options.dtype ?? "auto",
      first === undefined ? undefined : unetTensors.info(first)?.dtype,
    );
    const unet = UNet2DConditionModel.load(rt, {
      tensors: unetTensors,
      config: configs.unet,
      dtype,
    });
    disposers.push(() => unet.dispose());
    const vaeDType = options.vaeDType ??
      (dtype === "f16" && configs.vae.force_upcast !== false ? "f32" : dtype);
    rt.assertDType(vaeDType);
    const vae = AutoencoderKL.load(rt, {
      tensors: vaeSource?.tensors ?? await openComponent(source, "vae"),
      config: configs.vae,
      dtype: vaeDType,
      parts: options.vaeEncoder ? ["encoder", "decoder"] : ["decoder"],
    });
    disposers.push(() => vae.dispose());
    const textEncoder = ClipTextModel.load(rt, {
      tensors: textTensors,
      config: configs.text_encoder,
      dtype,
    });
    disposers.push(() => textEncoder.dispose());
    const schedulerConfig = (configs.scheduler ?? {}) as SchedulerConfig;
    await rt.sync(); // the uploads are done and their staging memory is freed
    const name = modelName(path);
    const dispose = () => {
      for (const d of disposers) d();
      rt.trim();
    };
    const pipe: Pipeline = {
      rt,
      dtype,
      tokenizer,
      textEncoder,
      unet,
      vae,
      configs,
      schedulerConfig,
      name,
      unused: { unet: unet.unused, vae: vae.unused, text_encoder: textEncoder.unused },
      dispose,
      [Symbol.dispose]: dispose,
    };
    const vaeName = options.vae?.replace(/\/+$/, "").split("/").pop();
    const vaeInfo = vaeSource && { name: vaeName!, weights: vaeSource.weights };
    await initAddons(pipe, { ...options, loras }, vaeInfo);
    return pipe;
  } catch (e) {
    for (const d of disposers) d();
    throw e;
  } finally {
    closeModelSource(source);
  }
}

/** What {@link inspectModel} tells about a checkpoint. */
export interface ModelInfo {
  /** A short name (folder or file name), as `Pipeline.name`. */
  name: string;
  /** The layout. */
  kind: ModelSource["kind"];
  /** The configs the pipeline would be built from. */
  configs: ModelConfigs;
  /** The model's own scheduler config. */
  schedulerConfig: SchedulerConfig;
}

/**
 * Reads what a checkpoint is — its configs (checked field by field), its scheduler, its name —
 * without reading any weights (a single file's header only), so callers can check sizes, steps and
 * options before the long load.
 *
 * @example
 * ```ts no-run
 * import { inspectModel } from "@denoise/sd";
 * const info = await inspectModel("tests/fixtures/models/tiny-sd15");
 * console.log(info.configs.text_encoder.num_hidden_layers); // 2
 * ```
 */
export async function inspectModel(
  path: string,
  options: Pick<LoadPipelineOptions, "configFrom" | "predictionType"> = {},
): Promise<ModelInfo> {
  const { source } = await openPipelineSource(path, options);
  closeModelSource(source);
  return {
    name: modelName(path),
    kind: source.kind,
    configs: source.configs,
    schedulerConfig: (source.configs.scheduler ?? {}) as SchedulerConfig,
  };
}

function modelName(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop()!.replace(/\.safetensors$/, "");
}

/** Opens the checkpoint (and the `configFrom` folder) as loadPipeline and inspectModel need it. */
async function openPipelineSource(
  path: string,
  options: Pick<LoadPipelineOptions, "configFrom" | "predictionType">,
): Promise<{ source: ModelSource; helper?: DiffusersFolder }> {
  if (/\.(ckpt|pt|pth|bin)$/i.test(path)) {
    throw new Error(
      `${path}: pickle checkpoints are refused (loading pickle can run code); convert it to ` +
        `.safetensors first`,
    );
  }
  const helper = options.configFrom ? await openDiffusersFolder(options.configFrom) : undefined;
  const source: ModelSource = await openModelSource(path, {
    predictionType: options.predictionType,
    configs: helper
      ? {
        unet: helper.configs.unet as ModelConfigs["unet"],
        vae: helper.configs.vae as ModelConfigs["vae"],
        text_encoder: helper.configs.text_encoder as ModelConfigs["text_encoder"],
        scheduler: helper.configs.scheduler as ModelConfigs["scheduler"],
      }
      : undefined,
  }).catch((e) => {
    throw unrecognisedHint(e);
  });
  return { source, helper };
}

/** openModelSource's advice for an unrecognised single file, in loadPipeline's own options. */
function unrecognisedHint(e: unknown): unknown {
  const advice = /pass the model's configs explicitly with \{ configs: .*\}$/;
  if (!(e instanceof Error) || !advice.test(e.message)) return e;
  return new Error(
    e.message.replace(
      advice,
      `pass { configFrom: "a diffusers folder with this model's configs and tokenizer" } ` +
        `(gen.ts: --config-from DIR)`,
    ),
    { cause: e },
  );
}

function chooseDType(rt: Runtime, want: "auto" | DType, weights: string | undefined): DType {
  if (want === "auto") return rt.gpu.hasF16 && weights !== "F32" ? "f16" : "f32";
  rt.assertDType(want);
  return want;
}

async function openTokenizer(
  path: string,
  source: ModelSource,
  options: LoadPipelineOptions,
  helperRoot: string | undefined,
): Promise<ClipTokenizer> {
  if (options.tokenizer) {
    const settings = source.configs.tokenizer as { pad_token?: string } | undefined;
    return await loadTokenizer(options.tokenizer, { padToken: settings?.pad_token });
  }
  if (source.kind === "diffusers") return await loadTokenizer(`${source.folder.root}/tokenizer`);
  if (helperRoot) return await loadTokenizer(`${helperRoot}/tokenizer`);
  throw new Error(
    `${path} is a single file and carries no tokenizer: pass { tokenizer: "path/to/` +
      `bpe_simple_vocab_16e6.txt.gz" } (OpenAI CLIP's merges file) or a tokenizer folder, or ` +
      `{ configFrom: "a diffusers folder of the same family" }`,
  );
}
