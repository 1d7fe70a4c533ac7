/**
 * Helpers the notebooks share: Observable Plot charts rendered to SVG on a linkedom DOM, and RGBA
 * images (grids, nearest-neighbour upscaling, latent channels, heat-map overlays) shown inline as
 * PNG through `Deno.jupyter` (the `show*` functions run inside `deno jupyter` only).
 *
 * @example
 * ```ts
 * import { Plot, showChart } from "./plot.ts";
 * await showChart({ marks: [Plot.lineY([1, 3, 2, 5])], height: 200 });
 * ```
 *
 * @module
 */
// deno-lint-ignore-file no-import-prefix
import * as Plot from "npm:@observablehq/plot@0.6.17";
import { DOMParser } from "npm:linkedom@0.18.12";
import { color, interpolateInferno } from "npm:d3@7.9.2";
import { encodePng, type RgbaImage } from "../src/io/png.ts";

/**
 * Observable Plot itself, for the marks and transforms of a chart.
 *
 * @example
 * ```ts
 * import { Plot, showChart } from "./plot.ts";
 * await showChart({ marks: [Plot.barY([3, 1, 2]), Plot.ruleY([0])] });
 * ```
 */
export { Plot };

/**
 * The DOM document the charts are built in (linkedom: no browser needed); {@link chartSvgs} passes
 * it to Plot.
 *
 * @example
 * ```ts
 * import { document, Plot } from "./plot.ts";
 * const svg = Plot.plot({ marks: [Plot.lineY([1, 2])], document });
 * ```
 */
export const document: Plot.PlotOptions["document"] = new DOMParser().parseFromString(
  "<!DOCTYPE html><html><body></body></html>",
  "text/html",
) as unknown as Plot.PlotOptions["document"];

/**
 * Renders a chart to SVG markup: one SVG, or each SVG of the `<figure>` Plot wraps a chart in when
 * it has a title or caption (their HTML text is left out). Plot's legends need a canvas, which
 * linkedom lacks: label lines and cells with text marks instead.
 *
 * @example
 * ```ts
 * import { chartSvgs, Plot } from "./plot.ts";
 * const [svg] = chartSvgs({ marks: [Plot.dot([[1, 2], [3, 4]])] });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 */
export function chartSvgs(options: Plot.PlotOptions): string[] {
  const el = Plot.plot({ ...options, document });
  if (el.tagName.toLowerCase() === "svg") return [el.outerHTML];
  const svgs = [...el.querySelectorAll("svg")].map((s) => s.outerHTML);
  if (svgs.length === 0) {
    throw new Error("Plot returned a figure without an SVG: give the chart some marks");
  }
  return svgs;
}

/**
 * Renders a chart and displays it in the notebook as `image/svg+xml` (see {@link chartSvgs}).
 *
 * @example
 * ```ts
 * import { Plot, showChart } from "./plot.ts";
 * await showChart({ marks: [Plot.lineY([1, 3, 2, 5])], y: { grid: true } });
 * ```
 */
export async function showChart(options: Plot.PlotOptions): Promise<void> {
  for (const svg of chartSvgs(options)) {
    await Deno.jupyter.display({ "image/svg+xml": svg }, { raw: true });
  }
}

/** Base64 of a PNG-encoded image. */
function pngBase64(image: RgbaImage): string {
  return encodePng(image).toBase64();
}

/**
 * Displays an RGBA image as `image/png`, upscaled `scale` times (nearest neighbour, default 1).
 *
 * @example
 * ```ts
 * import { showImage } from "./plot.ts";
 * const data = new Uint8Array(8 * 8 * 4).fill(255);
 * await showImage({ width: 8, height: 8, data }, { scale: 4 });
 * ```
 */
export async function showImage(
  image: RgbaImage,
  options: { scale?: number } = {},
): Promise<void> {
  const scaled = upscale(image, options.scale ?? 1);
  await Deno.jupyter.display({ "image/png": pngBase64(scaled) }, { raw: true });
}

/**
 * One picture of a {@link showGallery}, with the caption under it.
 *
 * @example
 * ```ts
 * import type { GalleryItem } from "./plot.ts";
 * const item: GalleryItem = { image: { width: 1, height: 1, data: new Uint8Array(4) }, label: "t=0" };
 * ```
 */
export interface GalleryItem {
  /** The picture. */
  image: RgbaImage;
  /** Its caption. */
  label: string;
}

