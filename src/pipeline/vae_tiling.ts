/**
 * Tiled VAE decoding, as diffusers' `AutoencoderKL.enable_tiling()` and stable-diffusion.cpp's
 * `--vae-tiling`: the latents are cut into overlapping square tiles (a quarter overlap), each tile
 * is decoded on its own, and the seams are blended linearly — each tile with the one above, then
 * with the one to its left, in place and in that order, exactly as diffusers' `tiled_decode`. A
 * decode that would need a buffer beyond 90 % of the GPU's binding limit is tiled automatically,
 * with the largest tiles that fit in it.
 *
 * Each tile's GroupNorms see only that tile, so a tiled image differs slightly from an untiled one
 * (as in diffusers); the blend hides the seams.
 *
 * @example
 * ```ts
 * import { planVaeTiles } from "@denoise/sd/pipeline";
 * const config = { block_out_channels: [128, 256, 512, 512], sample_size: 512 };
 * const plan = planVaeTiles(config, { height: 128, width: 136, tiling: true });
 * console.log(plan?.tile, plan?.count); // 64 9
 * ```
 *
 * @module
 */

/** The VAE config fields tiling reads. */
export interface VaeTilingConfig {
  /** Channels per level (the decoder runs them in reverse). */
  block_out_channels: readonly number[];
  /** The image size the VAE was trained at (its default tile, in pixels). */
  sample_size?: number;
  /** Latent channels. */
  latent_channels?: number;
}

/** How a decode is cut into tiles. */
export interface VaeTilePlan {
  /** Tile side in latent pixels. */
  tile: number;
  /** Distance between tile origins in latent pixels (`tile · (1 − overlap)`). */
  stride: number;
  /** The image-space scale factor (8 for SD). */
  factor: number;
  /** How many tiles. */
  count: number;
  /** The largest buffer one tile needs, in bytes. */
  tileBytes: number;
  /** The largest buffer the whole image would need, in bytes. */
  wholeBytes: number;
}

/** Options of {@link planVaeTiles}. */
export interface VaeTilingOptions {
  /** Latent height. */
  height: number;
  /** Latent width. */
  width: number;
  /**
   * `true`: tile (when the latents are larger than one tile); `false`: never; `"auto"` (default):
   * when a buffer of the whole decode would exceed `maxBindingBytes`, with the largest tiles that
   * fit.
   */
  tiling?: boolean | "auto";
  /** Tile side in image pixels (default: the VAE's `sample_size`, 512 for SD), a multiple of 4 × the factor. */
  tileSize?: number;
  /** The GPU's largest storage binding in bytes (`maxStorageBufferBindingSize`). */
  maxBindingBytes?: number;
  /** Bytes per activation value: 4 for an f32 VAE (default), 2 for f16. */
  bytesPerValue?: number;
}

/** The share of the GPU's binding limit a decode plans to use. */
export const HEADROOM = 0.9;

/** diffusers' `tile_overlap_factor`. */
export const TILE_OVERLAP = 0.25;

/**
 * The largest activation buffer the VAE decoder allocates for `h × w` latents (batch 1): at each
 * level, the widest of its input and output channels at that level's resolution, and the upsampler's
 * output at twice it.
 *
 * @example
 * ```ts
 * import { vaeDecodeBytes } from "@denoise/sd/pipeline";
 * const sd = { block_out_channels: [128, 256, 512, 512] };
 * console.log(vaeDecodeBytes(sd, { height: 64, width: 64 })); // 268435456 (256 ch × 512² × f32)
 * ```
 */
export function vaeDecodeBytes(
  config: VaeTilingConfig,
  size: { height: number; width: number; bytesPerValue?: number },
): number {
  const rev = [...config.block_out_channels].reverse();
  let values = 0;
  let pixels = size.height * size.width;
  rev.forEach((out, i) => {
    const input = i === 0 ? rev[0] : rev[i - 1];
    values = Math.max(values, Math.max(input, out) * pixels);
    if (i < rev.length - 1) {
      pixels *= 4;
      values = Math.max(values, out * pixels); // the upsampler's conv output
    }
  });
  return values * (size.bytesPerValue ?? 4);
}

