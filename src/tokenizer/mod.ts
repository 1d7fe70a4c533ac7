/**
 * CLIP's BPE tokenizer, as Stable Diffusion pipelines call it: transformers' `CLIPTokenizer` with
 * ftfy clean-up, `<|startoftext|>`/`<|endoftext|>`, truncation to 75 tokens and padding to 77 with
 * the model's pad token.
 *
 * Load it from a diffusers model's `tokenizer/` folder (`vocab.json` + `merges.txt`, and the
 * `tokenizer_config.json` / `special_tokens_map.json` that name the pad token) or from CLIP's
 * original merges file `bpe_simple_vocab_16e6.txt(.gz)`, whose vocabulary is derived as OpenAI's
 * `SimpleTokenizer` does.
 *
 * SD 2.x quirk, reproduced: its pad token is "!", which transformers then treats as a special
 * token, so every "!" in a prompt becomes id 0 instead of being merged with its neighbours.
 *
 * @example
 * ```ts no-run
 * import { loadTokenizer } from "@denoise/sd/tokenizer";
 * const tok = await loadTokenizer("models/sd15/tokenizer");
 * const ids = tok.encodePadded("a photo of an astronaut riding a horse on mars"); // 77 ids
 * ```
 *
 * @module
 */
import { ByteLevelBpe, bytesToUnicode, preTokenize } from "./bpe.ts";
import { cleanText, PY_WHITESPACE } from "./clean.ts";
import { readTokenizerFiles, type TokenizerFiles } from "./files.ts";

/**
 * Options for {@link loadTokenizer}.
 *
 * @example
 * ```ts no-run
 * import { loadTokenizer, type LoadTokenizerOptions } from "@denoise/sd/tokenizer";
 * const sd2: LoadTokenizerOptions = { padToken: "!" };
 * const tok = await loadTokenizer("bpe_simple_vocab_16e6.txt.gz", sd2);
 * ```
 */
export interface LoadTokenizerOptions {
  /**
   * The pad token, overriding the model folder's (`<|endoftext|>` for SD 1.x, "!" for SD 2.x;
   * `<|endoftext|>` when loading a bare merges file). Use "!" with the original merges file to
   * tokenize as SD 2.x does.
   */
  padToken?: string;
  /** Sequence length with start/end tokens: the folder's `model_max_length`, else 77. */
  maxLength?: number;
}

/**
 * Options for {@link ClipTokenizer.encodePadded}.
 *
 * @example
 * ```ts no-run
 * import { loadTokenizer, type EncodePaddedOptions } from "@denoise/sd/tokenizer";
 * const tok = await loadTokenizer("models/sd15/tokenizer");
 * const options: EncodePaddedOptions = { onTruncate: (cut) => console.log(`dropped: ${cut}`) };
 * tok.encodePadded("a very long prompt", options);
 * ```
 */
export interface EncodePaddedOptions {
  /**
   * Called with the decoded text that truncation cut off. Without it a too-long prompt makes a
   * `console.warn` naming what was cut, as diffusers logs it.
   */
  onTruncate?: (cut: string) => void;
}

/**
 * A loaded CLIP tokenizer. Ids are plain numbers; pass them to the text encoder as int32.
 *
 * @example
 * ```ts no-run
 * import { type ClipTokenizer, loadTokenizer } from "@denoise/sd/tokenizer";
 * const tok: ClipTokenizer = await loadTokenizer("models/sd15/tokenizer");
 * const ids = Int32Array.from(tok.encodePadded("a red fox")); // [1, 77] input_ids
 * tok.decode(tok.encode("a red fox")); // "a red fox"
 * ```
 */
