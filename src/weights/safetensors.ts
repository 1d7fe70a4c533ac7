/**
 * A `.safetensors` reader that parses and validates the header, then reads tensors by byte range
 * from the open file, so a checkpoint is never held in memory twice. Pickle checkpoints
 * (`.ckpt`, `.pt`, `.bin`) are refused.
 *
 * @module
 */

/** The tensor element types this engine reads. */
export type Dtype = "F32" | "F16" | "BF16" | "I64" | "I32";

/** Bytes per element of each supported dtype. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
};

/** Where one tensor lives in a `.safetensors` file. */
export interface TensorInfo {
  /** Element type. */
  dtype: Dtype;
  /** Shape, outermost axis first (`[]` for a scalar). */
  shape: number[];
  /** Absolute offset of the tensor's first byte in the file. */
  byteOffset: number;
  /** Length of the tensor's data in bytes (= product of shape × dtype size). */
  byteLength: number;
}

/** An open `.safetensors` file: the parsed header plus byte-range reads. */
export interface SafetensorsFile {
  /** The path it was opened from. */
  readonly path: string;
  /** Size of the file in bytes. */
  readonly fileSize: number;
  /** Every tensor in the file, by name. */
  readonly tensors: Map<string, TensorInfo>;
  /** The header's `__metadata__` (string to string), `{}` when absent. */
  readonly metadata: Record<string, string>;
  /** Reads one tensor's raw little-endian bytes into a fresh buffer. */
  read(name: string): Promise<Uint8Array>;
  /** Reads one tensor as float32, widening F16/BF16 and converting integers. */
  readF32(name: string): Promise<Float32Array>;
  /** Closes the file handle. */
  close(): void;
}

/** The largest JSON header accepted (100 MB), as the reference implementation does. */
export const MAX_HEADER_BYTES = 100_000_000;

const PICKLE_EXTENSIONS = [".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"];
const CONVERT_HINT = "convert it to .safetensors first, e.g. with diffusers' " +
  "scripts/convert_original_stable_diffusion_to_diffusers.py (add --to_safetensors), " +
  "or load it once in Python and save with safetensors.torch.save_file";

/**
 * A file path as a string (a `file:` URL is decoded to its path), for messages and joining.
 *
 * @example
 * ```ts
 * import { filePath } from "@denoise/sd/weights";
 * filePath(new URL("file:///models/a%20b.safetensors")); // "/models/a b.safetensors"
 * ```
 */
export function filePath(path: string | URL): string {
  return path instanceof URL ? decodeURIComponent(path.pathname) : path;
}

function pickleError(path: string, why: string): Error {
  return new Error(
    `${path} is a PyTorch pickle checkpoint (${why}); pickle files can run arbitrary code when ` +
      `loaded, so they are refused: ${CONVERT_HINT}`,
  );
}

/**
 * Whether the first bytes of a file look like a PyTorch pickle: a zip archive (`torch.save`
 * since 1.6) or a raw pickle stream (protocol 2–5).
 *
 * @example
 * ```ts
 * import { looksLikePickle } from "@denoise/sd/weights";
 * looksLikePickle(new Uint8Array([0x50, 0x4b, 0x03, 0x04])); // true (zip)
 * ```
 */
