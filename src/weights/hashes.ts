/**
 * The file hashes A1111 writes into infotexts: SHA-256 of a whole file (`VAE hash`, `TI hashes`)
 * and kohya's "addnet" hash of a `.safetensors` file — SHA-256 of the bytes after the header, so
 * editing metadata leaves it unchanged — that `Lora hashes` uses. Files are streamed, never held
 * in memory.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { filePath } from "./safetensors.ts";

const BLOCK = 1 << 20;

/**
 * The SHA-256 of a file as lowercase hex, from byte `from` (default 0) to the end.
 *
 * @example
 * ```ts no-run
 * import { sha256File } from "@denoise/sd/weights";
 * const hash = await sha256File("vae-ft-mse-840000-ema-pruned.safetensors");
 * console.log(hash.slice(0, 10)); // A1111's "VAE hash"
 * ```
 */
export async function sha256File(
  path: string | URL,
  options: { from?: number } = {},
): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(filePath(path), { read: true });
  await file.seek(options.from ?? 0, Deno.SeekMode.Start);
  const buf = new Uint8Array(BLOCK);
  while (true) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

/**
 * kohya's hash of a `.safetensors` file (A1111's `addnet_hash_safetensors`): the SHA-256 of the
 * data after the 8-byte length and the JSON header. A1111 shows its first 12 hex digits as a
 * LoRA's short hash.
 *
 * @example
 * ```ts no-run
 * import { addnetHash } from "@denoise/sd/weights";
 * const hash = await addnetHash("my_lora.safetensors");
 * console.log(hash.slice(0, 12)); // as in "Lora hashes: "my_lora: 0123456789ab""
 * ```
 */
export async function addnetHash(path: string | URL): Promise<string> {
  const p = filePath(path);
  using file = await Deno.open(p, { read: true });
  const head = new Uint8Array(8);
  let got = 0;
  while (got < 8) {
    const n = await file.read(head.subarray(got));
    if (n === null) throw new Error(`${p} is too short to be a safetensors file`);
    got += n;
  }
  const headerLength = Number(new DataView(head.buffer).getBigUint64(0, true));
  return await sha256File(p, { from: 8 + headerLength });
}
