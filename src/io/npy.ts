/**
 * A reader for NumPy `.npy` files (format versions 1–3, little-endian, C order), enough for the
 * reference fixtures: float32, float64, float16, int32, int64, uint8 and bool arrays.
 *
 * @module
 */

/** A NumPy array read from a `.npy` file. */
export interface NpyArray {
  /** The array's shape, outermost axis first. */
  shape: number[];
  /** The NumPy dtype descriptor, for example `<f4`. */
  dtype: string;
  /** The values, widened to float64-safe JS numbers where needed (int64 as Number). */
  data: Float32Array | Float64Array | Int32Array | Uint8Array | Float16Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

/**
 * Parses the bytes of a `.npy` file.
 *
 * @example
 * ```ts
 * import { parseNpy } from "@denoise/sd/io";
 * const arr = parseNpy(await Deno.readFile("tests/fixtures/dumps/tiny-sd15__pndm/latents_final.npy"));
 * console.log(arr.shape, arr.data.length);
 * ```
 */
export function parseNpy(bytes: Uint8Array): NpyArray {
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) {
      throw new Error("not a .npy file: the magic string \\x93NUMPY is missing");
    }
  }
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(headerStart, headerStart + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) {
    throw new Error(`.npy header is malformed: ${header}`);
  }
  if (fortran === "True") throw new Error(".npy arrays in Fortran order are not supported");
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = headerStart + headerLen;
  const body = bytes.slice(start); // copy: aligned and detached from the file buffer
  const need = (n: number) => {
    if (body.byteLength < count * n) {
      throw new Error(`.npy body is truncated: ${body.byteLength} bytes for ${count} × ${n}`);
    }
  };
  switch (descr) {
    case "<f4":
      need(4);
      return { shape, dtype: descr, data: new Float32Array(body.buffer, 0, count) };
    case "<f8":
      need(8);
      return { shape, dtype: descr, data: new Float64Array(body.buffer, 0, count) };
    case "<f2":
      need(2);
      return { shape, dtype: descr, data: new Float16Array(body.buffer, 0, count) };
    case "<i4":
      need(4);
      return { shape, dtype: descr, data: new Int32Array(body.buffer, 0, count) };
    case "<i8": {
      need(8);
      const src = new BigInt64Array(body.buffer, 0, count);
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = Number(src[i]);
      return { shape, dtype: descr, data: out };
    }
    case "|u1":
    case "|b1":
      need(1);
      return { shape, dtype: descr, data: new Uint8Array(body.buffer, 0, count) };
    default:
      throw new Error(`.npy dtype ${descr} is not supported (f4, f8, f2, i4, i8, u1, b1 are)`);
  }
}

/**
 * Reads a `.npy` file from disk.
 *
 * @example
 * ```ts
 * import { readNpy } from "@denoise/sd/io";
 * const { shape } = await readNpy("tests/fixtures/dumps/tiny-sd15__pndm/latents_final.npy");
 * ```
 */
export async function readNpy(path: string | URL): Promise<NpyArray> {
  return parseNpy(await Deno.readFile(path));
}