/**
 * Decides whether and how to tile a decode: `undefined` means decode whole. Throws when even
 * the smallest tile cannot fit the binding limit.
 *
 * @example
 * ```ts
 * import { planVaeTiles } from "@denoise/sd/pipeline";
 * const tiny = { block_out_channels: [32, 32, 64, 64], sample_size: 128 };
 * // 1088×1024 on the tiny VAE needs a 142 MB buffer; llvmpipe binds 128 MiB
 * const plan = planVaeTiles(tiny, { height: 128, width: 136, maxBindingBytes: 2 ** 27 });
 * console.log(plan?.tile, plan?.count); // 64 9
 * ```
 */
export function planVaeTiles(
  config: VaeTilingConfig,
  options: VaeTilingOptions,
): VaeTilePlan | undefined {
  const { height, width, tiling = "auto" } = options;
  const factor = 2 ** (config.block_out_channels.length - 1);
  const bytes = options.bytesPerValue ?? 4;
  // a tenth of the limit is kept for buffers the estimate does not count
  const limit = (options.maxBindingBytes ?? Infinity) * HEADROOM;
  const wholeBytes = vaeDecodeBytes(config, { height, width, bytesPerValue: bytes });
  if (tiling === false || (tiling === "auto" && wholeBytes <= limit)) return undefined;
  const pixels = options.tileSize ?? config.sample_size ?? 512;
  if (!Number.isInteger(pixels) || pixels < 4 * factor || pixels % (4 * factor) !== 0) {
    throw new RangeError(
      `VAE tile size ${pixels} px is not a multiple of ${4 * factor} (4 × the VAE's factor ` +
        `${factor}, so a quarter overlap falls on whole latent pixels)`,
    );
  }
  let tile = pixels / factor;
  const fits = (t: number) =>
    vaeDecodeBytes(config, { height: t, width: t, bytesPerValue: bytes }) <= limit;
  while (!fits(tile) && tile % 8 === 0 && tile > 4) tile /= 2;
  if (tiling === "auto" && options.tileSize === undefined) {
    // automatic: the largest tiles that fit, for the fewest seams
    while (2 * tile < Math.max(height, width) && fits(2 * tile)) tile *= 2;
  }
  if (!fits(tile)) {
    throw new RangeError(
      `even a ${tile * factor}-pixel VAE tile needs ${
        vaeDecodeBytes(config, { height: tile, width: tile, bytesPerValue: bytes })
      } bytes, beyond this GPU's ${options.maxBindingBytes}-byte binding limit: decode with TAESD ` +
        `instead`,
    );
  }
  if (height <= tile && width <= tile) return undefined;
  const stride = Math.round(tile * (1 - TILE_OVERLAP));
  const count = Math.ceil(height / stride) * Math.ceil(width / stride);
  const tileBytes = vaeDecodeBytes(config, { height: tile, width: tile, bytesPerValue: bytes });
  return { tile, stride, factor, count, tileBytes, wholeBytes };
}

/** One decoded tile: `[3, h, w]` values, channel-major. */
export interface DecodedTile {
  /** Height in pixels. */
  height: number;
  /** Width in pixels. */
  width: number;
  /** `3 · height · width` values. */
  data: Float32Array;
}

/**
 * Decodes `[C, h, w]` latents tile by tile with `decodeTile` (which receives `[C, th, tw]` latents
 * and returns the decoded `[3, th·f, tw·f]`), blends the overlaps as diffusers' `tiled_decode`
 * (`blend_v` with the tile above, then `blend_h` with the tile to the left, both in place) and
 * assembles the `[3, h·f, w·f]` image.
 *
 * @example
 * ```ts
 * import { tiledDecode } from "@denoise/sd/pipeline";
 * const plan = { tile: 4, stride: 3, factor: 1, count: 4, tileBytes: 0, wholeBytes: 0 };
 * const latents = { channels: 3, height: 6, width: 6, data: new Float32Array(108).fill(1) };
 * const image = await tiledDecode(latents, plan, (t) => t); // an identity "decoder"
 * console.log(image.height, image.width, image.data.every((v) => v === 1)); // 6 6 true
 * ```
 */
