/**
 * `gen.ts`'s flags: one row each, with our name first and the spellings people bring from
 * stable-diffusion.cpp (`-p`, `-n`, `-s`, `-W`, `-H`, `-o`, `--cfg-scale`, `-b`,
 * `--sampling-method`) and AUTOMATIC1111 (sampler names such as "DPM++ 2M Karras"). A row parses and
 * validates its value, so every mistake a flag alone can show is refused before the model loads.
 * To add a flag, add a row (see {@link ./flags.ts} for the builders) and read
 * `values.<key>` in `gen.ts`.
 *
 * @example
 * ```ts
 * import { FLAGS } from "./options.ts";
 * import { parseFlags } from "./flags.ts";
 * const { values } = parseFlags(FLAGS, ["-p", "a fox", "-s", "12345678901234567890"]);
 * console.log(values.seed); // 12345678901234567890n
 * ```
 *
 * @module
 */
import { flag } from "./flags.ts";
import { resolveSchedulerName, SIGMA_SCHEDULES } from "../schedulers/mod.ts";

/** The largest seed torch's `manual_seed` takes: 2⁶⁴ − 1. */
export const MAX_SEED = 2n ** 64n - 1n;

/** A seed: a whole number 0 … 2⁶⁴−1 as a bigint, or `undefined` for -1 (random, as sd.cpp and A1111). */
export function parseSeed(raw: string): bigint | undefined {
  const t = raw.trim();
  if (t === "-1") return undefined;
  if (!/^\+?\d+$/.test(t)) {
    throw new Error(
      `${
        JSON.stringify(raw)
      } is not a seed: use a whole number 0 … ${MAX_SEED}, or -1 for a random one`,
    );
  }
  const v = BigInt(t.replace(/^\+/, ""));
  if (v > MAX_SEED) {
    throw new Error(`${t} is beyond torch's seeds (0 … ${MAX_SEED}); -1 picks a random one`);
  }
  return v;
}

/** A size in pixels (the model's factor is checked once its config is read). */
function parseSize(raw: string): number {
  const v = Number(raw);
  if (!/^\+?\d+$/.test(raw.trim()) || !Number.isSafeInteger(v) || v < 1 || v > 16384) {
    throw new Error(
      `${JSON.stringify(raw)} is not a size: use a whole number of pixels, 1 … 16384`,
    );
  }
  return v;
}

/** A sampler name, checked against the scheduler registry (ours, A1111's, sd.cpp's, diffusers'). */
function parseSampler(raw: string): string {
  resolveSchedulerName(raw);
  return raw;
}

/** sd.cpp's `--clip-skip -1` (and 0) mean "the model's default": 1 here. */
function parseClipSkip(raw: string): number {
  const t = raw.trim();
  if (t === "-1" || t === "0") return 1;
  const v = Number(t);
  if (!/^\+?\d+$/.test(t) || !Number.isSafeInteger(v) || v < 1 || v > 48) {
    throw new Error(
      `${
        JSON.stringify(raw)
      } is not a clip skip: use 1 (the last layer) … 48, or -1 for the default`,
    );
  }
  return v;
}

/**
 * The flag table of `gen.ts`, grouped for `--help`. Keys are the names `gen.ts` reads.
 *
 * @example
 * ```ts
 * import { FLAGS } from "./options.ts";
 * console.log(FLAGS.cfg.also); // ["cfg-scale"]
 * ```
 */
