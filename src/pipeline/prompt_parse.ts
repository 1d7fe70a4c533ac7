/**
 * A1111-style prompt weighting: the attention syntax of stable-diffusion-webui's
 * `prompt_parser.parse_prompt_attention`, the 75-token chunking of `sd_hijack_clip.tokenize_line`
 * (with comma backtracking and `BREAK`), and the "Original" emphasis that scales the text
 * encoder's output per token and restores its mean.
 *
 * Syntax: `(text)` ×1.1, `[text]` ÷1.1, `(text:1.3)` ×1.3, nesting multiplies; `\(`, `\)`, `\[`,
 * `\]`, `\\` are literal characters; unclosed brackets apply to the end of the prompt, stray closing
 * brackets are plain text; `BREAK` starts a new chunk.
 *
 * @example
 * ```ts
 * import { chunkTokens, parsePromptAttention } from "@denoise/sd/pipeline";
 * const parts = parsePromptAttention("a (red:1.2) car, [blurry]");
 * // [["a ", 1], ["red", 1.2], [" car, ", 1], ["blurry", 0.9090909090909091]]
 * const encode = (text: string) => [...text].map((c) => c.charCodeAt(0));
 * const chunks = chunkTokens(parts, encode, { bos: 1, eos: 2 });
 * console.log(chunks[0].ids.length); // 77
 * ```
 *
 * @module
 */

/**
 * A piece of prompt text and its attention weight. A `BREAK` keyword is the part
 * `["BREAK", -1]`, as in A1111.
 */
export type PromptPart = [text: string, weight: number];

/** One encoder window: bos + 75 tokens + eos (padded), with a weight per position. */
export interface PromptChunk {
  /** Token ids, `chunkLength + 2` of them. */
  ids: number[];
  /** Per-token multipliers, 1.0 for bos, eos and padding. */
  weights: number[];
  /** Textual-inversion embeddings placed in this chunk (their ids are placeholder 0s). */
  fixes?: EmbeddingFix[];
}

/** A textual-inversion embedding in a chunk: its vectors replace token rows `offset+1 …`. */
export interface EmbeddingFix {
  /** Position of its first vector among the chunk's prompt tokens (0 = right after bos). */
  offset: number;
  /** The embedding's name (as {@link ChunkOptions.findEmbedding} returned it). */
  name: string;
  /** How many vectors (token positions) it takes. */
  vectors: number;
}

/** What {@link ChunkOptions.findEmbedding} reports for an embedding's trigger at a position. */
export interface EmbeddingMatch {
  /** The embedding's name. */
  name: string;
  /** How many prompt tokens the trigger spans. */
  length: number;
  /** How many vectors it takes in the chunk. */
  vectors: number;
}

/** Options for {@link chunkTokens}. */
export interface ChunkOptions {
  /** The start-of-text id (49406 for CLIP). */
  bos: number;
  /** The end-of-text id (49407 for CLIP); also fills the chunk up to its length. */
  eos: number;
  /**
   * The padding id written after the first eos (SD 2.x OpenCLIP pads with 0). Defaults to
   * `eos`, as SD 1.x does.
   */
  pad?: number;
  /** The id of `,</w>`; without it no comma backtracking happens. */
  comma?: number;
  /**
   * How far back (in tokens) a comma may be for a chunk to end just after it instead of at the
   * hard limit; 0 disables. A1111's `comma_padding_backtrack`, 20 by default.
   */
  commaPaddingBacktrack?: number;
  /** Prompt tokens per chunk, 75 by default. */
  chunkLength?: number;
  /**
   * Looks for a textual-inversion trigger starting at `ids[at]` (ids of one prompt part). A match
   * takes `vectors` placeholder positions instead of `length` tokens, and moves to a new chunk
   * when it does not fit in the current one (A1111's `tokenize_line`).
   */
  findEmbedding?: (ids: readonly number[], at: number) => EmbeddingMatch | undefined;
}

/** Options for {@link applyWeights}. */
export interface ApplyWeightsOptions {
  /**
   * Restore the chunk's original mean after scaling (A1111's "Original" emphasis, the default);
   * `false` only multiplies (A1111's "No norm").
   */
  normalize?: boolean;
}

// The token alternatives of A1111's `re_attention`, in its order.
const RE_ATTENTION =
  /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()[\]:]+|:/gu;
// `\s*\bBREAK\b\s*` with Python's Unicode word characters.
const RE_BREAK = /\s*(?<![\p{L}\p{N}_])BREAK(?![\p{L}\p{N}_])\s*/u;
const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

function parseWeight(text: string, prompt: string): number {
  const w = Number(text);
  if (!Number.isFinite(w)) {
    throw new Error(
      `prompt "${prompt}" has the weight "${text}", which is not a number: write it like (word:1.2)`,
    );
  }
  return w;
}

