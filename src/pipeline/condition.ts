/**
 * Image conditioning for `sampleLatents`: img2img and inpainting as diffusers'
 * `StableDiffusionImg2ImgPipeline` and `StableDiffusionInpaintPipeline` prepare them — the init
 * image encoded by the VAE (a sample of its latent distribution), the binarised mask at image and
 * latent size, the masked image's latents for 9-channel inpainting U-Nets, and the schedule's begin
 * index from `strength`. Every Gaussian draw goes through the run's generator in diffusers' order.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import type { RgbaImage } from "../io/png.ts";
import { binary, lincomb } from "../ops/elementwise.ts";
import { concatChannels } from "../ops/layout.ts";
import type { Rng } from "../rng/torch_randn.ts";
import type { Scheduler } from "../schedulers/mod.ts";
import { latentFactor, type Pipeline } from "./load.ts";

/**
 * The strength a run uses: the given one, else diffusers' defaults — 0.8 for img2img, 1 for
 * inpainting.
 *
 * @example
 * ```ts
 * import { defaultStrength } from "@denoise/sd/pipeline";
 * console.log(defaultStrength({}), defaultStrength({ mask: true })); // 0.8 1
 * ```
 */
export function defaultStrength(options: { strength?: number; mask?: unknown }): number {
  return options.strength ?? (options.mask ? 1 : 0.8);
}

/**
 * diffusers' `get_timesteps`: how many of `steps` a `strength` keeps (`int(steps·strength)`,
 * at most `steps`) and the call the run starts at (`(steps − kept)·order`).
 *
 * @example
 * ```ts
 * import { strengthSchedule } from "@denoise/sd/pipeline";
 * console.log(strengthSchedule(4, 0.6, 2)); // { kept: 2, begin: 4 }
 * ```
 */
export function strengthSchedule(
  steps: number,
  strength: number,
  order: number,
): { kept: number; begin: number } {
  if (typeof strength !== "number" || !(strength > 0 && strength <= 1)) {
    throw new RangeError(`strength must be a number in (0, 1], got ${strength}`);
  }
  const kept = Math.min(Math.trunc(steps * strength), steps);
  if (kept < 1) {
    throw new RangeError(
      `strength ${strength} of ${steps} steps leaves no step to run (int(steps·strength) = 0): ` +
        `raise the strength to at least ${(1 / steps).toFixed(3)} or the steps`,
    );
  }
  return { kept, begin: (steps - kept) * order };
}

/**
 * An RGBA image as the VAE's input, `[3, H, W]` planes of `2·(byte/255) − 1` (alpha ignored), in
 * float32 as diffusers' image processor; `keep` (H·W, 1 = keep) zeroes the pixels to repaint
 * (mid-grey), as the inpainting pipeline's masked image.
 *
 * @example
 * ```ts
 * import { imageToChw } from "@denoise/sd/pipeline";
 * const chw = imageToChw({ width: 1, height: 1, data: new Uint8Array([255, 0, 128, 255]) });
 * console.log(chw); // [1, -1, 0.003921…]
 * ```
 */
export function imageToChw(image: RgbaImage, keep?: Float32Array): Float32Array {
  const { width: w, height: h, data } = image;
  const plane = w * h;
  const chw = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.fround(Math.fround(2 * Math.fround(data[i * 4 + c] / 255)) - 1);
      chw[c * plane + i] = keep ? v * keep[i] : v;
    }
  }
  return chw;
}

/** {@link imageToChw} uploaded as `[1, 3, H, W]` in the VAE's dtype. */
function imageTensor(pipe: Pipeline, image: RgbaImage, keep?: Float32Array): Tensor {
  return pipe.rt.upload(imageToChw(image, keep), [1, 3, image.height, image.width], {
    dtype: pipe.vae.dtype,
  });
}

/**
 * The repaint mask of an RGBA image, binarised as diffusers' mask processor does: PIL's
 * grayscale (`L = (19595·R + 38470·G + 7471·B + 32768) >> 16`), then `L/255 ≥ 0.5` → 1.
 *
 * @example
 * ```ts
 * import { binaryMask } from "@denoise/sd/pipeline";
 * const m = binaryMask({ width: 2, height: 1, data: new Uint8Array([255, 255, 255, 255, 0, 0, 0, 255]) });
 * console.log(m); // [1, 0]
 * ```
 */
export function binaryMask(mask: RgbaImage): Float32Array {
  const n = mask.width * mask.height;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [mask.data[i * 4], mask.data[i * 4 + 1], mask.data[i * 4 + 2]];
    const l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
    out[i] = l / 255 >= 0.5 ? 1 : 0;
  }
  return out;
}

/**
 * `F.interpolate(mask, size=(h, w), mode="nearest")` for an integer factor `f`: latent pixel
 * (i, j) takes image pixel (f·i, f·j).
 *
 * @example
 * ```ts
 * import { maskToLatent } from "@denoise/sd/pipeline";
 * console.log(maskToLatent(new Float32Array([1, 0, 0, 0]), 2, 2)); // [1]
 * ```
 */
export function maskToLatent(mask: Float32Array, width: number, f: number): Float32Array {
  const w = width / f, h = mask.length / width / f;
  const out = new Float32Array(w * h);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) out[i * w + j] = mask[i * f * width + j * f];
  }
  return out;
}

/**
 * The VAE's sample of an image's latent distribution, scaled for the U-Net:
 * `scaling_factor·(mean + std·ε)`, ε drawn from `rng` (diffusers' `latent_dist.sample(generator)`).
 */
