/**
 * Textual-inversion embeddings from `.safetensors` files: A1111's (`emb_params` `[n, D]`) and
 * diffusers' (`{"<token>": [D] or [n, D]}`). Pickled `.pt`/`.bin` embeddings are refused, SDXL's
 * two-encoder files (`clip_l`/`clip_g`) are refused with their reason. Host side only: the vectors
 * enter the text encoder in `encodePrompt`.
 *
 * @module
 */
import { sha256File } from "./hashes.ts";
import { filePath, openSafetensors, toFloat32 } from "./safetensors.ts";

/** The most vectors an embedding may have: one 75-token prompt chunk. */
export const MAX_EMBEDDING_VECTORS = 75;

/** A textual-inversion embedding (see {@link loadEmbedding}). */
export interface TextualInversion {
  /** The file name without `.safetensors`: the word that triggers it in a prompt (A1111). */
  readonly name: string;
  /** Every word that triggers it: the name, and a diffusers file's token when it differs. */
  readonly triggers: readonly string[];
  /** The file. */
  readonly path: string;
  /** The vectors, `[count, dim]` row-major float32. */
  readonly vectors: Float32Array;
  /** How many vectors (prompt token positions) it takes. */
  readonly count: number;
  /** The width: 768 for SD 1.x, 1024 for SD 2.x text encoders. */
  readonly dim: number;
  /** The SHA-256 of the file (A1111's embedding hash). */
  readonly hash: string;
  /** Its first 12 hex digits, as in A1111's `TI hashes`. */
  readonly shorthash: string;
  /** `"a1111"` (`emb_params`) or `"diffusers"` (a `<token>` key). */
  readonly format: "a1111" | "diffusers";
}

/**
 * Reads a textual-inversion embedding from a `.safetensors` file (f32, f16 or bf16).
 *
 * @example
 * ```ts no-run
 * import { loadEmbedding } from "@denoise/sd/weights";
 * const emb = await loadEmbedding("embeddings/easynegative.safetensors");
 * console.log(emb.name, emb.count, emb.dim); // "easynegative" 8 768
 * ```
 */
export async function loadEmbedding(path: string | URL): Promise<TextualInversion> {
  const p = filePath(path);
  const file = await openSafetensors(p);
  try {
    const keys = [...file.tensors.keys()];
    if (keys.includes("clip_l") || keys.includes("clip_g")) {
      throw new Error(
        `${p} is an SDXL embedding (clip_l/clip_g for two text encoders); denoise runs SD 1.x/2.x`,
      );
    }
    if (keys.length !== 1) {
      throw new Error(
        `${p} is not a textual-inversion embedding: it has ${keys.length} tensors (${
          keys.slice(0, 4).join(", ")
        }), one is expected (A1111's emb_params or diffusers' <token>)`,
      );
    }
    const key = keys[0];
    const info = file.tensors.get(key)!;
    if (info.shape.length < 1 || info.shape.length > 2 || info.dtype.startsWith("I")) {
      throw new Error(
        `${p}: ${key} is ${info.dtype} [${info.shape}]; an embedding is float [vectors, width]`,
      );
    }
    const [count, dim] = info.shape.length === 1 ? [1, info.shape[0]] : info.shape;
    if (count < 1 || count > MAX_EMBEDDING_VECTORS) {
      throw new Error(
        `${p} has ${count} vectors; an embedding must fit one prompt chunk (1…${MAX_EMBEDDING_VECTORS})`,
      );
    }
    const vectors = Float32Array.from(toFloat32(await file.read(key), info.dtype));
    const name = p.split("/").pop()!.replace(/\.safetensors$/i, "");
    const a1111 = key === "emb_params" || key.startsWith("string_to_param");
    const hash = await sha256File(p);
    return {
      name,
      triggers: a1111 || key === name ? [name] : [name, key],
      path: p,
      vectors,
      count,
      dim,
      hash,
      shorthash: hash.slice(0, 12),
      format: a1111 ? "a1111" : "diffusers",
    };
  } finally {
    file.close();
  }
}