/**
 * Splits a prompt into text pieces with attention weights, as A1111's `parse_prompt_attention`:
 * weights multiply through nesting, unclosed brackets extend to the end, adjacent pieces with
 * equal weights merge, and an empty prompt gives `[["", 1]]`.
 *
 * @example
 * ```ts
 * import { parsePromptAttention } from "@denoise/sd/pipeline";
 * parsePromptAttention("an (important) word");
 * // [["an ", 1], ["important", 1.1], [" word", 1]]
 * parsePromptAttention("a BREAK b"); // [["a", 1], ["BREAK", -1], ["b", 1]]
 * ```
 */
export function parsePromptAttention(text: string): PromptPart[] {
  if (typeof text !== "string") throw new TypeError("parsePromptAttention expects a string");
  const res: PromptPart[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyRange = (start: number, multiplier: number) => {
    for (let p = start; p < res.length; p++) res[p][1] *= multiplier;
  };
  for (const m of text.matchAll(RE_ATTENTION)) {
    const token = m[0];
    const weight = m[1];
    if (token.startsWith("\\")) res.push([token.slice(1), 1.0]);
    else if (token === "(") round.push(res.length);
    else if (token === "[") square.push(res.length);
    else if (weight !== undefined && round.length > 0) {
      multiplyRange(round.pop()!, parseWeight(weight, text));
    } else if (token === ")" && round.length > 0) multiplyRange(round.pop()!, ROUND_MULTIPLIER);
    else if (token === "]" && square.length > 0) multiplyRange(square.pop()!, SQUARE_MULTIPLIER);
    else {
      token.split(RE_BREAK).forEach((part, i) => {
        if (i > 0) res.push(["BREAK", -1]);
        res.push([part, 1.0]);
      });
    }
  }
  for (const pos of round) multiplyRange(pos, ROUND_MULTIPLIER);
  for (const pos of square) multiplyRange(pos, SQUARE_MULTIPLIER);
  if (res.length === 0) res.push(["", 1.0]);
  let i = 0;
  while (i + 1 < res.length) {
    if (res[i][1] === res[i + 1][1]) {
      res[i][0] += res[i + 1][0];
      res.splice(i + 1, 1);
    } else i++;
  }
  return res;
}

function checkId(name: string, id: unknown): number {
  if (!Number.isInteger(id) || (id as number) < 0) {
    throw new RangeError(`chunkTokens option ${name} must be a token id (integer ≥ 0), got ${id}`);
  }
  return id as number;
}

/**
 * Tokenizes weighted prompt parts and packs them into encoder windows as A1111's `tokenize_line`
 * does: each part is encoded on its own (`encode` returns ids without bos/eos), tokens take their
 * part's weight, a chunk closes at `chunkLength` tokens — or just after the last comma when that
 * comma is within `commaPaddingBacktrack` tokens of the limit, moving the rest to the next chunk —
 * and `BREAK` closes the current chunk (even an empty one). A textual-inversion trigger
 * (`findEmbedding`) takes as many positions as its embedding has vectors, as placeholder ids 0
 * recorded in the chunk's `fixes`, and starts a new chunk when it does not fit. Each chunk is bos +
 * tokens + eos, filled with eos to `chunkLength + 2`, then everything after the first eos is set to
 * `pad`.
 *
 * @example
 * ```ts
 * import { chunkTokens, parsePromptAttention } from "@denoise/sd/pipeline";
 * const vocab = new Map<string, number>([["a", 320], ["cat", 2368], [",", 267]]);
 * const encode = (t: string) => t.split(/\s+/).filter(Boolean).map((w) => vocab.get(w) ?? 0);
 * const [chunk] = chunkTokens(parsePromptAttention("a (cat)"), encode, {
 *   bos: 49406,
 *   eos: 49407,
 *   comma: 267,
 * });
 * // chunk.ids: [49406, 320, 2368, 49407, ... 49407]; chunk.weights: [1, 1, 1.1, 1, ... 1]
 * ```
 */
export function chunkTokens(
  parts: PromptPart[],
  encode: (text: string) => number[],
  options: ChunkOptions,
): PromptChunk[] {
  const bos = checkId("bos", options.bos);
  const eos = checkId("eos", options.eos);
  const pad = options.pad === undefined ? eos : checkId("pad", options.pad);
  const comma = options.comma === undefined ? undefined : checkId("comma", options.comma);
  const backtrack = options.commaPaddingBacktrack ?? 20;
  const length = options.chunkLength ?? 75;
  if (!Number.isInteger(length) || length < 1) {
    throw new RangeError(`chunkLength must be a positive integer (75 for CLIP), got ${length}`);
  }
  if (!Number.isInteger(backtrack) || backtrack < 0) {
    throw new RangeError(`commaPaddingBacktrack must be an integer ≥ 0 (20 by default)`);
  }
  const chunks: PromptChunk[] = [];
  let tokens: number[] = [];
  let multipliers: number[] = [];
  let fixes: EmbeddingFix[] = [];
  let lastComma = -1;
  const nextChunk = () => {
    while (tokens.length < length) {
      tokens.push(eos);
      multipliers.push(1.0);
    }
    const ids = [bos, ...tokens, eos];
    if (pad !== eos) {
      const first = ids.indexOf(eos);
      for (let k = first + 1; k < ids.length; k++) ids[k] = pad;
    }
    const chunk: PromptChunk = { ids, weights: [1.0, ...multipliers, 1.0] };
    if (fixes.length > 0) chunk.fixes = fixes;
    chunks.push(chunk);
    tokens = [];
    multipliers = [];
    fixes = [];
    lastComma = -1;
  };
  for (const [text, weight] of parts) {
    if (text === "BREAK" && weight === -1) {
      nextChunk();
      continue;
    }
    const ids = encode(text);
    if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id))) {
      throw new TypeError(`encode("${text}") must return an array of integer token ids`);
    }
    let i = 0;
    while (i < ids.length) {
      const token = ids[i];
      const embedding = options.findEmbedding?.(ids, i);
      if (token === comma) lastComma = tokens.length;
      else if (
        backtrack !== 0 && tokens.length === length && lastComma !== -1 &&
        tokens.length - lastComma <= backtrack
      ) {
        const at = lastComma + 1;
        const movedTokens = tokens.slice(at);
        const movedMultipliers = multipliers.slice(at);
        const movedFixes = fixes.filter((f) => f.offset >= at).map((f) => ({
          ...f,
          offset: f.offset - at,
        }));
        tokens = tokens.slice(0, at);
        multipliers = multipliers.slice(0, at);
        fixes = fixes.filter((f) => f.offset < at);
        nextChunk();
        tokens = movedTokens;
        multipliers = movedMultipliers;
        fixes = movedFixes;
      }
      if (tokens.length === length) nextChunk();
      if (embedding === undefined) {
        tokens.push(token);
        multipliers.push(weight);
        i++;
        continue;
      }
      if (embedding.vectors > length) {
        throw new RangeError(
          `embedding ${embedding.name} has ${embedding.vectors} vectors; a chunk holds ${length}`,
        );
      }
      if (tokens.length + embedding.vectors > length) nextChunk();
      fixes.push({ offset: tokens.length, name: embedding.name, vectors: embedding.vectors });
      for (let k = 0; k < embedding.vectors; k++) {
        tokens.push(0);
        multipliers.push(weight);
      }
      i += embedding.length;
    }
  }
  if (tokens.length > 0 || chunks.length === 0) nextChunk();
  return chunks;
}