function encodeSample(pipe: Pipeline, image: Tensor, rng: Rng): Tensor {
  const rt = pipe.rt;
  return rt.scope(() => {
    const { mean, std } = pipe.vae.encode(image); // [1, L, h, w] each
    const shape = [...mean.shape];
    const f32 = (t: Tensor) => lincomb([t], [1], { out: rt.empty(shape) });
    const eps = rt.upload(rng.randn(shape), shape);
    const spread = binary(f32(std), eps, { op: "mul" }); // std·ε, rounded as diffusers
    const sample = lincomb([f32(mean), spread], [1, 1], { out: rt.empty(shape) });
    const s = Number(pipe.configs.vae.scaling_factor ?? 0.18215);
    return lincomb([sample], [s], { out: rt.empty(shape) });
  });
}

/** What {@link prepareConditioning} gives `sampleLatents`. */
export interface Conditioning {
  /** The call the run starts at (diffusers' `begin_index`). */
  begin: number;
  /** The start latents, f32 `[1, L, h, w]`. */
  latents: Tensor;
  /** The init image's scaled latents (img2img, 4-channel inpainting), f32. */
  imageLatents?: Tensor;
  /** The first noise draw (reused for the 4-channel blend), f32. */
  noise?: Tensor;
  /** The latent-size mask broadcast over the latent channels, f32 (4-channel inpainting). */
  blendMask?: Tensor;
  /** cat(mask, masked-image latents) `[1, 1 + L, h, w]` in the U-Net dtype (9-channel U-Nets). */
  unetExtra?: Tensor;
  /** Frees every tensor but `latents`. */
  dispose(): void;
}

/** Inputs of {@link prepareConditioning}. */
export interface ConditioningInputs {
  /** The init image, `width × height`. */
  image: RgbaImage;
  /** The repaint mask (inpainting), same size. */
  mask?: RgbaImage;
  /** How much of the schedule to rerun (0, 1]. */
  strength: number;
  /** The run's step count. */
  steps: number;
}

/**
 * Encodes the init image (and mask) and computes the start latents and begin index, drawing
 * from `rng` in diffusers' order: img2img — the image's sample, the noise; inpainting — the
 * image's sample (4-channel U-Nets or strength < 1 only), the noise, the masked image's sample.
 * Resets `scheduler` to the begin index.
 *
 * @example
 * ```ts no-run
 * import { decodePng, encodePrompt, loadPipeline, sampleLatents } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15", { vaeEncoder: true });
 * const embeds = await encodePrompt(pipe, "a watercolor fox");
 * const image = decodePng(await Deno.readFile("fox.png"));
 * for await (const s of sampleLatents(pipe, embeds, { image, strength: 0.6, seed: 1 })) {
 *   console.log(s.index, s.total);
 * }
 * ```
 */
export function prepareConditioning(
  pipe: Pipeline,
  scheduler: Scheduler,
  inputs: ConditioningInputs & { rng: Rng; shape: number[] },
): Conditioning {
  const { image, mask, rng, shape } = inputs;
  const rt = pipe.rt;
  const { begin } = strengthSchedule(inputs.steps, inputs.strength, scheduler.order);
  const unetChannels = pipe.configs.unet.in_channels;
  const latentChannels = pipe.configs.vae.latent_channels;
  const inpaint9 = unetChannels === latentChannels * 2 + 1;
  if (mask && unetChannels !== latentChannels && !inpaint9) {
    throw new Error(`the U-Net takes ${unetChannels} channels: not an inpainting layout`);
  }
  scheduler.reset(begin);
  const fullNoise = inputs.strength === 1 && mask !== undefined;
  const parts = rt.scope(() => {
    // 1. the init image's latents (img2img; inpainting with a 4-channel U-Net or strength < 1)
    const imageLatents = !mask || !inpaint9 || !fullNoise
      ? encodeSample(pipe, imageTensor(pipe, image), rng)
      : undefined;
    // 2. the noise, and the start latents: noise·σ_init (inpainting at strength 1) or add_noise
    const noise = rt.upload(rng.randn(shape), shape);
    const [a, b] = fullNoise ? [0, scheduler.initNoiseSigma] : scheduler.noiseCoefs(begin);
    const latents = fullNoise
      ? lincomb([noise], [b], { out: rt.empty(shape) })
      : lincomb([imageLatents!, noise], [a, b], { out: rt.empty(shape) });
    if (!mask) return { latents, imageLatents, noise };
    // 3. the mask at image and latent size; the masked image's latents — diffusers encodes them
    //    (one draw) for both layouts; a 4-channel U-Net never reads them, so only the draw is made
    const full = binaryMask(mask);
    const small = maskToLatent(full, image.width, latentFactor(pipe)); // [h·w]
    const [, , h, w] = shape;
    if (inpaint9) {
      const keep = full.map((m) => (m < 0.5 ? 1 : 0));
      const masked = encodeSample(pipe, imageTensor(pipe, image, keep), rng); // [1, L, h, w]
      const m = rt.upload(small, [1, 1, h, w], { dtype: pipe.dtype });
      const ml = lincomb([masked], [1], { out: rt.empty(shape, pipe.dtype) });
      return { latents, imageLatents, noise, unetExtra: concatChannels(m, ml) }; // [1, 1 + L, h, w]
    }
    rng.randn(shape);
    const broad = new Float32Array(latentChannels * h * w);
    for (let c = 0; c < latentChannels; c++) broad.set(small, c * h * w);
    return { latents, imageLatents, noise, blendMask: rt.upload(broad, shape) };
  });
  return {
    begin,
    ...parts,
    dispose() {
      for (const t of [parts.imageLatents, parts.noise, parts.unetExtra, parts.blendMask]) {
        t?.dispose();
      }
    },
  };
}
