/**
 * `encodePrompt`: prompt and negative prompt to the text embeddings the U-Net attends to, with
 * A1111's attention syntax and 75-token chunking, or diffusers' plain truncation.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import type { TextualInversion } from "../weights/textual_inversion.ts";
import { embeddingFinder, encodeWithTriggers, preparePromptLoras } from "./addons.ts";
import type { ActiveLora, LoraSpec } from "./lora.ts";
import {
  applyWeights,
  chunkTokens,
  type EmbeddingMatch,
  parsePromptAttention,
  type PromptChunk,
} from "./prompt_parse.ts";
import type { Pipeline } from "./load.ts";

type FindEmbedding = (ids: readonly number[], at: number) => EmbeddingMatch | undefined;

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
  /**
   * LoRAs for this prompt, on top of the pipeline's (`applyLoras`, `loadPipeline({ loras })`);
   * the prompt's own `<lora:NAME:WEIGHT>` tags add to them.
   */
  loras?: LoraSpec[];
  /** The folder `<lora:NAME:…>` tags resolve in (default: the pipeline's `loraDir`). */
  loraDir?: string;
}

/** The embeddings of a prompt pair; both `[1, 77·chunks, D]`, of equal length. */
export interface PromptEmbeds {
  /** The prompt's embeddings. */
  cond: Tensor;
  /** The negative prompt's embeddings. */
  uncond: Tensor;
  /** Frees both tensors. */
  dispose(): void;
  /** The LoRAs merged when these embeddings were made: `sampleLatents` samples with the same set. */
  loras?: readonly ActiveLora[];
  /** The textual-inversion embeddings the prompts used. */
  embeddings?: readonly TextualInversion[];
  /** `using embeds = await encodePrompt(…)` frees both at the end of the block. */
  [Symbol.dispose](): void;
}

/**
 * Encodes a prompt and its negative prompt with the pipeline's CLIP text encoder. The prompt's
 * `<lora:NAME:WEIGHT>` tags are taken out of the text and their LoRAs merged (with the pipeline's
 * and `options.loras`) before encoding; a registered textual-inversion embedding's name takes its
 * vectors' positions in the 75-token chunks.
 *
 * @example
 * ```ts no-run
 * import { loadPipeline } from "@denoise/sd";
 * import { encodePrompt } from "@denoise/sd";
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
  const tag = /<(lora|lyco):[^>]+>/.exec(negative);
  if (tag !== null) {
    throw new Error(
      `the negative prompt has ${tag[0]}: LoRA tags are read from the prompt only (as A1111 ` +
        `does); move it to the prompt`,
    );
  }
  const { text, loras } = await preparePromptLoras(pipe, prompt, options);
  const used = new Set<TextualInversion>();
  const find = embeddingFinder(pipe, used);
  let condChunks = chunksFor(pipe, text, parse, find, options.onTruncate);
  let uncondChunks = chunksFor(pipe, negative, parse, find, options.onTruncate);
  // A1111 pads the shorter side with chunks of the empty prompt so both have the same length.
  const empty = chunksFor(pipe, "", parse)[0];
  while (condChunks.length < uncondChunks.length) condChunks = [...condChunks, empty];
  while (uncondChunks.length < condChunks.length) uncondChunks = [...uncondChunks, empty];
  const embeddings = [...used];
  const [cond, uncond] = await pipe.rt.scope(async () => [
    await embedChunks(pipe, condChunks, clipSkip, embeddings),
    await embedChunks(pipe, uncondChunks, clipSkip, embeddings),
  ]);
  const dispose = () => {
    cond.dispose();
    uncond.dispose();
  };
  return { cond, uncond, loras, embeddings, dispose, [Symbol.dispose]: dispose };
}

function chunksFor(
  pipe: Pipeline,
  text: string,
  parse: "a1111" | "none",
  findEmbedding?: FindEmbedding,
  onTruncate?: (cut: string) => void,
): PromptChunk[] {
  const tok = pipe.tokenizer;
  if (parse === "none") {
    const chunk = findEmbedding && plainChunkWithEmbeddings(pipe, text, findEmbedding, onTruncate);
    if (chunk) return [chunk];
    const ids = tok.encodePadded(text, { onTruncate });
    return [{ ids, weights: ids.map(() => 1) }];
  }
  return chunkTokens(parsePromptAttention(text), encodeWithTriggers(pipe), {
    bos: tok.bos,
    eos: tok.eos,
    pad: tok.pad,
    comma: tok.tokenToId(",</w>"),
    chunkLength: tok.maxLength - 2,
    findEmbedding,
  });
}

/**
 * `parse: "none"` with textual inversion, as diffusers expands a multi-vector token before
 * tokenizing: the embedding's vectors take their positions, then the text is truncated to
 * `maxLength − 2` tokens. Undefined when the text names no embedding.
 */
function plainChunkWithEmbeddings(
  pipe: Pipeline,
  text: string,
  find: FindEmbedding,
  onTruncate?: (cut: string) => void,
): PromptChunk | undefined {
  const tok = pipe.tokenizer, room = tok.maxLength - 2;
  const ids = encodeWithTriggers(pipe)(text);
  const tokens: number[] = [];
  const fixes: NonNullable<PromptChunk["fixes"]> = [];
  let i = 0, cutAt = -1;
  while (i < ids.length) {
    const m = find(ids, i);
    const n = m?.vectors ?? 1;
    if (tokens.length + n > room && cutAt < 0) cutAt = i;
    if (cutAt < 0) {
      if (m !== undefined) fixes.push({ offset: tokens.length, name: m.name, vectors: n });
      for (let k = 0; k < n; k++) tokens.push(m === undefined ? ids[i] : 0);
    }
    i += m?.length ?? 1;
  }
  if (fixes.length === 0) return undefined;
  if (cutAt >= 0) {
    const cut = tok.decode(ids.slice(cutAt));
    if (onTruncate) onTruncate(cut);
    else console.warn(`denoise: the prompt is longer than ${room} tokens; dropped: ${cut}`);
  }
  const padded = [tok.bos, ...tokens, tok.eos];
  while (padded.length < tok.maxLength) padded.push(tok.pad);
  return { ids: padded, weights: padded.map(() => 1), fixes };
}

/** Runs the text encoder on each chunk, applies the weights and concatenates: [1, 77·n, D]. */
async function embedChunks(
  pipe: Pipeline,
  chunks: PromptChunk[],
  clipSkip: number,
  embeddings: readonly TextualInversion[],
): Promise<Tensor> {
  const rt = pipe.rt;
  const byName = new Map(embeddings.map((e) => [e.name, e]));
  const encode = (chunk: PromptChunk): Tensor => {
    const tokenEmbeddings = (chunk.fixes ?? []).map((f) => ({
      position: f.offset + 1, // after bos
      vectors: byName.get(f.name)!.vectors,
    }));
    return rt.scope(() =>
      pipe.textEncoder.forward(chunk.ids, { clipSkip, tokenEmbeddings }).lastHiddenState
    ); // [1, 77, D]
  };
  const plain = chunks.length === 1 && chunks[0].weights.every((w) => w === 1);
  if (plain) return encode(chunks[0]);
  const parts: Float32Array[] = [];
  let dim = 0;
  let length = 0;
  for (const chunk of chunks) {
    using out = encode(chunk); // [1, 77, D]
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
