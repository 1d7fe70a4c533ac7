/**
 * PNG reading and writing with text metadata: pixels through `pngjs`, plus `tEXt` / `iTXt` chunks
 * (A1111's `parameters` infotext) that pngjs neither writes nor reads, a CRC check of every
 * chunk, a safe file writer that never replaces files unless asked, and A1111's infotext format.
 *
 * @example
 * ```ts no-run
 * import { formatA1111Parameters, writePngFile } from "@denoise/sd/io";
 * const image = { width: 1, height: 1, data: new Uint8Array([255, 0, 0, 255]) };
 * const parameters = formatA1111Parameters({
 *   prompt: "a red dot",
 *   steps: 20,
 *   sampler: "Euler a",
 *   cfg: 7,
 *   seed: 42,
 *   width: 1,
 *   height: 1,
 *   model: "v1-5-pruned-emaonly",
 * });
 * await writePngFile("dot.png", image, { text: { parameters } });
 * ```
 *
 * @module
 */
// @ts-types="@types/pngjs"
import { PNG } from "pngjs";
import { Buffer } from "node:buffer";
import { inflateSync } from "node:zlib";
import { writeFileExclusive } from "./files.ts";
import { fileURLToPath } from "node:url";

/** An 8-bit RGBA image, rows top to bottom, 4 bytes per pixel. */
export interface RgbaImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width · height · 4` bytes: R, G, B, A per pixel. */
  data: Uint8Array;
}

/** A decoded PNG: its pixels as RGBA and its text chunks by keyword. */
export interface DecodedPng extends RgbaImage {
  /** `tEXt`, `zTXt` and `iTXt` chunks, keyword → text (a later duplicate wins). */
  text: Record<string, string>;
}

/** Options for {@link encodePng}. */
export interface EncodePngOptions {
  /** Text chunks to embed, keyword → text: `tEXt` when Latin-1, else `iTXt` (UTF-8), as PIL. */
  text?: Record<string, string>;
}

/** Options for {@link writePngFile}. */
export interface WritePngFileOptions extends EncodePngOptions {
  /** Replace an existing file; without it an existing file is an error. */
  overwrite?: boolean;
}

/** The generation settings that {@link formatA1111Parameters} writes. */
export interface A1111Parameters {
  /** The positive prompt. */
  prompt: string;
  /** The negative prompt; the line is omitted when empty. */
  negativePrompt?: string;
  /** Sampling steps. */
  steps: number;
  /** The sampler's A1111 name, for example "Euler a" or "DPM++ 2M". */
  sampler: string;
  /** A1111's "Schedule type", for example "Karras"; omitted when absent. */
  scheduleType?: string;
  /** Classifier-free guidance scale. */
  cfg: number;
  /** The seed. */
  seed: number | bigint;
  /** Image width in pixels. */
  width: number;
  /** Image height in pixels. */
  height: number;
  /** The checkpoint's short hash (A1111's "Model hash"); omitted when absent. */
  modelHash?: string;
  /** The checkpoint name; omitted when empty. */
  model?: string;
  /** img2img / inpainting strength (A1111's "Denoising strength"); omitted when absent. */
  denoisingStrength?: number;
  /** CLIP skip; written only when above 1, as A1111. */
  clipSkip?: number;
  /** An external VAE's short hash (A1111's "VAE hash": 10 hex digits of its SHA-256). */
  vaeHash?: string;
  /** An external VAE's file name (A1111's "VAE"). */
  vae?: string;
  /** A1111's "Lora hashes": `name: shorthash, …`. */
  loraHashes?: string;
  /** A1111's "TI hashes": `name: shorthash, …` of the embeddings the prompts used. */
  tiHashes?: string;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * The CRC-32 that PNG chunks carry (ISO-HDLC polynomial, as zlib's `crc32`).
 *
 * @example
 * ```ts
 * import { crc32 } from "@denoise/sd/io";
 * crc32(new TextEncoder().encode("IEND")); // 0xae426082
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

interface Chunk {
  type: string;
  data: Uint8Array;
  /** Byte offset of the chunk's length field in the file. */
  offset: number;
}

function readChunks(bytes: Uint8Array): Chunk[] {
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new Error("not a PNG file: the 8-byte PNG signature is missing");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks: Chunk[] = [];
  let pos = 8;
  while (pos < bytes.length) {
    if (pos + 12 > bytes.length) throw new Error(`PNG is truncated inside a chunk at byte ${pos}`);
    const length = view.getUint32(pos);
    const end = pos + 12 + length;
    if (end > bytes.length) {
      throw new Error(`PNG is truncated: a ${length}-byte chunk at byte ${pos} runs past the end`);
    }
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const stored = view.getUint32(pos + 8 + length);
    const actual = crc32(bytes.subarray(pos + 4, pos + 8 + length));
    if (stored !== actual) {
      throw new Error(
        `PNG chunk ${type} at byte ${pos} has CRC 0x${stored.toString(16)} but its bytes give ` +
          `0x${actual.toString(16)}: the file is corrupt`,
      );
    }
    chunks.push({ type, data: bytes.subarray(pos + 8, pos + 8 + length), offset: pos });
    pos = end;
    if (type === "IEND") break;
  }
  if (chunks[0]?.type !== "IHDR" || chunks.at(-1)?.type !== "IEND") {
    throw new Error("PNG must start with an IHDR chunk and end with IEND");
  }
  return chunks;
}

function makeChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const isLatin1 = (s: string) => [...s].every((c) => c.charCodeAt(0) <= 0xff && c.length === 1);
const latin1Bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const latin1String = (b: Uint8Array) => Array.from(b, (x) => String.fromCharCode(x)).join("");
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function textChunk(keyword: string, text: string): Uint8Array {
  if (keyword.length < 1 || keyword.length > 79 || !isLatin1(keyword) || keyword.includes("\0")) {
    throw new RangeError(
      `PNG text keyword "${keyword}" must be 1–79 Latin-1 characters without NUL, like "parameters"`,
    );
  }
  if (text.includes("\0")) {
    throw new RangeError(`PNG text "${keyword}" contains a NUL character: remove it`);
  }
  const key = latin1Bytes(keyword);
  if (isLatin1(text)) {
    const body = latin1Bytes(text);
    const data = new Uint8Array(key.length + 1 + body.length);
    data.set(key);
    data.set(body, key.length + 1);
    return makeChunk("tEXt", data);
  }
  // iTXt: keyword, NUL, compression flag 0, method 0, empty language, NUL, empty key, NUL, UTF-8.
  const body = utf8.encode(text);
  const data = new Uint8Array(key.length + 5 + body.length);
  data.set(key);
  data.set(body, key.length + 5);
  return makeChunk("iTXt", data);
}

function parseTextChunk(chunk: Chunk): [string, string] {
  const { type, data } = chunk;
  const nul = data.indexOf(0);
  if (nul < 1) throw new Error(`PNG ${type} chunk at byte ${chunk.offset} has no keyword`);
  const keyword = latin1String(data.subarray(0, nul));
  if (type === "tEXt") return [keyword, latin1String(data.subarray(nul + 1))];
  if (type === "zTXt") return [keyword, latin1String(inflateSync(data.subarray(nul + 2)))];
  const compressed = data[nul + 1] === 1;
  const langEnd = data.indexOf(0, nul + 3);
  const keyEnd = langEnd < 0 ? -1 : data.indexOf(0, langEnd + 1);
  if (keyEnd < 0) throw new Error(`PNG iTXt chunk at byte ${chunk.offset} is malformed`);
  const body = data.subarray(keyEnd + 1);
  return [keyword, utf8Decoder.decode(compressed ? inflateSync(body) : body)];
}

function checkImage(image: RgbaImage): void {
  const { width, height, data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`PNG size ${width}×${height} must be positive integers`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 4) {
    throw new RangeError(
      `PNG pixels must be a Uint8Array of width·height·4 = ${width * height * 4} RGBA bytes, ` +
        `got ${data?.length}`,
    );
  }
}

/**
 * Encodes RGBA pixels as an 8-bit PNG (RGB when every pixel is opaque, RGBA otherwise) and embeds
 * text chunks right after the header chunks, before the image data, where PIL (and so A1111's
 * "PNG Info") reads them on open.
 *
 * @example
 * ```ts no-run
 * import { encodePng } from "@denoise/sd/io";
 * const bytes = encodePng(
 *   { width: 1, height: 1, data: new Uint8Array([0, 0, 0, 255]) },
 *   { text: { parameters: "a black pixel\nSteps: 1" } },
 * );
 * await Deno.writeFile("pixel.png", bytes);
 * ```
 */
export function encodePng(image: RgbaImage, options: EncodePngOptions = {}): Uint8Array {
  checkImage(image);
  const png = new PNG({ width: image.width, height: image.height });
  png.data = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength);
  let opaque = true;
  for (let i = 3; i < image.data.length; i += 4) {
    if (image.data[i] !== 255) {
      opaque = false;
      break;
    }
  }
  const encoded = PNG.sync.write(png, { colorType: opaque ? 2 : 6, inputHasAlpha: true });
  const bytes = new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  const entries = Object.entries(options.text ?? {});
  if (entries.length === 0) return bytes.slice();
  const chunks = readChunks(bytes);
  const at = chunks.find((c) => c.type === "IDAT")!.offset;
  const extra = entries.map(([k, v]) => textChunk(k, v));
  const size = extra.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(bytes.length + size);
  out.set(bytes.subarray(0, at));
  let pos = at;
  for (const c of extra) {
    out.set(c, pos);
    pos += c.length;
  }
  out.set(bytes.subarray(at), pos);
  return out;
}

