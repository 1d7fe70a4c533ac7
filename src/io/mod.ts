/**
 * File formats: PNG (encode with text chunks, decode, safe writes, A1111 infotext) and NumPy
 * `.npy` arrays.
 *
 * @example
 * ```ts
 * import { encodePng, parseNpy } from "@denoise/sd/io";
 * const png = encodePng({ width: 1, height: 1, data: new Uint8Array([255, 0, 0, 255]) });
 * console.log(png.length, typeof parseNpy);
 * ```
 *
 * @module
 */
export * from "./png.ts";
export * from "./npy.ts";
export * from "./resize.ts";
export * from "./files.ts";
