/**
 * Reads what a CLIP tokenizer is made of: a diffusers `tokenizer/` folder (`vocab.json`,
 * `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`) or CLIP's original merges file
 * (`bpe_simple_vocab_16e6.txt`, plain or gzipped), whose vocabulary is derived from the merges.
 *
 * @module
 */
import { END_OF_TEXT, parseMerges, START_OF_TEXT, vocabFromMerges } from "./bpe.ts";

/**
 * The special tokens and added tokens a tokenizer folder declares.
 *
 * @example
 * ```ts no-run
 * import { readTokenizerFiles, type SpecialTokens } from "./files.ts";
 * const special: SpecialTokens = (await readTokenizerFiles("models/sd21/tokenizer")).special;
 * special.pad; // "!"
 * ```
 */
export interface SpecialTokens {
  /** The start token, `<|startoftext|>`. */
  bos: string;
  /** The end token, `<|endoftext|>`. */
  eos: string;
  /** The unknown token, `<|endoftext|>` for CLIP. */
  unk: string;
  /** The pad token: `<|endoftext|>` for SD 1.x, "!" for SD 2.x. */
  pad: string;
  /** `added_tokens_decoder` of `tokenizer_config.json`: content → id. */
  added: Map<string, number>;
  /** Ids of the added tokens marked `special` (skipped by decode). */
  addedSpecialIds: number[];
  /** `model_max_length` of `tokenizer_config.json`, when it is a usable length. */
  modelMaxLength?: number;
}

/**
 * A tokenizer's vocabulary, merges and special tokens, with where they came from.
 *
 * @example
 * ```ts no-run
 * import { readTokenizerFiles, type TokenizerFiles } from "./files.ts";
 * const files: TokenizerFiles = await readTokenizerFiles("bpe_simple_vocab_16e6.txt.gz");
 * files.merges.length; // 48894
 * ```
 */
export interface TokenizerFiles {
  /** Token string (byte-level form) → id. */
  vocab: Map<string, number>;
  /** Merges in rank order. */
  merges: [string, string][];
  /** Special and added tokens. */
  special: SpecialTokens;
  /** The path they were read from, for messages. */
  source: string;
}

const EXPECTED = "expected a diffusers tokenizer folder (vocab.json + merges.txt, such as " +
  "<model>/tokenizer) or CLIP's merges file bpe_simple_vocab_16e6.txt(.gz)";

function toLocation(path: string | URL): string | URL {
  return typeof path === "string" && path.startsWith("file:") ? new URL(path) : path;
}

function describe(path: string | URL): string {
  return path instanceof URL ? decodeURIComponent(path.pathname) : path;
}

