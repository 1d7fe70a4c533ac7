/**
 * `generate`: text to images in one call, built on the three composable steps (`encodePrompt`,
 * `sampleLatents`, `decodeLatents`) with the options `gen.ts` takes.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import { loadTaesdDecoder, type TaesdDecoder } from "../models/taesd.ts";
import { decodePng, formatA1111Parameters, type RgbaImage } from "../io/png.ts";
import { fitInitImages } from "../io/resize.ts";
import { a1111Name, a1111ScheduleType, type SchedulerConfig } from "../schedulers/mod.ts";
import { addonInfotext } from "./addons.ts";
import { decodeLatents } from "./decode.ts";
import { encodePrompt } from "./encode.ts";
import { GeneratedImage } from "./image.ts";
import { latentFactor, type Pipeline } from "./load.ts";
import type { LoraSpec } from "./lora.ts";
import { defaultStrength } from "./condition.ts";
import { checkSampleOptions, sampleLatents, type SampleOptions, schedulerFor } from "./sample.ts";

/** The largest seed torch's `manual_seed` takes: 2⁶⁴ − 1. */
const MAX_SEED = 2n ** 64n - 1n;

/** Where {@link generate} is: image `image` of `count`, step `index` of `total`. */
export interface GenerateProgress {
  /** The image being made, from 0. */
  image: number;
  /** How many images the call makes. */
  count: number;
  /** The step just finished, from 0. */
  index: number;
  /** Steps per image. */
  total: number;
  /** The image's seed. */
  seed: bigint;
}

/** Options for {@link generate}: the settings of `gen.ts`. */
export interface GenerateOptions {
  /** What the picture should not show (default: empty). */
  negativePrompt?: string;
  /** Denoising steps (default 20). */
  steps?: number;
  /** Classifier-free guidance scale (default 7.5); ≤ 1 runs without the negative prompt. */
  guidance?: number;
  /**
   * The sampler: a registry name (`"euler_a"`, `"dpmpp_2m"`, …), an A1111 name ("Euler a",
   * "DPM++ 2M Karras"), an sd.cpp name, a diffusers class name or scheduler config; default: the
   * model's own.
   */
  sampler?: string | SchedulerConfig;
  /** Karras noise levels, for the samplers that offer them. */
  karras?: boolean;
  /** The σ schedule of a sigma sampler: `"discrete"`, `"karras"` or `"exponential"`. */
  schedule?: SampleOptions["schedule"];
  /** DDIM's η. */
  eta?: number;
  /** The first image's seed, 0 … 2⁶⁴−1 (default: random); image k uses `seed + k`, as A1111. */
  seed?: number | bigint;
  /** Image width in pixels (default: the init image's, else the model's native size). */
  width?: number;
  /** Image height in pixels (default: the init image's, else the model's native size). */
  height?: number;
  /** How many images (default 1), each from its own seed. */
  count?: number;
  /** CLIP skip, A1111's (1 = the last layer, the default). */
  clipSkip?: number;
  /**
   * LoRAs for this call, on top of the pipeline's (`applyLoras`, `loadPipeline({ loras })`) and of
   * the prompt's `<lora:NAME:WEIGHT>` tags; merged before encoding, no reload between calls.
   */
  loras?: LoraSpec[];
  /** The folder `<lora:NAME:…>` tags resolve in (default: the pipeline's `loraDir`). */
  loraDir?: string;
  /**
   * img2img: the init image, a PNG path or RGBA as `decodePng` returns it (gen.ts's `-i`); the
   * size defaults to the image's. Needs the VAE encoder: `loadPipeline(…, { vaeEncoder: true })`.
   */
  image?: string | RgbaImage;
  /** Inpainting: the mask, a PNG path or RGBA; white is repainted (gen.ts's `--mask`). */
  mask?: string | RgbaImage;
  /**
   * How much of the schedule reruns from the image, (0, 1]: `int(steps·strength)` steps (default
   * 0.8, with a mask 1), recorded as `Denoising strength` (gen.ts's `--strength`).
   */
  strength?: number;
  /**
   * An image or mask of another size than the run's is resized: `"stretch"` or `"crop"` (scale to
   * cover, cut the centre); without it the mismatch is refused (gen.ts's `--resize`).
   */
  resize?: "stretch" | "crop";
  /** Decode with TAESD (a path to `taesd_decoder.safetensors`, or a loaded decoder). */
  taesd?: string | TaesdDecoder;
  /** Stops between steps; the images finished so far are returned, an unfinished one is not. */
  signal?: AbortSignal;
  /** Called after every step. */
  onStep?: (progress: GenerateProgress) => void;
}