/**
 * Displays captioned pictures in a grid, as one SVG (a Plot `image` mark over PNG data URLs and a
 * `text` mark for the captions). Each picture is drawn `size` pixels wide (default: its own
 * width), pixelated when enlarged.
 *
 * @example
 * ```ts
 * import { showGallery } from "./plot.ts";
 * const img = { width: 4, height: 4, data: new Uint8Array(64).fill(200) };
 * await showGallery([{ image: img, label: "a" }, { image: img, label: "b" }], { size: 64 });
 * ```
 */
export async function showGallery(
  items: GalleryItem[],
  options: { columns?: number; size?: number } = {},
): Promise<void> {
  if (items.length === 0) throw new Error("showGallery needs at least one picture");
  const columns = Math.min(options.columns ?? items.length, items.length);
  const rows = Math.ceil(items.length / columns);
  const first = items[0].image;
  const w = options.size ?? first.width;
  const h = Math.round(w * first.height / first.width);
  const cellW = w + 8, cellH = h + 22;
  const placed = items.map((it, i) => ({
    src: `data:image/png;base64,${pngBase64(it.image)}`,
    label: it.label,
    x: (i % columns) * cellW + cellW / 2,
    y: Math.floor(i / columns) * cellH + h / 2 + 2,
  }));
  await showChart({
    width: columns * cellW,
    height: rows * cellH,
    margin: 0,
    x: { domain: [0, columns * cellW], axis: null },
    y: { domain: [rows * cellH, 0], axis: null },
    marks: [
      Plot.image(placed, {
        x: "x",
        y: "y",
        src: "src",
        width: w,
        height: h,
        imageRendering: "pixelated",
      }),
      Plot.text(placed, { x: "x", y: "y", text: "label", dy: h / 2 + 10, fontSize: 11 }),
    ],
  });
}

/**
 * Scales an image up by a whole factor, nearest neighbour.
 *
 * @example
 * ```ts
 * import { upscale } from "./plot.ts";
 * const big = upscale({ width: 2, height: 2, data: new Uint8Array(16) }, 8); // 16 × 16
 * ```
 */
export function upscale(image: RgbaImage, factor: number): RgbaImage {
  if (!Number.isInteger(factor) || factor < 1) {
    throw new Error(`upscale factor must be a whole number ≥ 1, got ${factor}`);
  }
  if (factor === 1) return image;
  const width = image.width * factor, height = image.height * factor;
  const data = new Uint8Array(width * height * 4);
  const src = new Uint32Array(image.data.buffer, image.data.byteOffset, image.width * image.height);
  const dst = new Uint32Array(data.buffer);
  for (let y = 0; y < height; y++) {
    const row = Math.floor(y / factor) * image.width;
    for (let x = 0; x < width; x++) dst[y * width + x] = src[row + Math.floor(x / factor)];
  }
  return { width, height, data };
}

/**
 * Lays images of one size out in a grid with `gap` white pixels between them (default 4).
 *
 * @example
 * ```ts
 * import { tile } from "./plot.ts";
 * const img = { width: 8, height: 8, data: new Uint8Array(256) };
 * const sheet = tile([img, img, img, img], { columns: 2 }); // 20 × 20
 * ```
 */
export function tile(
  images: RgbaImage[],
  options: { columns?: number; gap?: number } = {},
): RgbaImage {
  if (images.length === 0) throw new Error("tile needs at least one image");
  const { width: w, height: h } = images[0];
  for (const img of images) {
    if (img.width !== w || img.height !== h) {
      throw new Error(`tile takes images of one size: ${w}×${h} and ${img.width}×${img.height}`);
    }
  }
  const columns = Math.min(options.columns ?? images.length, images.length);
  const rows = Math.ceil(images.length / columns);
  const gap = options.gap ?? 4;
  const width = columns * w + (columns - 1) * gap;
  const height = rows * h + (rows - 1) * gap;
  const data = new Uint8Array(width * height * 4).fill(255);
  images.forEach((img, i) => {
    const x0 = (i % columns) * (w + gap), y0 = Math.floor(i / columns) * (h + gap);
    for (let y = 0; y < h; y++) {
      data.set(img.data.subarray(y * w * 4, (y + 1) * w * 4), ((y0 + y) * width + x0) * 4);
    }
  });
  return { width, height, data };
}