/**
 * A1111's "Original" emphasis on one chunk's encoder output `[T, D]` (T = `weights.length`):
 * `z = z · w` per token, then `z = z · (mean(z₀) / mean(z))` with the mean over the whole chunk,
 * in float32 (means accumulated in float64). Returns a new array.
 *
 * @example
 * ```ts
 * import { applyWeights } from "@denoise/sd/pipeline";
 * const z = new Float32Array(77 * 768).fill(0.5); // [77, 768] text encoder output for one chunk
 * const weights = new Array(77).fill(1);
 * weights[3] = 1.2;
 * const weighted = applyWeights(z, weights); // [77, 768]
 * ```
 */
export function applyWeights(
  embeds: Float32Array,
  weights: number[],
  options: ApplyWeightsOptions = {},
): Float32Array {
  const tokens = weights.length;
  if (tokens === 0 || embeds.length % tokens !== 0) {
    throw new RangeError(
      `applyWeights: ${embeds.length} values do not split into ${tokens} token rows: ` +
        `pass one chunk's [T, D] output with T weights`,
    );
  }
  const dim = embeds.length / tokens;
  const out = new Float32Array(embeds.length);
  let before = 0, after = 0;
  for (let t = 0; t < tokens; t++) {
    const w = Math.fround(weights[t]);
    if (!Number.isFinite(w)) throw new RangeError(`applyWeights: weight ${t} is ${weights[t]}`);
    for (let d = t * dim; d < (t + 1) * dim; d++) {
      before += embeds[d];
      out[d] = embeds[d] * w;
      after += out[d];
    }
  }
  if (options.normalize === false) return out;
  const originalMean = Math.fround(before / embeds.length);
  const newMean = Math.fround(after / embeds.length);
  if (newMean === 0) {
    throw new RangeError(
      "applyWeights: the weighted chunk has mean 0, so its mean cannot be restored: " +
        "avoid all-zero weights or pass { normalize: false }",
    );
  }
  const ratio = Math.fround(originalMean / newMean);
  for (let i = 0; i < out.length; i++) out[i] *= ratio;
  return out;
}