export interface ClipTokenizer {
  /** Cleans and tokenizes `text` without start/end tokens; usable on prompt fragments. */
  encode(text: string): number[];
  /** `[bos, ...encode(text)[:maxLength-2], eos]` padded with `pad` to `maxLength`. */
  encodePadded(text: string, options?: EncodePaddedOptions): number[];
  /** Text of `ids`, skipping special tokens, as transformers' `decode(skip_special_tokens)`. */
  decode(ids: number[]): string;
  /** Id of `<|startoftext|>`. */
  readonly bos: number;
  /** Id of `<|endoftext|>`. */
  readonly eos: number;
  /** Id of the pad token (= eos for SD 1.x, 0 = "!" for SD 2.x). */
  readonly pad: number;
  /** Padded sequence length, 77 for every SD text encoder. */
  readonly maxLength: number;
  /** Id of a vocabulary token written in byte-level form (`"photo</w>"`), or undefined. */
  tokenToId(token: string): number | undefined;
  /** Byte-level token string of an id, or undefined outside the vocabulary. */
  idToToken(id: number): string | undefined;
}

const DEFAULT_MAX_LENGTH = 77;
const PY_STRIP = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, "gu");
/** transformers' `clean_up_tokenization`, applied by `decode` as CLIP's config asks. */
const CLEAN_UP: [string, string][] = [
  [" .", "."],
  [" ?", "?"],
  [" !", "!"],
  [" ,", ","],
  [" ' ", "'"],
  [" n't", "n't"],
  [" 'm", "'m"],
  [" 's", "'s"],
  [" 've", "'ve"],
  [" 're", "'re"],
];

class Tokenizer implements ClipTokenizer {
  readonly bos: number;
  readonly eos: number;
  readonly pad: number;
  readonly maxLength: number;
  readonly #vocab: Map<string, number>;
  readonly #tokens: Map<number, string>;
  readonly #bpe: ByteLevelBpe;
  /** Added tokens (special ones included), longest first: the text is split on them first. */
  readonly #added: [string, number][];
  readonly #addedStarts: Set<string>;
  readonly #skipOnDecode: Set<number>;
  readonly #byteOf = new Map<string, number>();
  readonly #utf8 = new TextEncoder();
  /** Added tokens that are not special: decode keeps them, as separate words. */
  readonly #addedPlain: Set<number>;