export async function tiledDecode(
  latents: { channels: number; height: number; width: number; data: Float32Array },
  plan: VaeTilePlan,
  decodeTile: (
    tile: { channels: number; height: number; width: number; data: Float32Array },
  ) => Promise<DecodedTile> | DecodedTile,
): Promise<DecodedTile> {
  const { channels: c, height: h, width: w } = latents;
  const { tile, stride, factor: f } = plan;
  const rows: DecodedTile[][] = [];
  for (let i = 0; i < h; i += stride) {
    const row: DecodedTile[] = [];
    for (let j = 0; j < w; j += stride) {
      const th = Math.min(tile, h - i), tw = Math.min(tile, w - j);
      const data = new Float32Array(c * th * tw);
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < th; y++) {
          const src = ch * h * w + (i + y) * w + j;
          data.set(latents.data.subarray(src, src + tw), (ch * th + y) * tw);
        }
      }
      const out = await decodeTile({ channels: c, height: th, width: tw, data });
      if (out.height !== th * f || out.width !== tw * f) {
        throw new Error(
          `tiledDecode: a ${th}×${tw} latent tile decoded to ${out.height}×${out.width}, not ` +
            `${th * f}×${tw * f}`,
        );
      }
      row.push(out);
    }
    rows.push(row);
  }
  const blend = Math.round(tile * f * TILE_OVERLAP); // diffusers' blend_extent
  const limit = tile * f - blend; // diffusers' row_limit
  const H = h * f, W = w * f;
  const image = new Float32Array(3 * H * W);
  let oy = 0;
  rows.forEach((row, ri) => {
    let ox = 0, rowHeight = 0;
    row.forEach((t, ci) => {
      if (ri > 0) blendV(rows[ri - 1][ci], t, blend);
      if (ci > 0) blendH(row[ci - 1], t, blend);
      const ch = Math.min(limit, t.height), cw = Math.min(limit, t.width);
      for (let k = 0; k < 3; k++) {
        for (let y = 0; y < ch; y++) {
          const src = (k * t.height + y) * t.width;
          image.set(t.data.subarray(src, src + cw), (k * H + oy + y) * W + ox);
        }
      }
      ox += cw;
      rowHeight = ch;
    });
    oy += rowHeight;
  });
  return { height: H, width: W, data: image };
}

/** diffusers' `blend_v`: the top rows of `b` fade in from the bottom rows of `a` (above it). */
function blendV(a: DecodedTile, b: DecodedTile, extent: number): void {
  const e = Math.min(a.height, b.height, extent);
  const w = Math.min(a.width, b.width);
  for (let k = 0; k < 3; k++) {
    for (let y = 0; y < e; y++) {
      const t = y / e;
      const ar = (k * a.height + a.height - e + y) * a.width, br = (k * b.height + y) * b.width;
      for (let x = 0; x < w; x++) {
        b.data[br + x] = Math.fround(a.data[ar + x] * (1 - t) + b.data[br + x] * t);
      }
    }
  }
}

/** diffusers' `blend_h`: the left columns of `b` fade in from the right columns of `a`. */
function blendH(a: DecodedTile, b: DecodedTile, extent: number): void {
  const e = Math.min(a.width, b.width, extent);
  const h = Math.min(a.height, b.height);
  for (let k = 0; k < 3; k++) {
    for (let y = 0; y < h; y++) {
      const ar = (k * a.height + y) * a.width + a.width - e, br = (k * b.height + y) * b.width;
      for (let x = 0; x < e; x++) {
        const t = x / e;
        b.data[br + x] = Math.fround(a.data[ar + x] * (1 - t) + b.data[br + x] * t);
      }
    }
  }
}