/**
 * Decodes a PNG (any colour type or bit depth pngjs supports) to 8-bit RGBA, verifying every
 * chunk's CRC, and returns its text chunks.
 *
 * @example
 * ```ts no-run
 * import { decodePng } from "@denoise/sd/io";
 * const { width, height, data, text } = decodePng(await Deno.readFile("image.png"));
 * console.log(width, height, data.length, text.parameters);
 * ```
 */
export function decodePng(bytes: Uint8Array): DecodedPng {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("decodePng expects the file's bytes");
  const chunks = readChunks(bytes);
  const text: Record<string, string> = {};
  for (const c of chunks) {
    if (c.type === "tEXt" || c.type === "zTXt" || c.type === "iTXt") {
      const [k, v] = parseTextChunk(c);
      text[k] = v;
    }
  }
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return { width: png.width, height: png.height, data: new Uint8Array(png.data), text };
}

/**
 * Writes a PNG file safely: the bytes go to a temporary file in the same folder, are flushed to
 * disk, and then appear under `path` by an exclusive link, so an existing file — even one created
 * by another process while this one worked — is never replaced (an `AlreadyExists` error) unless
 * `overwrite` is set (then an atomic rename replaces it). See {@link writeFileExclusive}.
 *
 * @example
 * ```ts no-run
 * import { writePngFile } from "@denoise/sd/io";
 * const image = { width: 1, height: 1, data: new Uint8Array([9, 9, 9, 255]) };
 * await writePngFile("out.png", image, { text: { parameters: "grey" }, overwrite: true });
 * ```
 */
export async function writePngFile(
  path: string | URL,
  image: RgbaImage,
  options: WritePngFileOptions = {},
): Promise<void> {
  const target = path instanceof URL ? fileURLToPath(path) : path;
  await writeFileExclusive(target, encodePng(image, options), { overwrite: options.overwrite });
}

/** A1111's `quote`: values with a comma, colon or newline are written as JSON strings. */
function quote(value: string): string {
  return /[,:\n]/.test(value) ? JSON.stringify(value) : value;
}

function checkNumber(name: string, v: unknown, integer: boolean): string {
  if (typeof v === "bigint" && integer) return v.toString();
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw new RangeError(
      `A1111 parameter ${name} must be a finite ${integer ? "integer" : "number"}`,
    );
  }
  return String(v);
}

/**
 * The infotext A1111 stores in a PNG's `parameters` chunk: the prompt, a `Negative prompt:` line
 * when there is one, then `Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512,
 * Model: …` in A1111's order, values with `,` `:` or newlines JSON-quoted.
 *
 * @example
 * ```ts no-run
 * import { formatA1111Parameters } from "@denoise/sd/io";
 * formatA1111Parameters({
 *   prompt: "a cat",
 *   negativePrompt: "blurry",
 *   steps: 20,
 *   sampler: "Euler a",
 *   cfg: 7,
 *   seed: 42,
 *   width: 512,
 *   height: 512,
 *   model: "v1-5-pruned-emaonly",
 * });
 * // "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42,
 * //  Size: 512x512, Model: v1-5-pruned-emaonly" (one line)
 * ```
 */
export function formatA1111Parameters(p: A1111Parameters): string {
  const clipSkip = p.clipSkip === undefined
    ? undefined
    : Number(checkNumber("clipSkip", p.clipSkip, true));
  const fields: [string, string | undefined][] = [
    ["Steps", checkNumber("steps", p.steps, true)],
    ["Sampler", p.sampler],
    ["Schedule type", p.scheduleType],
    ["CFG scale", checkNumber("cfg", p.cfg, false)],
    ["Seed", checkNumber("seed", p.seed, true)],
    ["Size", `${checkNumber("width", p.width, true)}x${checkNumber("height", p.height, true)}`],
    ["Model hash", p.modelHash || undefined],
    ["Model", p.model || undefined],
    ["VAE hash", p.vaeHash || undefined],
    ["VAE", p.vae || undefined],
    [
      "Denoising strength",
      p.denoisingStrength === undefined
        ? undefined
        : checkNumber("denoisingStrength", p.denoisingStrength, false),
    ],
    ["Clip skip", clipSkip !== undefined && clipSkip > 1 ? String(clipSkip) : undefined],
    ["Lora hashes", p.loraHashes || undefined],
    ["TI hashes", p.tiHashes || undefined],
  ];
  const params = fields.filter(([, v]) => v !== undefined).map(([k, v]) =>
    k === v ? k : `${k}: ${quote(v!)}`
  ).join(", ");
  const negative = p.negativePrompt ? `\nNegative prompt: ${p.negativePrompt}` : "";
  return `${p.prompt}${negative}\n${params}`.trim();
}