/**
 * A row-major grid of numbers (a latent channel, an attention map).
 *
 * @example
 * ```ts
 * import type { ValueGrid } from "./plot.ts";
 * const grid: ValueGrid = { values: new Float32Array(6), width: 3, height: 2 };
 * ```
 */
export interface ValueGrid {
  /** `width × height` values, row by row. */
  values: ArrayLike<number>;
  /** Columns. */
  width: number;
  /** Rows. */
  height: number;
}

function checkGrid(what: string, grid: ValueGrid): { lo: number; span: number } {
  const { values, width, height } = grid;
  if (values.length !== width * height) {
    throw new Error(`${what}: ${values.length} values do not fill ${width}×${height}`);
  }
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    lo = Math.min(lo, values[i]);
    hi = Math.max(hi, values[i]);
  }
  return { lo, span: hi > lo ? hi - lo : 1 };
}

/**
 * Maps a grid of values to grey levels, black at their minimum and white at their maximum.
 *
 * @example
 * ```ts
 * import { grayscale } from "./plot.ts";
 * const img = grayscale({ values: new Float32Array([0, 1, 2, 3]), width: 2, height: 2 });
 * ```
 */
export function grayscale(grid: ValueGrid): RgbaImage {
  const { lo, span } = checkGrid("grayscale", grid);
  const { values, width, height } = grid;
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < values.length; i++) {
    const g = Math.round(255 * (values[i] - lo) / span);
    data.set([g, g, g, 255], i * 4);
  }
  return { width, height, data };
}

/**
 * The channels of latents `[1, C, h, w]` side by side, each in grey levels of its own range.
 *
 * @example
 * ```ts
 * import { latentChannels } from "./plot.ts";
 * const img = latentChannels(new Float32Array(4 * 16 * 16), [1, 4, 16, 16]); // 4 tiles
 * ```
 */
export function latentChannels(latents: Float32Array, shape: readonly number[]): RgbaImage {
  const [b, c, h, w] = shape;
  if (shape.length !== 4 || b !== 1 || latents.length !== c * h * w) {
    throw new Error(`latentChannels takes latents [1, C, h, w], got [${shape}]`);
  }
  const planes = Array.from(
    { length: c },
    (_, i) =>
      grayscale({ values: latents.subarray(i * h * w, (i + 1) * h * w), width: w, height: h }),
  );
  return tile(planes, { gap: 1 });
}

/**
 * Blends a heat map over an image: the grid's values are normalised to [0, 1], upsampled
 * bilinearly onto the image, coloured with d3's inferno scale and mixed in with weight `alpha`
 * (default 0.6).
 *
 * @example
 * ```ts
 * import { overlay } from "./plot.ts";
 * const img = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 4).fill(255) };
 * const hot = overlay(img, { values: new Float32Array([0, 1, 1, 0]), width: 2, height: 2 });
 * ```
 */
export function overlay(
  image: RgbaImage,
  heat: ValueGrid,
  options: { alpha?: number } = {},
): RgbaImage {
  const { lo, span } = checkGrid("overlay", heat);
  const { values, width: mw, height: mh } = heat;
  const alpha = options.alpha ?? 0.6;
  const palette = Array.from({ length: 256 }, (_, i) => color(interpolateInferno(i / 255))!.rgb());
  const { width, height } = image;
  const data = new Uint8Array(image.data);
  const at = (x: number, y: number) => values[y * mw + x];
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * mh / height - 0.5, 0), mh - 1);
    const y0 = Math.floor(fy), y1 = Math.min(y0 + 1, mh - 1), ty = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * mw / width - 0.5, 0), mw - 1);
      const x0 = Math.floor(fx), x1 = Math.min(x0 + 1, mw - 1), tx = fx - x0;
      const v = (1 - ty) * ((1 - tx) * at(x0, y0) + tx * at(x1, y0)) +
        ty * ((1 - tx) * at(x0, y1) + tx * at(x1, y1));
      const c = palette[Math.round(255 * (v - lo) / span)];
      const i = (y * width + x) * 4;
      data[i] = Math.round((1 - alpha) * data[i] + alpha * c.r);
      data[i + 1] = Math.round((1 - alpha) * data[i + 1] + alpha * c.g);
      data[i + 2] = Math.round((1 - alpha) * data[i + 2] + alpha * c.b);
    }
  }
  return { width, height, data };
}
