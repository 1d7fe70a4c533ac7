/**
 * Resizing RGBA images for img2img and inpainting inputs: a separable Lanczos-3 filter (PIL's
 * `LANCZOS`, which diffusers' image processor uses), widened when shrinking so that it averages
 * instead of aliasing. Two ways to reach a target size, as AUTOMATIC1111 offers them: `stretch`
 * ("Just resize") and `crop` ("Crop and resize": scale to cover, then cut the centre).
 *
 * @module
 */
import type { RgbaImage } from "./png.ts";

/**
 * Options of {@link resizeImage}.
 *
 * @example
 * ```ts
 * import type { ResizeOptions } from "@denoise/sd/io";
 * const o: ResizeOptions = { width: 512, height: 512, mode: "crop" };
 * ```
 */
export interface ResizeOptions {
  /** Target width in pixels. */
  width: number;
  /** Target height in pixels. */
  height: number;
  /** `stretch` (default): scale each axis independently; `crop`: keep the aspect, cut the centre. */
  mode?: "stretch" | "crop";
}

function lanczos3(x: number): number {
  if (x === 0) return 1;
  if (x <= -3 || x >= 3) return 0;
  const px = Math.PI * x;
  return (3 * Math.sin(px) * Math.sin(px / 3)) / (px * px);
}

/** Filter taps for each of `outSize` outputs over the source window `[start, start + span)`. */
function weights(inSize: number, outSize: number, start: number, span: number) {
  const scale = span / outSize;
  const support = 3 * Math.max(1, scale);
  const filterScale = Math.max(1, scale);
  return Array.from({ length: outSize }, (_, o) => {
    const center = start + (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support));
    const hi = Math.min(inSize, Math.ceil(center + support));
    const w: number[] = [];
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const v = lanczos3((i + 0.5 - center) / filterScale);
      w.push(v);
      sum += v;
    }
    return { lo, w: w.map((v) => v / sum) };
  });
}

/**
 * Resizes an RGBA image with a Lanczos-3 filter.
 *
 * @example
 * ```ts
 * import { resizeImage } from "@denoise/sd/io";
 * const small = { width: 2, height: 1, data: new Uint8Array([0, 0, 0, 255, 255, 255, 255, 255]) };
 * const big = resizeImage(small, { width: 4, height: 2 });
 * console.log(big.width, big.height); // 4 2
 * ```
 */
export function resizeImage(image: RgbaImage, options: ResizeOptions): RgbaImage {
  const { width: W, height: H } = options;
  const mode = options.mode ?? "stretch";
  for (const [k, v] of [["width", W], ["height", H]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`resize ${k} must be ≥ 1, got ${v}`);
  }
  if (mode !== "stretch" && mode !== "crop") {
    throw new RangeError(`resize mode must be "stretch" or "crop", got ${JSON.stringify(mode)}`);
  }
  const { width: w, height: h, data } = image;
  if (w === W && h === H) return { width: w, height: h, data: data.slice() };
  // the source window: all of it, or the centred part with the target's aspect ratio
  let [x0, y0, sw, sh] = [0, 0, w, h];
  if (mode === "crop") {
    const s = Math.max(W / w, H / h);
    [sw, sh] = [W / s, H / s];
    [x0, y0] = [(w - sw) / 2, (h - sh) / 2];
  }
  const wx = weights(w, W, x0, sw), wy = weights(h, H, y0, sh);
  // 1. horizontal pass into floats [h, W, 4]
  const tmp = new Float32Array(h * W * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < W; x++) {
      const { lo, w: k } = wx[x];
      for (let c = 0; c < 4; c++) {
        let acc = 0;
        for (let i = 0; i < k.length; i++) acc += k[i] * data[(y * w + lo + i) * 4 + c];
        tmp[(y * W + x) * 4 + c] = acc;
      }
    }
  }
  // 2. vertical pass, rounded and clamped to bytes
  const out = new Uint8Array(H * W * 4);
  for (let y = 0; y < H; y++) {
    const { lo, w: k } = wy[y];
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < 4; c++) {
        let acc = 0;
        for (let i = 0; i < k.length; i++) acc += k[i] * tmp[((lo + i) * W + x) * 4 + c];
        out[(y * W + x) * 4 + c] = Math.min(255, Math.max(0, Math.round(acc)));
      }
    }
  }
  return { width: W, height: H, data: out };
}

