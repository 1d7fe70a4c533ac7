/**
 * `gen.ts`'s img2img and inpainting inputs: `--init-img` and `--mask` read and decoded before the
 * model loads, fitted to the run's size (`--resize stretch|crop`, or refused with the sizes and
 * the fix), and the run's size taken from the image when `-W`/`-H` are not given.
 *
 * @module
 */
import { decodePng, type RgbaImage } from "../io/png.ts";
import { fitInitImages } from "../io/resize.ts";
import { UsageError } from "./flags.ts";

/** The flags this reads (a slice of `gen.ts`'s values). */
export interface ImageFlags {
  /** `--init-img`. */
  initImg?: string;
  /** `--mask`. */
  mask?: string;
  /** `--resize`. */
  resize?: "stretch" | "crop";
  /** `--width`. */
  width?: number;
  /** `--height`. */
  height?: number;
}

/** What {@link readInitImages} gives the run. */
export interface InitImages {
  /** The init image at the run's size. */
  image?: RgbaImage;
  /** The mask at the run's size. */
  mask?: RgbaImage;
  /** The run's width (the image's, when `-W` was not given). */
  width?: number;
  /** The run's height. */
  height?: number;
}

async function readPng(path: string, flag: string): Promise<RgbaImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new UsageError(`${flag} ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return decodePng(bytes);
  } catch (e) {
    throw new UsageError(
      `${flag} ${path} is not a PNG this reader decodes (${(e as Error).message}): convert it to ` +
        "PNG first",
      { cause: e },
    );
  }
}

/**
 * Reads `--init-img` (and `--mask`) and fits them to the run's size: `-W`/`-H` when given, else
 * the image's own size (rounded down to a multiple of `factor` with `--resize`). A size that does
 * not fit without `--resize` is refused with both sizes and the fix.
 *
 * @example
 * ```ts
 * import { readInitImages } from "./images.ts";
 * const { image, width, height } = await readInitImages(
 *   { initImg: "tests/fixtures/png/image.png", resize: "crop", width: 64, height: 64 },
 *   { spelled: {}, factor: 8 },
 * );
 * ```
 */
export async function readInitImages(
  flags: ImageFlags,
  o: { spelled: Partial<Record<keyof ImageFlags, string>>; factor: number },
): Promise<InitImages> {
  const name = (k: keyof ImageFlags) => o.spelled[k] ?? `--${k === "initImg" ? "init-img" : k}`;
  if (flags.mask !== undefined && flags.initImg === undefined) {
    throw new UsageError(`${name("mask")} needs ${name("initImg")}: inpainting repaints an image`);
  }
  if (flags.initImg === undefined) {
    if (flags.resize !== undefined) {
      throw new UsageError(`${name("resize")} fits an init image: pass ${name("initImg")} too`);
    }
    return { width: flags.width, height: flags.height };
  }
  const image = await readPng(flags.initImg, name("initImg"));
  const mask = flags.mask === undefined ? undefined : await readPng(flags.mask, name("mask"));
  try {
    return fitInitImages({ image, mask }, {
      width: flags.width,
      height: flags.height,
      resize: flags.resize,
      factor: o.factor,
      names: {
        image: `${name("initImg")} ${flags.initImg}`,
        mask: `${name("mask")} ${flags.mask}`,
        resize: `${name("resize")} stretch or crop`,
        size: "-W/-H",
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message, { cause: e });
  }
}