export function looksLikePickle(head: Uint8Array): boolean {
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const pickle = head[0] === 0x80 && head[1] >= 2 && head[1] <= 5;
  return zip || pickle;
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function shapeText(shape: number[]): string {
  return `[${shape.join(", ")}]`;
}

interface RawEntry {
  dtype?: unknown;
  shape?: unknown;
  data_offsets?: unknown;
}

/**
 * Parses and validates a `.safetensors` JSON header. `dataStart` is where the data region begins
 * (8 + header length) and `fileSize` the file's total size; the returned offsets are absolute.
 *
 * @example
 * ```ts
 * import { parseSafetensorsHeader } from "@denoise/sd/weights";
 * const json = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
 * const { tensors } = parseSafetensorsHeader(json, { dataStart: 8 + json.length, fileSize: 8 + json.length + 8 });
 * console.log(tensors.get("w")?.shape); // [2]
 * ```
 */
export function parseSafetensorsHeader(
  json: string,
  opts: { dataStart: number; fileSize: number; path?: string },
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const where = opts.path ?? "safetensors file";
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    throw new Error(
      `${where}: the header is not valid JSON (${(e as Error).message}); the file is corrupt or ` +
        `not a safetensors file — re-download or re-export it`,
    );
  }
  const duplicate = findDuplicateKey(json);
  if (duplicate) {
    throw new Error(
      `${where}: the header names ${duplicate} twice (JSON would keep only the last); the file ` +
        `is corrupt or was tampered with — re-download or re-export it`,
    );
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new Error(`${where}: the header must be a JSON object of tensors — re-export the file`);
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const ranges: { name: string; start: number; end: number }[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new Error(`${where}: __metadata__ must be an object of strings — re-export the file`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
      }
      continue;
    }
    const entry = (value ?? {}) as RawEntry;
    const dtype = entry.dtype;
    if (typeof dtype !== "string") {
      throw new Error(
        `${where}: tensor "${name}" has no dtype — the header is corrupt, re-export it`,
      );
    }
    if (!(dtype in DTYPE_SIZE)) {
      throw new Error(
        `${where}: tensor "${name}" has dtype ${dtype}, which is not supported (supported: ` +
          `${Object.keys(DTYPE_SIZE).join(", ")}); convert the checkpoint to F16 or F32`,
      );
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(
        `${where}: tensor "${name}" has an invalid shape ${JSON.stringify(shape)} — the header ` +
          `is corrupt, re-export the file`,
      );
    }
    const offsets = entry.data_offsets;
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]
    ) {
      throw new Error(
        `${where}: tensor "${name}" has data_offsets ${JSON.stringify(offsets)} out of range ` +
          `(need two integers 0 ≤ start ≤ end) — the header is corrupt, re-download or re-export it`,
      );
    }
    const [start, end] = offsets as [number, number];
    const size = DTYPE_SIZE[dtype as Dtype];
    const want = product(shape) * size;
    if (end - start !== want) {
      throw new Error(
        `${where}: tensor "${name}" has shape ${shapeText(shape)} × ${dtype} (${size} bytes) = ` +
          `${want} bytes but its data_offsets [${start}, ${end}] hold ${end - start} bytes — ` +
          `the header is corrupt, re-export the file`,
      );
    }
    ranges.push({ name, start, end });
    tensors.set(name, {
      dtype: dtype as Dtype,
      shape: shape.slice(),
      byteOffset: opts.dataStart + start,
      byteLength: end - start,
    });
  }
  ranges.sort((a, b) => a.start - b.start || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1], cur = ranges[i];
    if (cur.start < prev.end) {
      throw new Error(
        `${where}: tensors "${prev.name}" [${prev.start}, ${prev.end}) and "${cur.name}" ` +
          `[${cur.start}, ${cur.end}) have overlapping data_offsets — the file is corrupt, ` +
          `re-download or re-export it`,
      );
    }
  }
  const dataBytes = opts.fileSize - opts.dataStart;
  const last = ranges.length > 0 ? ranges[ranges.length - 1] : undefined;
  if (last && last.end > dataBytes) {
    const contiguous = ranges.every((r, i) => r.start === (i === 0 ? 0 : ranges[i - 1].end));
    if (contiguous) {
      throw new Error(
        `${where} is truncated: the header says the file is ${opts.dataStart + last.end} bytes ` +
          `but it is only ${opts.fileSize} bytes (tensor "${last.name}" and any after it are cut ` +
          `off) — re-download the file`,
      );
    }
    const bad = ranges.find((r) => r.end > dataBytes)!;
    throw new Error(
      `${where}: tensor "${bad.name}" has data_offsets [${bad.start}, ${bad.end}] out of range: ` +
        `the data region holds only ${dataBytes} bytes — the header is corrupt, re-download or ` +
        `re-export the file`,
    );
  }
  let end = 0;
  for (const r of ranges) {
    if (r.start > end) {
      throw new Error(
        `${where}: bytes [${end}, ${r.start}) of the data region belong to no tensor (a hole ` +
          `before "${r.name}"); the safetensors format packs tensors back to back — the header ` +
          `is corrupt, re-download or re-export the file`,
      );
    }
    end = Math.max(end, r.end);
  }
  if (end < dataBytes) {
    throw new Error(
      `${where}: the last ${dataBytes - end} bytes of the file belong to no tensor (the header ` +
        `accounts for ${end} of ${dataBytes} data bytes) — the file is corrupt, re-download or ` +
        `re-export it`,
    );
  }
  return { tensors, metadata };
}

/**
 * The first object key that occurs twice in one JSON object (`"a"`, or `"__metadata__" key "x"`)
 * anywhere in `json`, which must be valid JSON. `JSON.parse` silently keeps the last of duplicate
 * keys; the safetensors reference refuses such headers.
 */
function findDuplicateKey(json: string): string | undefined {
  // one frame per open object (keys seen so far) or array (null), with the key that opened it
  const stack: { keys: Set<string> | null; name: string }[] = [];
  let expectKey = false;
  let lastKey = "";
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === "{" || c === "[") {
      stack.push({ keys: c === "{" ? new Set() : null, name: lastKey });
      expectKey = c === "{";
    } else if (c === "}" || c === "]") {
      stack.pop();
      expectKey = false;
    } else if (c === ",") {
      expectKey = stack.at(-1)?.keys != null;
    } else if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        const keys = stack.at(-1)!.keys!;
        if (keys.has(key)) {
          const inside = stack.slice(1).map((f) => `${JSON.stringify(f.name)} `).join("");
          return `${inside ? `${inside}key ` : ""}${JSON.stringify(key)}`;
        }
        keys.add(key);
        lastKey = key;
        expectKey = false;
      }
      i = j;
    }
  }
  return undefined;
}

async function readFully(file: Deno.FsFile, offset: number, out: Uint8Array): Promise<void> {
  await file.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < out.byteLength) {
    const n = await file.read(out.subarray(done));
    if (n === null) {
      throw new Error(`unexpected end of file at byte ${offset + done}: the file is truncated`);
    }
    done += n;
  }
}

