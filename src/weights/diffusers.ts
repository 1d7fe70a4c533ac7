/**
 * Reads a diffusers pipeline folder: `model_index.json`, the `unet/`, `vae/`, `text_encoder/`,
 * `tokenizer/` and `scheduler/` configs, and the paths of each component's `.safetensors`
 * weights (also the `.fp16.safetensors` variants). Missing parts get errors that say what to do.
 *
 * @module
 */
import type { Component } from "./names.ts";
import { filePath } from "./safetensors.ts";
import { checkModelConfigs } from "./config_check.ts";

/** Tokenizer files of a diffusers folder. */
export interface TokenizerFiles {
  /** `vocab.json` (token → id). */
  vocab: string;
  /** `merges.txt` (BPE merges). */
  merges: string;
  /** `tokenizer_config.json`, when present. */
  config?: string;
  /** `special_tokens_map.json`, when present. */
  specialTokensMap?: string;
}

/** A parsed diffusers pipeline folder. */
export interface DiffusersFolder {
  /** The folder's path. */
  root: string;
  /** The parsed `model_index.json`. */
  modelIndex: Record<string, unknown>;
  /** Each component's parsed config (`scheduler` from `scheduler_config.json`). */
  configs: {
    unet: Record<string, unknown>;
    vae: Record<string, unknown>;
    text_encoder: Record<string, unknown>;
    scheduler: Record<string, unknown>;
    tokenizer?: Record<string, unknown>;
  };
  /** The `.safetensors` weights file of each component. */
  weights: Record<Component, string>;
  /** The tokenizer's files. */
  tokenizer: TokenizerFiles;
}

/** Options for {@link openDiffusersFolder}. */
export interface DiffusersFolderOptions {
  /** Prefer `*.fp16.safetensors` weights (the plain file is the fallback, and vice versa). */
  variant?: "fp16";
}

const WEIGHT_BASE: Record<Component, string> = {
  unet: "diffusion_pytorch_model",
  vae: "diffusion_pytorch_model",
  text_encoder: "model",
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function listDir(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(path)) names.push(e.name);
  return names.sort();
}

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${path} is missing: the ${what} is incomplete — re-download the model`);
    }
    throw e;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `${path} is not valid JSON (${(e as Error).message}) — re-download the ${what}`,
    );
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${path} must hold a JSON object — re-download the ${what}`);
  }
  return value as Record<string, unknown>;
}

async function componentDir(root: string, name: string): Promise<string> {
  const dir = `${root}/${name}`;
  if (!(await exists(dir))) {
    throw new Error(
      `${root} has no ${name}/ folder: the diffusers pipeline is incomplete — re-download it ` +
        `(every Stable Diffusion pipeline needs unet/, vae/, text_encoder/, tokenizer/, scheduler/)`,
    );
  }
  return dir;
}

async function findWeights(dir: string, component: Component, variant?: "fp16"): Promise<string> {
  const base = WEIGHT_BASE[component];
  const plain = `${base}.safetensors`, half = `${base}.fp16.safetensors`;
  for (const name of variant === "fp16" ? [half, plain] : [plain, half]) {
    if (await exists(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  const found = await listDir(dir);
  const pickle = found.find((n) => n.startsWith(base) && /\.(bin|ckpt|pt|pth)$/.test(n));
  if (pickle) {
    throw new Error(
      `${dir}/${pickle} is a PyTorch pickle file, which is refused (pickle can run code): ` +
        `download the ${plain} version of the model, or convert it with diffusers ` +
        `(DiffusionPipeline.from_pretrained(...).save_pretrained(..., safe_serialization=True))`,
    );
  }
  throw new Error(
    `${dir} has no ${plain} (nor ${half}); it holds [${found.join(", ")}] — re-download the ` +
      `${component} weights`,
  );
}

/**
 * Opens a diffusers pipeline folder: parses `model_index.json` and every component config and
 * locates the weights files (nothing large is read).
 *
 * @example
 * ```ts no-run
 * import { openDiffusersFolder } from "@denoise/sd/weights";
 * const folder = await openDiffusersFolder("models/stable-diffusion-v1-5", { variant: "fp16" });
 * console.log(folder.weights.unet, folder.configs.scheduler._class_name);
 * ```
 */
export async function openDiffusersFolder(
  path: string | URL,
  options: DiffusersFolderOptions = {},
): Promise<DiffusersFolder> {
  const root = filePath(path).replace(/\/+$/, "");
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(root);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${root} does not exist: check the path (or download the model first)`);
    }
    throw e;
  }
  if (!info.isDirectory) {
    throw new Error(
      `${root} is a file, not a diffusers folder: open single-file checkpoints with ` +
        `openSafetensors / openModelSource instead`,
    );
  }
  if (!(await exists(`${root}/model_index.json`))) {
    throw new Error(
      `${root} has no model_index.json, so it is not a diffusers pipeline folder: point at the ` +
        `folder that holds model_index.json (or at a single .safetensors checkpoint)`,
    );
  }
  const modelIndex = await readJson(`${root}/model_index.json`, "diffusers pipeline");
  for (const name of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) {
    if (!(name in modelIndex)) {
      throw new Error(
        `${root}/model_index.json lists no "${name}": this is not a Stable Diffusion pipeline ` +
          `(or the file is damaged) — re-download it`,
      );
    }
  }
  const dirs = {
    unet: await componentDir(root, "unet"),
    vae: await componentDir(root, "vae"),
    text_encoder: await componentDir(root, "text_encoder"),
    tokenizer: await componentDir(root, "tokenizer"),
    scheduler: await componentDir(root, "scheduler"),
  };
  const configs: DiffusersFolder["configs"] = {
    unet: await readJson(`${dirs.unet}/config.json`, "unet"),
    vae: await readJson(`${dirs.vae}/config.json`, "vae"),
    text_encoder: await readJson(`${dirs.text_encoder}/config.json`, "text encoder"),
    scheduler: await readJson(`${dirs.scheduler}/scheduler_config.json`, "scheduler"),
  };
  checkModelConfigs(configs, {
    unet: `${dirs.unet}/config.json`,
    vae: `${dirs.vae}/config.json`,
    text_encoder: `${dirs.text_encoder}/config.json`,
  });
  const tokConfig = `${dirs.tokenizer}/tokenizer_config.json`;
  const specials = `${dirs.tokenizer}/special_tokens_map.json`;
  if (await exists(tokConfig)) configs.tokenizer = await readJson(tokConfig, "tokenizer");
  const tokenizer: TokenizerFiles = {
    vocab: `${dirs.tokenizer}/vocab.json`,
    merges: `${dirs.tokenizer}/merges.txt`,
    ...(configs.tokenizer ? { config: tokConfig } : {}),
    ...((await exists(specials)) ? { specialTokensMap: specials } : {}),
  };
  for (const f of [tokenizer.vocab, tokenizer.merges]) {
    if (!(await exists(f))) {
      throw new Error(`${f} is missing: the tokenizer is incomplete — re-download the model`);
    }
  }
  const weights: Record<Component, string> = {
    unet: await findWeights(dirs.unet, "unet", options.variant),
    vae: await findWeights(dirs.vae, "vae", options.variant),
    text_encoder: await findWeights(dirs.text_encoder, "text_encoder", options.variant),
  };
  return { root, modelIndex, configs, weights, tokenizer };
}