/**
 * Generates `count` images of `prompt` (default one), each a {@link GeneratedImage}: RGBA pixels
 * with the seed and A1111's infotext, which saves itself as a PNG and shows itself in a Deno
 * notebook. For previews, custom loops or latents, use `encodePrompt`, `sampleLatents` and
 * `decodeLatents`, which this is made of.
 *
 * @example
 * ```ts no-run
 * import { generate, loadPipeline } from "@denoise/sd";
 * using pipe = await loadPipeline("path/to/stable-diffusion-v1-5");
 * const images = await generate(pipe, "a lighthouse at dusk, oil painting", {
 *   negativePrompt: "blurry",
 *   steps: 25,
 *   guidance: 7,
 *   sampler: "DPM++ 2M Karras",
 *   seed: 42,
 *   count: 2, // seeds 42 and 43
 * });
 * for (const image of images) await image.save(`lighthouse-${image.seed}.png`);
 * ```
 *
 * @example img2img and inpainting
 * ```ts no-run
 * import { generate, loadPipeline } from "@denoise/sd";
 * using pipe = await loadPipeline("path/to/stable-diffusion-v1-5", { vaeEncoder: true });
 * const [redrawn] = await generate(pipe, "a watercolor harbour", {
 *   image: "harbour.png", // any size with resize: "crop" (or "stretch")
 *   strength: 0.6,
 *   resize: "crop",
 *   width: 512,
 *   height: 512,
 * });
 * const [boat] = await generate(pipe, "a red sailing boat", {
 *   image: redrawn,
 *   mask: "boat_mask.png", // white: repainted
 * });
 * await boat.save("harbour-boat.png");
 * ```
 */
export async function generate(
  pipe: Pipeline,
  prompt: string,
  options: GenerateOptions = {},
): Promise<GeneratedImage[]> {
  const count = options.count ?? 1;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`count must be a whole number ≥ 1, got ${count}`);
  }
  const seed0 = firstSeed(options.seed, count);
  const sampling: SampleOptions = {
    steps: options.steps,
    guidance: options.guidance,
    scheduler: options.sampler,
    karras: options.karras,
    schedule: options.schedule,
    eta: options.eta,
    ...await initImages(pipe, options),
    signal: options.signal,
  };
  checkSampleOptions(pipe, sampling); // refuses a bad size, sampler or strength before any work
  const scheduler = schedulerFor(pipe, sampling);
  const taesd = typeof options.taesd === "string"
    ? await loadTaesdDecoder(options.taesd, { runtime: pipe.rt, dtype: pipe.dtype })
    : options.taesd;
  try {
    using embeds = await encodePrompt(pipe, prompt, {
      negativePrompt: options.negativePrompt,
      clipSkip: options.clipSkip,
      loras: options.loras,
      loraDir: options.loraDir,
    });
    const addons = await addonInfotext(pipe, embeds);
    const images: GeneratedImage[] = [];
    for (let k = 0; k < count; k++) {
      const seed = seed0 + BigInt(k);
      let last: Tensor | undefined; // the latents the loop yielded last: ours once it ends
      let done = false;
      for await (const step of sampleLatents(pipe, embeds, { ...sampling, seed })) {
        last = step.latents;
        done = step.index === step.total - 1;
        options.onStep?.({ image: k, count, index: step.index, total: step.total, seed });
      }
      if (!done || !last) {
        last?.dispose();
        break; // aborted
      }
      using latents = last;
      const decoded = await decodeLatents(pipe, latents, { taesd });
      const parameters = formatA1111Parameters({
        prompt,
        negativePrompt: options.negativePrompt,
        steps: options.steps ?? 20,
        sampler: a1111Name(scheduler),
        scheduleType: a1111ScheduleType(scheduler),
        cfg: options.guidance ?? 7.5,
        seed,
        width: decoded.width,
        height: decoded.height,
        model: pipe.name,
        denoisingStrength: sampling.image && defaultStrength(sampling),
        clipSkip: options.clipSkip,
        ...addons,
      });
      images.push(new GeneratedImage(decoded, { prompt, seed, parameters }));
    }
    return images;
  } finally {
    if (taesd !== options.taesd) taesd?.dispose();
  }
}

/** The run's size, and the init image and mask read and fitted to it (as gen.ts's). */
async function initImages(
  pipe: Pipeline,
  options: GenerateOptions,
): Promise<Pick<SampleOptions, "width" | "height" | "image" | "mask" | "strength">> {
  const { width, height, strength } = options;
  if (options.image === undefined) {
    if (options.mask !== undefined) {
      throw new Error("mask needs image: inpainting repaints an image");
    }
    if (options.resize !== undefined) throw new Error("resize fits an init image: pass image too");
    return { width, height, strength };
  }
  if (!pipe.vae.encoder) {
    throw new Error(
      "img2img and inpainting encode the image with the VAE encoder: load the pipeline with " +
        "{ vaeEncoder: true }",
    );
  }
  const rgba = async (v: string | RgbaImage, what: string): Promise<RgbaImage> => {
    if (typeof v !== "string") return v;
    try {
      return decodePng(await Deno.readFile(v));
    } catch (e) {
      throw new Error(`${what} ${v}: ${(e as Error).message}`, { cause: e });
    }
  };
  const image = await rgba(options.image, "image");
  const mask = options.mask === undefined ? undefined : await rgba(options.mask, "mask");
  const factor = latentFactor(pipe);
  return {
    ...fitInitImages({ image, mask }, { width, height, resize: options.resize, factor }),
    strength,
  };
}

function firstSeed(seed: number | bigint | undefined, count: number): bigint {
  if (seed === undefined) return BigInt(crypto.getRandomValues(new Uint32Array(1))[0]);
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
    throw new RangeError(`seed ${seed} is not a whole number (pass a bigint beyond 2^53)`);
  }
  const s = BigInt(seed);
  if (s < 0n || s + BigInt(count - 1) > MAX_SEED) {
    throw new RangeError(
      `seeds ${s} … ${s + BigInt(count - 1)} are outside torch's 0 … ${MAX_SEED}`,
    );
  }
  return s;
}