function child(dir: string | URL, name: string): string | URL {
  if (dir instanceof URL) return new URL(name, dir.href.endsWith("/") ? dir : `${dir.href}/`);
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function exists(path: string | URL): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function readText(path: string | URL): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

async function readJson(path: string | URL): Promise<unknown> {
  const text = await readText(path);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${describe(path)} is not valid JSON (${(e as Error).message})`);
  }
}

/** A token value in a config: a string, or an AddedToken object with `content`. */
function content(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (
    value && typeof value === "object" &&
    typeof (value as { content?: unknown }).content === "string"
  ) {
    return (value as { content: string }).content;
  }
  return undefined;
}

function asRecord(value: unknown): Record<string, unknown> {
  return value && typeof value === "object" && !Array.isArray(value)
    ? value as Record<string, unknown>
    : {};
}

function parseVocab(json: unknown, source: string): Map<string, number> {
  const entries = Object.entries(asRecord(json));
  if (entries.length === 0 || entries.some(([, id]) => !Number.isInteger(id))) {
    throw new Error(`${source} is not a CLIP vocabulary: expected a JSON object of token → id`);
  }
  return new Map(entries as [string, number][]);
}

/** Special tokens as transformers resolves them: special_tokens_map.json over tokenizer_config.json. */
function specialTokens(
  config: Record<string, unknown>,
  map: Record<string, unknown>,
): SpecialTokens {
  const pick = (key: string, fallback: string) =>
    content(map[key]) ?? content(config[key]) ?? fallback;
  const added = new Map<string, number>();
  const addedSpecialIds: number[] = [];
  for (const [id, token] of Object.entries(asRecord(config.added_tokens_decoder))) {
    const text = content(token);
    if (text === undefined || !Number.isInteger(Number(id))) continue;
    added.set(text, Number(id));
    if (asRecord(token).special === true) addedSpecialIds.push(Number(id));
  }
  const length = config.model_max_length;
  const usable = typeof length === "number" && Number.isInteger(length) && length >= 2 &&
    length <= 1_000_000;
  return {
    bos: pick("bos_token", START_OF_TEXT),
    eos: pick("eos_token", END_OF_TEXT),
    unk: pick("unk_token", END_OF_TEXT),
    pad: pick("pad_token", END_OF_TEXT),
    added,
    addedSpecialIds,
    modelMaxLength: usable ? length : undefined,
  };
}

async function readFolder(dir: string | URL): Promise<TokenizerFiles> {
  const vocabPath = child(dir, "vocab.json");
  const mergesPath = child(dir, "merges.txt");
  for (const file of [vocabPath, mergesPath]) {
    if (await exists(file)) continue;
    const nested = await exists(child(child(dir, "tokenizer"), "vocab.json"));
    throw new Error(
      `${describe(file)} is missing: ${EXPECTED}` +
        (nested
          ? `; ${describe(dir)} looks like a model folder, pass its tokenizer/ subfolder`
          : ""),
    );
  }
  const vocab = parseVocab(await readJson(vocabPath), describe(vocabPath));
  const merges = parseMerges((await readText(mergesPath)) ?? "", describe(mergesPath));
  const config = asRecord(await readJson(child(dir, "tokenizer_config.json")));
  const map = asRecord(await readJson(child(dir, "special_tokens_map.json")));
  return { vocab, merges, special: specialTokens(config, map), source: describe(dir) };
}

/**
 * The most a merges file may hold, before or after gunzip: OpenAI's is 1.3 MB gzipped, 3.2 MB
 * plain. A bigger file is not a merges file, and a gzip bomb stops here instead of filling memory.
 */
export const MAX_MERGES_BYTES = 64 * 1024 * 1024;

/**
 * Gunzips `bytes` as text, refusing to produce more than `maxBytes` (the stream is cancelled as
 * soon as the output passes it).
 *
 * @example
 * ```ts
 * import { gunzipText } from "./files.ts";
 * const gz = await new Response(
 *   new Blob(["a b\n"]).stream().pipeThrough(new CompressionStream("gzip")),
 * ).bytes();
 * console.log(await gunzipText(gz, { source: "x.gz" })); // "a b\n"
 * ```
 */
export async function gunzipText(
  bytes: Uint8Array,
  options: { source: string; maxBytes?: number },
): Promise<string> {
  const { source, maxBytes = MAX_MERGES_BYTES } = options;
  const reader = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip")).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      total += r.value.length;
      if (total > maxBytes) {
        await reader.cancel();
        throw new RangeError(
          `${source} expands to more than ${maxBytes} bytes, far beyond a CLIP merges file ` +
            `(3.2 MB): ${EXPECTED}`,
        );
      }
      chunks.push(r.value);
    }
  } catch (e) {
    if (e instanceof RangeError) throw e;
    throw new Error(`${source} is not a readable gzip file (${(e as Error).message}): ${EXPECTED}`);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(out);
}

async function readMergesFile(file: string | URL): Promise<TokenizerFiles> {
  const source = describe(file);
  const size = (await Deno.stat(file)).size;
  if (size > MAX_MERGES_BYTES) {
    throw new Error(`${source} is ${size} bytes, far beyond a CLIP merges file: ${EXPECTED}`);
  }
  const bytes = await Deno.readFile(file);
  const gzipped = bytes[0] === 0x1f && bytes[1] === 0x8b;
  const text = gzipped ? await gunzipText(bytes, { source }) : new TextDecoder().decode(bytes);
  const merges = parseMerges(text, source);
  if (merges.length === 0) throw new Error(`${source} holds no merges: ${EXPECTED}`);
  const vocab = new Map(vocabFromMerges(merges).map((token, id) => [token, id]));
  const special = specialTokens({}, {});
  return { vocab, merges, special, source };
}

/**
 * Reads a tokenizer folder or an original merges file (see the module doc); a missing path or
 * file is an error that names it and what was expected.
 *
 * @example
 * ```ts no-run
 * import { readTokenizerFiles } from "./files.ts";
 * const files = await readTokenizerFiles("models/sd15/tokenizer");
 * files.vocab.size; // 49408
 * files.special.pad; // "<|endoftext|>"
 * ```
 */
export async function readTokenizerFiles(path: string | URL): Promise<TokenizerFiles> {
  const location = toLocation(path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(location);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${describe(location)} does not exist: ${EXPECTED}`);
    }
    throw e;
  }
  return info.isDirectory ? await readFolder(location) : await readMergesFile(location);
}
