/**
 * Test helpers for the weights layer: paths of the tiny model fixtures, the shared single-file
 * checkpoints (skipped when absent, required under CI=true), and a small `.safetensors` encoder
 * for generating good and bad files.
 *
 * @module
 */
import { modelDir as findModel, SHARED, sharedAvailable } from "../util.ts";

/** The tiny diffusers models (tiny-sd15 is copied into `tests/fixtures/models/`, tiny-sd2 is read from `../shared`). */
export const MODELS = ["tiny-sd15", "tiny-sd2"] as const;

/** Path of a tiny model's diffusers folder; throws when it is nowhere to be found. */
export function modelDir(model: string): string {
  const dir = findModel(model);
  if (!dir) throw new Error(`tiny model ${model} not found in tests/fixtures/models or ../shared`);
  return dir;
}

/**
 * Path of a tiny model's single-file checkpoint in `../shared/fixtures/single_file/`, or
 * `undefined` (after printing why) when the shared folder is absent outside CI.
 */
export function singleFile(model: string): string | undefined {
  const rel = `fixtures/single_file/${model}.safetensors`;
  if (!sharedAvailable(rel)) return undefined;
  return decodeURIComponent(new URL(rel, SHARED).pathname);
}

/** One tensor to encode. */
export interface RawTensor {
  /** Tensor name. */
  name: string;
  /** Dtype string as written in the header. */
  dtype: string;
  /** Shape. */
  shape: number[];
  /** Raw bytes. */
  data: Uint8Array;
}

/** Encodes tensors (packed in order) as a `.safetensors` file. */
export function encodeSafetensors(
  tensors: RawTensor[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  return assemble(JSON.stringify(header), tensors.map((t) => t.data));
}

/** Builds a file from a header string and data chunks; `headerLength` overrides the length field. */
export function assemble(json: string, chunks: Uint8Array[], headerLength?: bigint): Uint8Array {
  const head = new TextEncoder().encode(json);
  const dataLen = chunks.reduce((a, c) => a + c.byteLength, 0);
  const out = new Uint8Array(8 + head.byteLength + dataLen);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(head.byteLength), true);
  out.set(head, 8);
  let at = 8 + head.byteLength;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** The bytes of a typed array. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}
