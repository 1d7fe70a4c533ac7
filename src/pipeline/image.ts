/**
 * `GeneratedImage`: a picture with the settings that made it. It encodes itself as a PNG with
 * A1111's `parameters` text chunk, saves itself without overwriting, and shows itself in Deno's
 * Jupyter kernel: a notebook cell that ends with an image displays it.
 *
 * @module
 */
import { encodePng, type RgbaImage, writePngFile } from "../io/png.ts";

/** What Deno's Jupyter kernel calls to display an object: a MIME bundle. */
const JUPYTER_DISPLAY: unique symbol = Symbol.for("Jupyter.display") as never;

/** The settings a {@link GeneratedImage} was made with. */
export interface GenerationInfo {
  /** The prompt. */
  prompt: string;
  /** The seed of its initial noise. */
  seed: bigint;
  /** A1111's infotext (prompt, negative prompt, steps, sampler, CFG, seed, size, model, …). */
  parameters: string;
}

/**
 * An 8-bit RGBA image from {@link generate}, with the settings that made it.
 *
 * @example
 * ```ts no-run
 * import { generate, loadPipeline } from "@denoise/sd";
 * using pipe = await loadPipeline("path/to/stable-diffusion-v1-5");
 * const [image] = await generate(pipe, "a watercolor fox", { seed: 42 });
 * console.log(image.parameters); // "a watercolor fox\nSteps: 20, Sampler: …, Seed: 42, …"
 * await image.save("fox.png"); // never replaces an existing file
 * image; // as the last line of a notebook cell, this shows the picture
 * ```
 */
export class GeneratedImage implements RgbaImage, GenerationInfo {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** `width · height · 4` bytes: R, G, B, A per pixel. */
  readonly data: Uint8Array;
  /** The prompt. */
  readonly prompt: string;
  /** The seed of its initial noise. */
  readonly seed: bigint;
  /** A1111's infotext, written into the PNG's `parameters` chunk. */
  readonly parameters: string;

  /** Wraps decoded pixels and the settings that made them. */
  constructor(image: RgbaImage, info: GenerationInfo) {
    if (image.data.length !== image.width * image.height * 4) {
      throw new Error(
        `an image of ${image.width}×${image.height} needs ${image.width * image.height * 4} ` +
          `RGBA bytes, got ${image.data.length}`,
      );
    }
    this.width = image.width;
    this.height = image.height;
    this.data = image.data;
    this.prompt = info.prompt;
    this.seed = info.seed;
    this.parameters = info.parameters;
  }

  /** The PNG file's bytes, with the infotext in a `parameters` text chunk (as A1111 writes). */
  png(): Uint8Array {
    return encodePng(this, { text: { parameters: this.parameters } });
  }

  /**
   * Writes the PNG to `path`; an existing file is never replaced unless `overwrite` is set (see
   * `writePngFile`).
   */
  async save(path: string | URL, options: { overwrite?: boolean } = {}): Promise<void> {
    await writePngFile(path, this, {
      text: { parameters: this.parameters },
      overwrite: options.overwrite,
    });
  }

  /** Deno's Jupyter kernel shows the image (`image/png`) when a cell ends with it. */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "image/png": this.png().toBase64(), "text/plain": this.toString() };
  }

  /** A one-line description: size, seed and prompt. */
  toString(): string {
    return `GeneratedImage ${this.width}×${this.height}, seed ${this.seed}: ${this.prompt}`;
  }
}