/**
 * Widens raw little-endian tensor bytes to float32. For F32 input the result is a view that shares
 * memory with `bytes` (no copy) when `bytes` is 4-byte aligned.
 *
 * @example
 * ```ts
 * import { toFloat32 } from "@denoise/sd/weights";
 * const half = new Uint8Array([0x00, 0x3c]); // 1.0 in F16
 * console.log(toFloat32(half, "F16")[0]); // 1
 * ```
 */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  const aligned = bytes.byteOffset % DTYPE_SIZE[dtype] === 0 ? bytes : new Uint8Array(bytes); // copy to an aligned buffer
  const buf = aligned.buffer as ArrayBuffer;
  const at = aligned.byteOffset;
  switch (dtype) {
    case "F32":
      return new Float32Array(buf, at, n); // a view: shares memory with `bytes`
    case "F16":
      return Float32Array.from(new Float16Array(buf, at, n));
    case "BF16": {
      const src = new Uint16Array(buf, at, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case "I32":
      return Float32Array.from(new Int32Array(buf, at, n));
    case "I64": {
      const src = new BigInt64Array(buf, at, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
  }
}

/**
 * Opens a `.safetensors` file: reads and validates only the header; tensors are read later, one
 * byte range at a time. Refuses pickle checkpoints by extension and by magic bytes.
 *
 * @example
 * ```ts no-run
 * import { openSafetensors } from "@denoise/sd/weights";
 * const f = await openSafetensors("model.safetensors");
 * for (const [name, info] of f.tensors) console.log(name, info.dtype, info.shape);
 * const w = await f.readF32("conv_in.weight");
 * f.close();
 * ```
 */
export async function openSafetensors(path: string | URL): Promise<SafetensorsFile> {
  const p = filePath(path);
  const lower = p.toLowerCase();
  const ext = PICKLE_EXTENSIONS.find((e) => lower.endsWith(e));
  if (ext) throw pickleError(p, `extension ${ext}`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${p} does not exist: check the path (or download the model first)`);
    }
    throw e;
  }
  try {
    const fileSize = (await file.stat()).size;
    const head = new Uint8Array(Math.min(9, fileSize));
    await readFully(file, 0, head);
    if (head.byteLength < 9 || head[8] !== 0x7b) {
      if (looksLikePickle(head)) throw pickleError(p, "zip/pickle magic bytes");
    }
    if (fileSize < 10) {
      throw new Error(
        `${p} is only ${fileSize} bytes, too short for a safetensors file — re-download it`,
      );
    }
    const n = new DataView(head.buffer).getBigUint64(0, true);
    if (n < 2n || n > BigInt(MAX_HEADER_BYTES)) {
      throw new Error(
        `${p}: bad header length ${n} (must be 2…${MAX_HEADER_BYTES} bytes): this is not a ` +
          `safetensors file or it is corrupt — re-download or re-export it`,
      );
    }
    const headerLen = Number(n);
    if (8 + headerLen > fileSize) {
      throw new Error(
        `${p}: bad header length: the header claims ${headerLen} bytes but the file has only ` +
          `${fileSize - 8} after the length field — the file is truncated or not a safetensors ` +
          `file; re-download it`,
      );
    }
    const headerBytes = new Uint8Array(headerLen);
    await readFully(file, 8, headerBytes);
    let json: string;
    try {
      json = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
    } catch {
      throw new Error(
        `${p}: the header is not valid UTF-8 — the file is corrupt or not a safetensors file; ` +
          `re-download or re-export it`,
      );
    }
    const { tensors, metadata } = parseSafetensorsHeader(json, {
      dataStart: 8 + headerLen,
      fileSize,
      path: p,
    });
    return makeFile(file, p, fileSize, tensors, metadata);
  } catch (e) {
    file.close();
    throw e;
  }
}

function makeFile(
  file: Deno.FsFile,
  path: string,
  fileSize: number,
  tensors: Map<string, TensorInfo>,
  metadata: Record<string, string>,
): SafetensorsFile {
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  const info = (name: string): TensorInfo => {
    const t = tensors.get(name);
    if (!t) {
      throw new Error(`${path} has no tensor "${name}" (it has ${tensors.size} tensors)`);
    }
    return t;
  };
  const read = (name: string): Promise<Uint8Array> => {
    if (closed) return Promise.reject(new Error(`${path} is closed; open it again to read`));
    let t: TensorInfo;
    try {
      t = info(name);
    } catch (e) {
      return Promise.reject(e);
    }
    const out = new Uint8Array(t.byteLength);
    const job = queue.then(() => readFully(file, t.byteOffset, out)).then(() => out);
    queue = job.catch(() => undefined); // reads on one handle run one at a time
    return job;
  };
  return {
    path,
    fileSize,
    tensors,
    metadata,
    read,
    async readF32(name: string): Promise<Float32Array> {
      const bytes = await read(name);
      return toFloat32(bytes, info(name).dtype);
    },
    close() {
      if (!closed) {
        closed = true;
        file.close();
      }
    },
  };
}
