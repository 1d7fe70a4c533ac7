/**
 * `encodePrompt`: prompt and negative prompt to the text embeddings the U-Net attends to, with
 * A1111's attention syntax and 75-token chunking, or diffusers' plain truncation.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import {
  applyWeights,
  chunkTokens,
  parsePromptAttention,
  type PromptChunk,
} from "./prompt_parse.ts";
import type { Pipeline } from "./load.ts";

/** Options for {@link encodePrompt}. */
export interface EncodePromptOptions {
  /** The negative prompt (the unconditional branch of classifier-free guidance); "" by default. */
  negativePrompt?: string;
  /**
   * A1111's clip skip: 1 = last layer (default), 2 = penultimate, …, applied to both prompts.
   * diffusers' `clip_skip=k` is our `k+1` (diffusers leaves the negative prompt unskipped).
   */
  clipSkip?: number;
  /**
   * `"a1111"` (default): `(word:1.3)` weighting and 75-token chunks; `"none"`: the text goes to the
   * tokenizer verbatim and is truncated at 77 tokens, exactly as diffusers does.
   */
  parse?: "a1111" | "none";
  /** Called with the cut text when a prompt is truncated (`parse: "none"`). */
  onTruncate?: (cut: string) => void;
}

/** The embeddings of a prompt pair; both `[1, 77·chunks, D]`, of equal length. */
export interface PromptEmbeds {
  /** The prompt's embeddings. */
  cond: Tensor;
  /** The negative prompt's embeddings. */
  uncond: Tensor;
  /** Frees both tensors. */
  dispose(): void;
  /** `using embeds = await encodePrompt(…)` frees both at the end of the block. */
  [Symbol.dispose](): void;
}

/**
 * Encodes a prompt and its negative prompt with the pipeline's CLIP text encoder.
 *
 * @example
 * ```ts
 * import { loadPipeline } from "./load.ts";
 * import { encodePrompt } from "./encode.ts";
 * const pipe = await loadPipeline("tests/fixtures/models/tiny-sd15");
 * const embeds = await encodePrompt(pipe, "a (red:1.2) fox", { negativePrompt: "blurry" });
 * console.log(embeds.cond.shape); // [1, 77, 32]
 * ```
 */
export async function encodePrompt(
  pipe: Pipeline,
  prompt: string,
  options: EncodePromptOptions = {},
): Promise<PromptEmbeds> {
  const clipSkip = options.clipSkip ?? 1;
  if (!Number.isInteger(clipSkip) || clipSkip < 1) {
    throw new Error(`clipSkip must be a whole number ≥ 1 (1 = last layer), got ${clipSkip}`);
  }
  const layers = Number(pipe.configs.text_encoder.num_hidden_layers);
  if (clipSkip > layers) {
    throw new Error(`clipSkip ${clipSkip} exceeds the text encoder's ${layers} layers`);
  }
  const parse = options.parse ?? "a1111";
  if (parse !== "a1111" && parse !== "none") {
    throw new Error(`parse must be "a1111" or "none", got ${JSON.stringify(parse)}`);
  }
  const negative = options.negativePrompt ?? "";
  let condChunks = chunksFor(pipe, prompt, parse, options.onTruncate);
  let uncondChunks = chunksFor(pipe, negative, parse, options.onTruncate);
  // A1111 pads the shorter side with chunks of the empty prompt so both have the same length.
  const empty = chunksFor(pipe, "", parse)[0];
  while (condChunks.length < uncondChunks.length) condChunks = [...condChunks, empty];
  while (uncondChunks.length < condChunks.length) uncondChunks = [...uncondChunks, empty];
  const [cond, uncond] = await pipe.rt.scope(async () => [
    await embedChunks(pipe, condChunks, clipSkip),
    await embedChunks(pipe, uncondChunks, clipSkip),
  ]);
  const dispose = () => {
    cond.dispose();
    uncond.dispose();
  };
  return { cond, uncond, dispose, [Symbol.dispose]: dispose };
}

function chunksFor(
  pipe: Pipeline,
  text: string,
  parse: "a1111" | "none",
  onTruncate?: (cut: string) => void,
): PromptChunk[] {
  const tok = pipe.tokenizer;
  if (parse === "none") {
    const ids = tok.encodePadded(text, { onTruncate });
    return [{ ids, weights: ids.map(() => 1) }];
  }
  return chunkTokens(parsePromptAttention(text), (t) => tok.encode(t), {
    bos: tok.bos,
    eos: tok.eos,
    pad: tok.pad,
    comma: tok.tokenToId(",</w>"),
    chunkLength: tok.maxLength - 2,
  });
}

/** Runs the text encoder on each chunk, applies the weights and concatenates: [1, 77·n, D]. */
async function embedChunks(
  pipe: Pipeline,
  chunks: PromptChunk[],
  clipSkip: number,
): Promise<Tensor> {
  const rt = pipe.rt;
  const encode = (ids: number[]): Tensor =>
    rt.scope(() => pipe.textEncoder.forward(ids, { clipSkip }).lastHiddenState); // [1, 77, D]
  const plain = chunks.length === 1 && chunks[0].weights.every((w) => w === 1);
  if (plain) return encode(chunks[0].ids);
  const parts: Float32Array[] = [];
  let dim = 0;
  let length = 0;
  for (const chunk of chunks) {
    using out = encode(chunk.ids); // [1, 77, D]
    const host = await out.read();
    dim = out.shape[2];
    length += out.shape[1];
    parts.push(applyWeights(host, chunk.weights));
  }
  const all = new Float32Array(length * dim); // [1, 77·n, D]
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return rt.upload(all, [1, length, dim], { dtype: pipe.dtype });
}
