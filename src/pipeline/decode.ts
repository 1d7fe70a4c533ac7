/**
 * `decodeLatents`: latents to RGBA pixels with the pipeline's VAE (diffusers' rounding), or with a
 * TAESD decoder for speed.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import { lincomb } from "../ops/elementwise.ts";
import { loadTaesdDecoder, type TaesdDecoder } from "../models/taesd.ts";
import type { RgbaImage } from "../io/png.ts";
import { roundHalfEven } from "../schedulers/numeric.ts";
import { latentFactor, type Pipeline } from "./load.ts";
import { planVaeTiles, tiledDecode, type VaeTilePlan } from "./vae_tiling.ts";

export { planVaeTiles, type VaeTilePlan, type VaeTilingOptions } from "./vae_tiling.ts";

/** Options for {@link decodeLatents}. */
export interface DecodeOptions {
  /**
   * Decode with TAESD instead of the VAE: a path to `taesd_decoder.safetensors` (loaded for this
   * call and freed after it), or a loaded decoder (`loadTaesdDecoder`) to reuse across calls.
   */
  taesd?: string | TaesdDecoder;
  /**
   * Decode the VAE in overlapping tiles with blended seams (diffusers' `enable_tiling`, sd.cpp's
   * `--vae-tiling`): `"auto"` (default) when one buffer of the whole decode would exceed the GPU's
   * `maxStorageBufferBindingSize`, `true` whenever the latents are larger than one tile, `false`
   * never. See {@link planVaeTiles}.
   */
  tiling?: boolean | "auto";
  /** Tile side in image pixels (default: the VAE's `sample_size`; automatic tiling picks the largest that fits). */
  tileSize?: number;
  /** Called after each decoded tile. */
  onTile?: (done: number, total: number) => void;
}

/** A decoded image: RGBA bytes plus the raw float output. */
export interface DecodedImage extends RgbaImage {
  /** The image in [0, 1] before quantisation, `[H, W, 3]` float32 (diffusers' `image_float`). */
  float: Float32Array;
}

/**
 * Decodes `[1, 4, h, w]` latents to an fh × fw RGBA image (f = {@link latentFactor}, 8 for SD;
 * TAESD is always 8×): `clamp(x/2 + 0.5, 0, 1)`, then
 * `round(x·255)` (half to even, as NumPy), exactly as diffusers' image processor.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline } from "@denoise/sd";
 * import { encodePrompt } from "@denoise/sd";
 * import { sampleLatents } from "@denoise/sd";
 * import { decodeLatents } from "@denoise/sd";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * const embeds = await encodePrompt(pipe, "a red fox");
 * let last;
 * for await (const s of sampleLatents(pipe, embeds, { steps: 4, seed: 1 })) last = s.latents;
 * const image = await decodeLatents(pipe, last!);
 * console.log(image.width, image.height, image.data.length);
 * ```
 */
export async function decodeLatents(
  pipe: Pipeline,
  latents: Tensor,
  options: DecodeOptions = {},
): Promise<DecodedImage> {
  if (latents.shape.length !== 4 || latents.shape[0] !== 1) {
    throw new Error(`decodeLatents takes latents [1, C, h, w], got [${latents.shape}]`);
  }
  const [, , h, w] = latents.shape;
  if (options.taesd) {
    const taesd = typeof options.taesd === "string"
      ? await loadTaesdDecoder(options.taesd, { runtime: pipe.rt, dtype: pipe.dtype })
      : options.taesd;
    try {
      const x = lincomb([latents], [1], { out: pipe.rt.empty(latents.shape, taesd.dtype) });
      const img = taesd.decode(x); // [1, 3, 8h, 8w] in [0, 1]
      x.dispose();
      const host = await img.read();
      img.dispose();
      return toImage(host, 8 * h, 8 * w, (v) => v);
    } finally {
      if (taesd !== options.taesd) taesd.dispose();
    }
  }
  const scaling = Number(pipe.configs.vae.scaling_factor ?? 0.18215);
  const x = lincomb([latents], [1 / scaling], {
    out: pipe.rt.empty(latents.shape, pipe.vae.dtype),
  }); // [1, C, h, w]
  const f = latentFactor(pipe);
  const toPixels = (v: number) => Math.fround(Math.fround(v / 2) + 0.5);
  const plan = vaeTiles(pipe, latents.shape, options);
  if (!plan) {
    const img = pipe.vae.decode(x); // [1, 3, f·h, f·w] in about [-1, 1]
    x.dispose();
    const host = await img.read();
    img.dispose();
    return toImage(host, f * h, f * w, toPixels);
  }
  const host = await x.read(); // [1, C, h, w]
  x.dispose();
  let done = 0;
  const image = await tiledDecode(
    { channels: latents.shape[1], height: h, width: w, data: host },
    plan,
    async (tile) => {
      const shape = [1, tile.channels, tile.height, tile.width];
      const t = pipe.rt.upload(tile.data, shape, { dtype: pipe.vae.dtype });
      const img = pipe.vae.decode(t); // [1, 3, f·th, f·tw]
      t.dispose();
      const data = await img.read();
      img.dispose();
      options.onTile?.(++done, plan.count);
      return { height: f * tile.height, width: f * tile.width, data };
    },
  );
  return toImage(image.data, f * h, f * w, toPixels);
}

/**
 * How {@link decodeLatents} will cut latents of `shape` `[1, C, h, w]` into tiles with these
 * options, or `undefined` when it decodes them whole (and always for TAESD).
 *
 * @example
 * ```ts no-run
 * import { loadPipeline } from "@denoise/sd";
 * import { vaeTiles } from "@denoise/sd/pipeline";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * console.log(vaeTiles(pipe, [1, 4, 128, 136])?.count); // 9: 1088×1024 exceeds 128 MiB whole
 * ```
 */
export function vaeTiles(
  pipe: Pick<Pipeline, "configs" | "rt"> & { vae: { dtype: string } },
  shape: readonly number[],
  options: DecodeOptions = {},
): VaeTilePlan | undefined {
  if (options.taesd) return undefined;
  return planVaeTiles(pipe.configs.vae, {
    height: shape[2],
    width: shape[3],
    tiling: options.tiling,
    tileSize: options.tileSize,
    maxBindingBytes: pipe.rt.gpu.limits.maxStorageBufferBindingSize,
    bytesPerValue: pipe.vae.dtype === "f16" ? 2 : 4,
  });
}

/** NCHW `[1, 3, H, W]` floats → RGBA bytes, through `map` then clamp to [0, 1]. */
function toImage(
  chw: Float32Array,
  height: number,
  width: number,
  map: (v: number) => number,
): DecodedImage {
  const plane = height * width;
  const data = new Uint8Array(plane * 4);
  const float = new Float32Array(plane * 3);
  const bad = chw.subarray(0, 3 * plane).findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new Error(
      `the decoded image holds non-finite values (${chw[bad]} at value ${bad}): the sampling ` +
        `diverged — lower the guidance scale, or use f32 (--dtype f32 / { dtype: "f32" })`,
    );
  }
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(0, map(chw[c * plane + i])));
      float[i * 3 + c] = v;
      data[i * 4 + c] = roundHalfEven(Math.fround(v * 255));
    }
    data[i * 4 + 3] = 255;
  }
  return { width, height, data, float };
}