export const FLAGS = {
  // Prompt
  prompt: flag.text({
    name: "prompt",
    short: "p",
    group: "Prompt",
    help: "what to draw (or give it as the first words, without a flag)",
  }),
  negative: flag.text({
    name: "negative",
    short: "n",
    also: ["negative-prompt"],
    group: "Prompt",
    help: "what to steer away from",
    default: "",
  }),
  // Model
  model: flag.path({
    name: "model",
    short: "m",
    group: "Model",
    help:
      "a diffusers folder or a single-file .safetensors (default: the bundled models/denoise-emoji)",
    env: "DENOISE_MODEL",
  }),
  tokenizer: flag.path({
    name: "tokenizer",
    group: "Model",
    help: "a tokenizer folder or bpe_simple_vocab_16e6.txt.gz (single files carry none)",
  }),
  configFrom: flag.path({
    name: "config-from",
    group: "Model",
    help: "a diffusers folder whose configs (and tokenizer) serve a non-standard single file",
  }),
  dtype: flag.choice({
    name: "dtype",
    group: "Model",
    help: "compute precision; auto = f16 where the GPU has shader-f16 and the weights are half",
    choices: ["auto", "f16", "f32"] as const,
    default: "auto",
  }),
  clipSkip: flag.custom({
    name: "clip-skip",
    group: "Model",
    help: "A1111's clip skip: 1 = the last CLIP layer, 2 = the one before; -1 = default",
    value: "N",
    parse: parseClipSkip,
    default: 1,
  }),
  taesd: flag.path({
    name: "taesd",
    group: "Model",
    help: "decode with TAESD (taesd_decoder.safetensors) instead of the VAE: fast, rougher",
  }),
  // Add-ons
  vae: flag.path({
    name: "vae",
    group: "Add-ons",
    help: "an external VAE replacing the model's: a diffusers AutoencoderKL folder or a " +
      ".safetensors VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors)",
  }),
  loraModelDir: flag.path({
    name: "lora-model-dir",
    also: ["lora-dir"],
    group: "Add-ons",
    help: "the folder <lora:NAME:WEIGHT> prompt tags resolve in (NAME.safetensors)",
  }),
  embdDir: flag.path({
    name: "embd-dir",
    also: ["embeddings-dir"],
    group: "Add-ons",
    help: "a folder of textual-inversion .safetensors embeddings, triggered by their file " +
      "names in a prompt",
  }),
  // Sampling
  steps: flag.int({
    name: "steps",
    also: ["sample-steps"],
    group: "Sampling",
    help: "denoising steps",
    min: 1,
    max: 1000,
    default: 20,
  }),
  cfg: flag.number({
    name: "cfg",
    also: ["cfg-scale"],
    group: "Sampling",
    help: "classifier-free guidance scale; ≤ 1 turns guidance off",
    min: 0,
    max: 100,
    default: 7.5,
  }),
  sampler: flag.custom({
    name: "sampler",
    also: ["sampling-method"],
    group: "Sampling",
    value: "NAME",
    help: "ours (euler_a), sd.cpp's or A1111's (\"DPM++ 2M Karras\"), any case; default: the " +
      "model's own scheduler",
    parse: parseSampler,
  }),
  schedule: flag.choice({
    name: "schedule",
    group: "Sampling",
    help: "σ schedule of a sigma sampler (euler, dpm++2m, heun, …): discrete (the model's), " +
      'karras or exponential (A1111\'s "Schedule type")',
    choices: SIGMA_SCHEDULES,
  }),
  seed: flag.custom({
    name: "seed",
    short: "s",
    group: "Sampling",
    value: "N",
    help: "torch's seed, 0 … 2^64−1; -1 = random (always printed)",
    parse: parseSeed,
  }),
  width: flag.custom({
    name: "width",
    short: "W",
    group: "Sampling",
    value: "N",
    help: "image width in pixels, a multiple of the VAE's factor (8 for SD); default: the model's",
    parse: parseSize,
  }),
  height: flag.custom({
    name: "height",
    short: "H",
    group: "Sampling",
    value: "N",
    help: "image height in pixels",
    parse: parseSize,
  }),
  count: flag.int({
    name: "count",
    short: "b",
    also: ["batch-count"],
    group: "Sampling",
    help: "how many images, with seeds seed, seed+1, …",
    min: 1,
    max: 100000,
    default: 1,
  }),
  // Image to image
  initImg: flag.path({
    name: "init-img",
    short: "i",
    group: "Image to image",
    help: "img2img: start from this PNG instead of noise (its size is the run's unless -W/-H)",
  }),
  mask: flag.path({
    name: "mask",
    group: "Image to image",
    help: "inpainting: a PNG of the init image's size; white (≥ 50 % grey) is repainted",
  }),
  strength: flag.number({
    name: "strength",
    also: ["denoising-strength"],
    group: "Image to image",
    help: "how much of the schedule reruns from the image, (0, 1]; default 0.8, inpainting 1",
    min: 0,
    max: 1,
  }),
  resize: flag.choice({
    name: "resize",
    group: "Image to image",
    help: "fit an init image (and mask) of another size: stretch it, or crop to the aspect ratio",
    choices: ["stretch", "crop"] as const,
  }),
  // Output
  out: flag.path({
    name: "out",
    short: "o",
    also: ["output"],
    group: "Output",
    help: "NAME.png, or a folder for numbered NNNNN-SEED.png files; never overwritten",
    default: "out/",
  }),
  overwrite: flag.switch({
    name: "overwrite",
    group: "Output",
    help: "allow replacing an existing NAME.png",
  }),
  vaeTiling: flag.switch({
    name: "vae-tiling",
    group: "Output",
    help: "decode the VAE in overlapping tiles with blended seams, to save GPU memory; without " +
      "it, tiling starts by itself when the whole image would pass the GPU's buffer limit",
  }),
  vaeTileSize: flag.int({
    name: "vae-tile-size",
    group: "Output",
    help: "VAE tile side in pixels (default: the VAE's training size, 512 for SD)",
    min: 8,
    max: 16384,
  }),
  // Other
  profile: flag.switch({
    name: "profile",
    group: "Other",
    help: "print a per-step, per-kernel time table",
  }),
  help: flag.switch({ name: "help", short: "h", group: "Other", help: "this text" }),
};
