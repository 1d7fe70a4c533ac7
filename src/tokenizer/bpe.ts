/**
 * CLIP's byte-level BPE: the byte ↔ unicode table, the pre-tokenizer regex, merges parsing, the
 * vocabulary that OpenAI's `SimpleTokenizer` derives from a merges file, and the merge loop with a
 * per-word cache.
 *
 * @module
 */
import { PY_WHITESPACE } from "./clean.ts";

/** How many merges CLIP reads from a merges file (the lines after the header). */
const CLIP_MERGE_COUNT = 49152 - 256 - 2;
/**
 * CLIP's start-of-text token.
 *
 * @example
 * ```ts
 * import { START_OF_TEXT } from "./bpe.ts";
 * START_OF_TEXT; // "<|startoftext|>"
 * ```
 */
export const START_OF_TEXT = "<|startoftext|>";
/**
 * CLIP's end-of-text token (also its unknown token, and SD 1.x's pad token).
 *
 * @example
 * ```ts
 * import { END_OF_TEXT } from "./bpe.ts";
 * END_OF_TEXT; // "<|endoftext|>"
 * ```
 */
export const END_OF_TEXT = "<|endoftext|>";
const END_OF_WORD = "</w>";

/**
 * GPT-2/CLIP's `bytes_to_unicode`: byte `b` is written as the character at index `b`. Printable
 * Latin-1 bytes stand for themselves; the rest map to U+0100 onwards.
 *
 * @example
 * ```ts
 * import { bytesToUnicode } from "./bpe.ts";
 * const table = bytesToUnicode();
 * table[0x61]; // "a"
 * table[0x20]; // "Ġ"
 * ```
 */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return table;
}

/** The byte characters in `bytes_to_unicode`'s dict order: printable bytes first, then the rest. */
function byteCharsInVocabOrder(table: string[]): string[] {
  const order: number[] = [];
  for (let b = 0; b < 256; b++) if (table[b].charCodeAt(0) === b) order.push(b);
  for (let b = 0; b < 256; b++) if (table[b].charCodeAt(0) !== b) order.push(b);
  return order.map((b) => table[b]);
}

/**
 * Parses a CLIP merges file as transformers reads `merges.txt`: trim, split into lines, drop the
 * first (header) line, keep at most 48,894 merges of two symbols each.
 *
 * @example
 * ```ts
 * import { parseMerges } from "./bpe.ts";
 * parseMerges("#version: 0.2\ni n\nin g</w>\n", "merges.txt"); // [["i", "n"], ["in", "g</w>"]]
 * ```
 */
export function parseMerges(text: string, source: string): [string, string][] {
  const lines = text.trim().split("\n").slice(1, CLIP_MERGE_COUNT + 1);
  return lines.map((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2 || parts[0] === "") {
      throw new Error(
        `${source}: line ${i + 2} is ${JSON.stringify(line)}, not a merge of two symbols ` +
          `("a b"); expected a CLIP BPE merges file`,
      );
    }
    return [parts[0], parts[1]];
  });
}

/**
 * The vocabulary OpenAI's `SimpleTokenizer` derives from merges: the 256 byte characters, the same
 * with `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`; a token's id is
 * its index. With CLIP's 48,894 merges that is the 49,408-token vocabulary.
 *
 * @example
 * ```ts
 * import { vocabFromMerges } from "./bpe.ts";
 * const vocab = vocabFromMerges([["i", "n"]]);
 * vocab.length; // 515
 * vocab[512]; // "in"
 * ```
 */
export function vocabFromMerges(merges: [string, string][]): string[] {
  const bytes = byteCharsInVocabOrder(bytesToUnicode());
  return [
    ...bytes,
    ...bytes.map((c) => c + END_OF_WORD),
    ...merges.map(([a, b]) => a + b),
    START_OF_TEXT,
    END_OF_TEXT,
  ];
}

/**
 * CLIP's pre-tokenizer: the special tokens, the English contractions, runs of letters, single
 * digits, and runs of anything else but whitespace. Case-insensitive, as the reference compiles it.
 */