  constructor(files: TokenizerFiles, options: LoadTokenizerOptions) {
    const { vocab, merges, special, source } = files;
    this.#vocab = vocab;
    const added = new Map(special.added);
    const specials = [special.bos, special.eos, special.unk, options.padToken ?? special.pad];
    const ids = specials.map((token, i) => {
      const id = vocab.get(token) ?? added.get(token);
      if (id === undefined) {
        const role = ["start", "end", "unknown", "pad"][i];
        throw new Error(
          `${source}: the ${role} token ${JSON.stringify(token)} is not in the vocabulary; ` +
            (i === 3
              ? "pass a padToken that vocab.json has (SD 1.x pads with <|endoftext|>, SD 2.x with !)"
              : "expected a CLIP vocabulary with <|startoftext|> and <|endoftext|>"),
        );
      }
      added.set(token, id);
      return id;
    });
    [this.bos, this.eos, , this.pad] = ids;
    this.#skipOnDecode = new Set([...ids, ...special.addedSpecialIds]);
    this.#addedPlain = new Set([...added.values()].filter((id) => !this.#skipOnDecode.has(id)));
    this.#added = [...added].sort((a, b) => b[0].length - a[0].length);
    this.#addedStarts = new Set(this.#added.map(([t]) => t[0]));
    this.#tokens = new Map([...vocab].map(([t, id]) => [id, t]));
    for (const [t, id] of added) if (!this.#tokens.has(id)) this.#tokens.set(id, t);
    this.#bpe = new ByteLevelBpe(vocab, merges, { unkId: ids[2] });
    bytesToUnicode().forEach((c, b) => this.#byteOf.set(c, b));
    const maxLength = options.maxLength ?? special.modelMaxLength ?? DEFAULT_MAX_LENGTH;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new Error(
        `maxLength ${maxLength} is not an integer ≥ 2: it counts the start and end tokens (77 for SD)`,
      );
    }
    this.maxLength = maxLength;
  }

  /** transformers' added-token split: added tokens stand alone, the text between is tokenized. */
  #split(text: string): (string | number)[] {
    const out: (string | number)[] = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const hit = this.#addedStarts.has(text[i])
        ? this.#added.find(([t]) => text.startsWith(t, i))
        : undefined;
      if (!hit) {
        i++;
        continue;
      }
      if (i > start) out.push(text.slice(start, i));
      out.push(hit[1]);
      i += hit[0].length;
      start = i;
    }
    if (start < text.length) out.push(text.slice(start));
    return out;
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of this.#split(text)) {
      if (typeof piece === "number") ids.push(piece);
      else {for (const word of preTokenize(cleanText(piece))) {
          ids.push(...this.#bpe.encodeWord(word));
        }}
    }
    return ids;
  }

  encodePadded(text: string, options: EncodePaddedOptions = {}): number[] {
    const ids = this.encode(text);
    const room = this.maxLength - 2;
    if (ids.length > room) {
      const cut = this.decode(ids.slice(room));
      if (options.onTruncate) options.onTruncate(cut);
      else {
        console.warn(
          `The following part of your input was truncated because CLIP can only handle ` +
            `sequences up to ${this.maxLength} tokens: ${cut}`,
        );
      }
    }
    const out = [this.bos, ...ids.slice(0, room), this.eos];
    while (out.length < this.maxLength) out.push(this.pad);
    return out;
  }

  decode(ids: number[]): string {
    // As transformers' slow `_decode`: runs of vocabulary tokens are byte-decoded, added tokens
    // that are not special stand alone, and the pieces are joined with spaces.
    const pieces: string[] = [];
    let run: string[] = [];
    const flush = () => {
      const text = this.#tokensToString(run);
      if (text.length > 0) pieces.push(text);
      run = [];
    };
    for (const id of ids) {
      if (this.#skipOnDecode.has(id)) continue;
      const token = this.#tokens.get(id);
      if (token === undefined) {
        throw new RangeError(
          `token id ${id} is not in this tokenizer's vocabulary of ${this.#tokens.size} tokens`,
        );
      }
      if (this.#addedPlain.has(id)) {
        flush();
        pieces.push(token);
      } else {
        run.push(token);
      }
    }
    flush();
    let text = pieces.join(" ");
    for (const [from, to] of CLEAN_UP) text = text.replaceAll(from, to);
    return text;
  }

  /** CLIP's `convert_tokens_to_string`: byte-decode (invalid UTF-8 → U+FFFD), `</w>` → space. */
  #tokensToString(tokens: string[]): string {
    const bytes: number[] = [];
    for (const c of tokens.join("")) {
      const b = this.#byteOf.get(c);
      // A character outside the byte table (only in a hand-made vocabulary) stays as written.
      if (b !== undefined) bytes.push(b);
      else bytes.push(...this.#utf8.encode(c));
    }
    const text = new TextDecoder().decode(new Uint8Array(bytes)).replaceAll("</w>", " ");
    return text.replace(PY_STRIP, "");
  }

  tokenToId(token: string): number | undefined {
    return this.#vocab.get(token) ?? this.#added.find(([t]) => t === token)?.[1];
  }

  idToToken(id: number): string | undefined {
    return this.#tokens.get(id);
  }
}

/**
 * Loads a CLIP tokenizer from a diffusers `tokenizer/` folder (`vocab.json` + `merges.txt`, with
 * `tokenizer_config.json` / `special_tokens_map.json` when present) or from CLIP's original merges
 * file (`bpe_simple_vocab_16e6.txt`, gzipped or not). `path` is a file system path or a `file:`
 * URL.
 *
 * @example
 * ```ts no-run
 * import { loadTokenizer } from "@denoise/sd/tokenizer";
 * const sd2 = await loadTokenizer("../shared/data/clip/bpe_simple_vocab_16e6.txt.gz", {
 *   padToken: "!",
 * });
 * sd2.encode("wow!"); // [2781, 0]: with "!" as pad token, every "!" is id 0 (SD 1.x: [2781, 256])
 * ```
 */
export async function loadTokenizer(
  path: string | URL,
  options: LoadTokenizerOptions = {},
): Promise<ClipTokenizer> {
  return new Tokenizer(await readTokenizerFiles(path), options);
}