/**
 * How {@link fitInitImages} names things in its errors: the CLI passes its flags (`-i a.png`,
 * `--resize stretch or crop`, `-W/-H`), the library its option names (the defaults).
 */
export interface FitNames {
  /** The init image (default `image`). */
  image?: string;
  /** The mask (default `mask`). */
  mask?: string;
  /** How to ask for resizing (default `resize: "stretch" or "crop"`). */
  resize?: string;
  /** How to give the size (default `width/height`). */
  size?: string;
}

/** Options of {@link fitInitImages}. */
export interface FitOptions {
  /** The run's width, when given (default: the image's). */
  width?: number;
  /** The run's height, when given (default: the image's). */
  height?: number;
  /** Fit an image of another size (`stretch` or `crop`); without it a mismatch is refused. */
  resize?: "stretch" | "crop";
  /** The sizes the model takes are multiples of this (the VAE's latent factor). */
  factor: number;
  /** The names the errors use. */
  names?: FitNames;
}

/**
 * img2img and inpainting inputs at the run's size, as `gen.ts -i/--mask/--resize` and
 * `generate({ image, mask, resize })` take them: the size is `width`/`height` when given, else the
 * image's own (rounded down to a multiple of `factor` when resizing); an image or mask of another
 * size is resized with `resize`, or refused with both sizes and the fix.
 *
 * @example
 * ```ts
 * import { fitInitImages } from "@denoise/sd/io";
 * const image = { width: 100, height: 60, data: new Uint8Array(100 * 60 * 4) };
 * const fitted = fitInitImages({ image }, { resize: "crop", factor: 8 });
 * console.log(fitted.width, fitted.height); // 96 56
 * ```
 */
export function fitInitImages(
  images: { image: RgbaImage; mask?: RgbaImage },
  options: FitOptions,
): { image: RgbaImage; mask?: RgbaImage; width: number; height: number } {
  const { image, mask } = images;
  const { resize, factor: f } = options;
  const names = {
    image: "image",
    mask: "mask",
    resize: 'resize: "stretch" or "crop"',
    size: "width/height",
    ...options.names,
  };
  const down = (v: number) => Math.max(f, v - (v % f));
  const width = options.width ?? (resize ? down(image.width) : image.width);
  const height = options.height ?? (resize ? down(image.height) : image.height);
  const odd = (options.width === undefined && width % f !== 0) ||
    (options.height === undefined && height % f !== 0);
  if (odd) {
    throw new RangeError(
      `${names.image} is ${width}×${height}, not a multiple of ${f} (this model's VAE factor): ` +
        `pass ${names.resize} (to ${down(width)}×${down(height)}), or ${names.size}`,
    );
  }
  const given = options.width !== undefined || options.height !== undefined;
  const fit = (img: RgbaImage, name: string): RgbaImage => {
    if (img.width === width && img.height === height) return img;
    if (!resize) {
      throw new RangeError(
        `${name} is ${img.width}×${img.height} but the run is ${width}×${height}` +
          (given ? "" : ` (a multiple of ${f})`) + `: pass ${names.resize}` +
          (given ? `, or drop ${names.size} to use the image's size` : `, or ${names.size}`),
      );
    }
    return resizeImage(img, { width, height, mode: resize });
  };
  return {
    image: fit(image, names.image),
    mask: mask && fit(mask, names.mask),
    width,
    height,
  };
}