const PRE_TOKENIZER = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|` +
    `[^${PY_WHITESPACE}\\p{L}\\p{N}]+`,
  "giu",
);

/**
 * Splits cleaned text into the words that BPE encodes one by one.
 *
 * @example
 * ```ts
 * import { preTokenize } from "./bpe.ts";
 * preTokenize("don't 1080p!!"); // ["don", "'t", "1", "0", "8", "0", "p", "!!"]
 * ```
 */
export function preTokenize(text: string): string[] {
  return text.match(PRE_TOKENIZER) ?? [];
}

/**
 * Options for {@link ByteLevelBpe}.
 *
 * @example
 * ```ts
 * import type { ByteLevelBpeOptions } from "./bpe.ts";
 * const options: ByteLevelBpeOptions = { unkId: 49407, cacheSize: 4096 };
 * ```
 */
export interface ByteLevelBpeOptions {
  /** The id given to a symbol that is not in the vocabulary. */
  unkId: number;
  /** How many words the cache keeps before it starts over (default 16,384). */
  cacheSize?: number;
}

/**
 * Byte-level BPE over a vocabulary and ranked merges, as CLIP's `bpe()`: a word's UTF-8 bytes
 * become byte characters, the last one carries `</w>`, and the lowest-ranked adjacent pair is
 * merged (everywhere, left to right) until no pair has a rank. Results are cached per word.
 *
 * @example
 * ```ts
 * import { ByteLevelBpe, parseMerges, vocabFromMerges } from "./bpe.ts";
 * const merges = parseMerges("#version: 0.2\nh i</w>", "inline");
 * const vocab = new Map(vocabFromMerges(merges).map((t, i) => [t, i]));
 * const bpe = new ByteLevelBpe(vocab, merges, { unkId: vocab.get("<|endoftext|>")! });
 * bpe.encodeWord("hi"); // [512]
 * ```
 */
export class ByteLevelBpe {
  readonly #vocab: Map<string, number>;
  readonly #ranks = new Map<string, number>();
  readonly #byteChars = bytesToUnicode();
  readonly #encoder = new TextEncoder();
  readonly #cache = new Map<string, number[]>();
  readonly #cacheSize: number;
  readonly #unkId: number;

  /** Builds the merge ranks; `vocab` maps token strings to ids. */
  constructor(
    vocab: Map<string, number>,
    merges: [string, string][],
    options: ByteLevelBpeOptions,
  ) {
    this.#vocab = vocab;
    // A repeated merge keeps its last rank, as Python's dict(zip(merges, ranks)) does.
    merges.forEach(([a, b], rank) => this.#ranks.set(`${a} ${b}`, rank));
    this.#unkId = options.unkId;
    this.#cacheSize = options.cacheSize ?? 16384;
  }

  /** The BPE symbols of one pre-tokenized word (a special token stays whole). */
  symbols(word: string): string[] {
    if (word === START_OF_TEXT || word === END_OF_TEXT) return [word];
    const bytes = this.#encoder.encode(word);
    let symbols = Array.from(bytes, (b) => this.#byteChars[b]);
    if (symbols.length === 0) return [];
    symbols[symbols.length - 1] += END_OF_WORD;
    while (symbols.length > 1) {
      let best = Infinity;
      let first = "", second = "";
      for (let i = 0; i + 1 < symbols.length; i++) {
        const rank = this.#ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < best) {
          best = rank;
          first = symbols[i];
          second = symbols[i + 1];
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (symbols[i] === first && i + 1 < symbols.length && symbols[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(symbols[i]);
        }
      }
      symbols = merged;
    }
    return symbols;
  }

  /** The token ids of one pre-tokenized word; symbols missing from the vocabulary get `unkId`. */
  encodeWord(word: string): number[] {
    const hit = this.#cache.get(word);
    if (hit) return hit;
    const ids = this.symbols(word).map((s) => this.#vocab.get(s) ?? this.#unkId);
    if (this.#cache.size >= this.#cacheSize) this.#cache.clear();
    this.#cache.set(word, ids);
    return ids;
  }
}
