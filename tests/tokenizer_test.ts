import assert from "node:assert/strict";
import { type ClipTokenizer, loadTokenizer } from "../src/tokenizer/mod.ts";
import { cleanText, fixText, whitespaceClean } from "../src/tokenizer/clean.ts";
import { unescapeHtml } from "../src/tokenizer/html_entities.ts";
import {
  ByteLevelBpe,
  bytesToUnicode,
  parseMerges,
  preTokenize,
  vocabFromMerges,
} from "../src/tokenizer/bpe.ts";
import { readNpy } from "../src/io/npy.ts";
import { FIXTURES, SHARED, sharedAvailable } from "./util.ts";

const CLIP_MERGES = "data/clip/bpe_simple_vocab_16e6.txt.gz";
const TINY_SD15 = new URL("models/tiny-sd15/tokenizer/", FIXTURES);
const TINY_SD2 = new URL("models/tiny-sd2/tokenizer/", FIXTURES);
const PROMPT = "a photo of an astronaut riding a horse on mars";

interface VectorCase {
  text: string;
  ids: number[];
  tokens: string[];
  input_ids_sd1_pad_eos: number[];
  input_ids_sd2_pad_excl: number[];
  decoded: string;
}

/**
 * Where our clean-up knowingly differs from ftfy.fix_text (none of the fixture vectors hits one):
 * `ftfy` is what ftfy's own documentation gives, `ours` what cleanText deliberately produces.
 */
const KNOWN_DIFFERENCES = [
  {
    text: "schÃ¶n",
    ftfy: "schön",
    ours: "schã¶n",
    reason: "mojibake (UTF-8 read as Latin-1): ftfy's fix_encoding heuristics are not reproduced",
  },
  {
    text: "Ã³ and sÃ³",
    ftfy: "ó and só",
    ours: "ã³ and sã³",
    reason: "mojibake (UTF-8 read as Latin-1): ftfy's fix_encoding heuristics are not reproduced",
  },
  {
    text: "&checkmark; &Jscr;ohn",
    ftfy: "✓ 𝒥ohn",
    ours: "&checkmark; &jscr;ohn",
    reason: "HTML5-only entity names: the entity table holds the HTML 4 set (+ &apos;)",
  },
];

let clip: Promise<{ sd1: ClipTokenizer; sd2: ClipTokenizer }> | undefined;
/** The real CLIP vocabulary as SD 1.x (pad <|endoftext|>) and SD 2.x (pad "!") tokenize with it. */
function clipTokenizers() {
  clip ??= (async () => {
    const url = new URL(CLIP_MERGES, SHARED);
    return { sd1: await loadTokenizer(url), sd2: await loadTokenizer(url, { padToken: "!" }) };
  })();
  return clip;
}

async function vectors(): Promise<VectorCase[]> {
  const json = await Deno.readTextFile(new URL("tokenizer/clip_tokenizer_vectors.json", FIXTURES));
  return JSON.parse(json).cases;
}

async function npyIds(path: string): Promise<number[]> {
  const a = await readNpy(new URL(path, FIXTURES));
  assert.deepEqual(a.shape, [1, 77], `${path} shape`);
  return Array.from(a.data as ArrayLike<number>);
}

async function rejects(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: Error) => {
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("CLIP vocabulary: every fixture vector (ids, tokens, SD 1.x and SD 2.x calls, decode)", async () => {
  if (!sharedAvailable(CLIP_MERGES)) return;
  const { sd1, sd2 } = await clipTokenizers();
  assert.deepEqual([sd1.bos, sd1.eos, sd1.pad, sd1.maxLength], [49406, 49407, 49407, 77]);
  assert.deepEqual([sd2.bos, sd2.eos, sd2.pad], [49406, 49407, 0]);
  const failures: string[] = [];
  const cases = await vectors();
  assert.equal(cases.length, 33);
  for (const c of cases) {
    const ids = sd1.encode(c.text);
    const got = {
      ids,
      tokens: ids.map((id) => sd1.idToToken(id)),
      input_ids_sd1_pad_eos: sd1.encodePadded(c.text, { onTruncate: () => {} }),
      input_ids_sd2_pad_excl: sd2.encodePadded(c.text, { onTruncate: () => {} }),
      decoded: sd1.decode(c.input_ids_sd1_pad_eos),
    };
    for (const [field, value] of Object.entries(got)) {
      const want = c[field as keyof VectorCase];
      if (JSON.stringify(value) !== JSON.stringify(want)) {
        failures.push(
          `${JSON.stringify(c.text)} ${field}:\n  got  ${JSON.stringify(value)}` +
            `\n  want ${JSON.stringify(want)}`,
        );
      }
    }
  }
  assert.equal(failures.length, 0, `${failures.length} mismatches:\n${failures.join("\n")}`);
});

Deno.test("CLIP vocabulary: derived from the merges as SimpleTokenizer does", async () => {
  if (!sharedAvailable(CLIP_MERGES)) return;
  const { sd1 } = await clipTokenizers();
  assert.equal(sd1.tokenToId("!"), 0);
  assert.equal(sd1.tokenToId("!</w>"), 256);
  assert.equal(sd1.tokenToId("in"), 512); // the first merge, "i n"
  assert.equal(sd1.tokenToId("<|startoftext|>"), 49406);
  assert.equal(sd1.idToToken(49405), "jekyll</w>"); // the 48,894th merge, "jeky ll</w>"
  assert.equal(sd1.tokenToId("habib</w>"), undefined); // the 48,895th is past CLIP's count
  assert.equal(sd1.idToToken(49408), undefined);
  assert.deepEqual(sd1.encode("wow!"), [2781, 256]);
  assert.deepEqual((await clipTokenizers()).sd2.encode("wow!"), [2781, 0]);
});

Deno.test("tiny models' tokenizers reproduce the pipeline's tokens_cond / tokens_uncond", async () => {
  const runs = [
    { dir: TINY_SD15, run: "tiny-sd15__pndm", pad: 927 },
    { dir: TINY_SD2, run: "tiny-sd2__ddim_v", pad: 0 },
  ];
  for (const { dir, run, pad } of runs) {
    const tok = await loadTokenizer(dir);
    assert.deepEqual([tok.bos, tok.eos, tok.pad, tok.maxLength], [926, 927, pad, 77], run);
    const cond = await npyIds(`tokenizer/${run}/tokens_cond.npy`);
    assert.deepEqual(tok.encodePadded(PROMPT), cond, run);
    assert.deepEqual(tok.encodePadded(""), await npyIds(`tokenizer/${run}/tokens_uncond.npy`), run);
  }
});

Deno.test("the tiny merges.txt alone derives the same vocabulary as its vocab.json", async () => {
  const folder = await loadTokenizer(TINY_SD15);
  const fromMerges = await loadTokenizer(new URL("merges.txt", TINY_SD15));
  const vocab: Record<string, number> = JSON.parse(
    await Deno.readTextFile(new URL("vocab.json", TINY_SD15)),
  );
  assert.equal(Object.keys(vocab).length, 928);
  for (const [token, id] of Object.entries(vocab)) {
    assert.equal(fromMerges.tokenToId(token), id, token);
    assert.equal(fromMerges.idToToken(id), token, token);
  }
  assert.deepEqual(fromMerges.encode(PROMPT), folder.encode(PROMPT));
});

Deno.test("pad token '!' (SD 2.x): every '!' in a prompt is split out as id 0", async () => {
  const sd15 = await loadTokenizer(TINY_SD15);
  const sd2 = await loadTokenizer(TINY_SD2);
  const forced = await loadTokenizer(TINY_SD15, { padToken: "!" });
  const text = "wow!! so cool!";
  const bang = sd2.encode(text);
  const split = [...sd15.encode("wow"), 0, 0, ...sd15.encode(" so cool"), 0];
  assert.deepEqual(bang, split);
  assert.deepEqual(forced.encode(text), split);
  assert.notDeepEqual(sd15.encode(text), split);
  assert.equal(forced.pad, 0);
  // "!" is special for SD 2.x, so decode drops it as transformers' skip_special_tokens does.
  assert.equal(sd2.decode(bang), "wow so cool");
  assert.equal(sd15.decode(sd15.encode(text)), "wow!! so cool!");
});

Deno.test("tokenizers load from string paths and file URLs", async () => {
  const path = decodeURIComponent(TINY_SD15.pathname);
  const ids = (await loadTokenizer(TINY_SD15)).encode(PROMPT);
  assert.deepEqual((await loadTokenizer(path)).encode(PROMPT), ids);
  assert.deepEqual((await loadTokenizer(path.replace(/\/$/, ""))).encode(PROMPT), ids);
  assert.deepEqual((await loadTokenizer(TINY_SD15.href)).encode(PROMPT), ids);
});

Deno.test("truncation keeps bos + maxLength − 2 ids + eos and reports the cut text", async () => {
  const tok = await loadTokenizer(TINY_SD15, { maxLength: 6 });
  const cuts: string[] = [];
  const ids = tok.encodePadded(PROMPT, { onTruncate: (cut) => cuts.push(cut) });
  const all = tok.encode(PROMPT);
  assert.deepEqual(ids, [926, ...all.slice(0, 4), 927]);
  assert.deepEqual(cuts, ["astronaut riding a horse on mars"]);
  const short = tok.encodePadded("a photo", { onTruncate: (cut) => cuts.push(cut) });
  assert.deepEqual(short, [926, 320, 564, 927, 927, 927]);
  assert.equal(cuts.length, 1, "no report when nothing is cut");

  const warned: unknown[][] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warned.push(args);
  try {
    tok.encodePadded(PROMPT);
  } finally {
    console.warn = warn;
  }
  assert.equal(warned.length, 1);
  assert.match(
    String(warned[0][0]),
    /truncated .* up to 6 tokens: astronaut riding a horse on mars$/,
  );
});

Deno.test("truncation of a 100-token prompt with the real vocabulary", async () => {
  if (!sharedAvailable(CLIP_MERGES)) return;
  const { sd1 } = await clipTokenizers();
  const long = (await vectors())[32];
  let cut = "";
  const ids = sd1.encodePadded(long.text, { onTruncate: (c) => cut = c });
  assert.equal(ids.length, 77);
  assert.equal(
    cut,
    "station, award winning photography, volumetric fog, dramatic sky with scattered clouds, " +
      "highly detailed skin texture, freckles, green eyes",
  );
});

Deno.test("encode works on prompt fragments (for A1111 weighting)", async () => {
  if (!sharedAvailable(CLIP_MERGES)) return;
  const { sd1 } = await clipTokenizers();
  const whole = sd1.encode("(masterpiece:1.2), a photo of an astronaut");
  const parts = [
    ...sd1.encode("(masterpiece:1.2), "),
    ...sd1.encode("a photo of"),
    ...sd1.encode(" an astronaut"),
  ];
  assert.deepEqual(parts, whole);
  assert.deepEqual(sd1.encode("  "), []);
});

Deno.test("added tokens from tokenizer_config.json split the text and decode as words", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["merges.txt", "special_tokens_map.json"]) {
      await Deno.copyFile(new URL(f, TINY_SD15), `${dir}/${f}`);
    }
    const vocab = JSON.parse(await Deno.readTextFile(new URL("vocab.json", TINY_SD15)));
    vocab["€</w>"] = 929; // a hand-made token outside the byte table
    await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(vocab));
    const config = JSON.parse(await Deno.readTextFile(new URL("tokenizer_config.json", TINY_SD15)));
    config.added_tokens_decoder["928"] = { content: "<cat-toy>", special: false };
    config.model_max_length = 10;
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    const tok = await loadTokenizer(dir);
    const ids = tok.encode("a<cat-toy>photo");
    assert.deepEqual(ids, [320, 928, 564]);
    assert.equal(tok.maxLength, 10);
    assert.equal(tok.tokenToId("<cat-toy>"), 928);
    assert.equal(tok.idToToken(928), "<cat-toy>");
    assert.equal(tok.decode([926, ...ids, 927]), "a <cat-toy> photo");
    assert.equal(tok.decode([929]), "€");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad paths, files and options fail with messages that name the problem", async () => {
  await rejects(
    loadTokenizer("/nonexistent/tokenizer"),
    /\/nonexistent\/tokenizer does not exist: expected a diffusers tokenizer folder/,
  );
  await rejects(
    loadTokenizer(new URL("models/tiny-sd15/", FIXTURES)),
    /vocab\.json is missing: .*pass its tokenizer\/ subfolder/,
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(new URL("vocab.json", TINY_SD15), `${dir}/vocab.json`);
    await rejects(
      loadTokenizer(dir),
      /merges\.txt is missing: expected .*vocab\.json \+ merges\.txt/,
    );
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\ni n\nbroken\n");
    await rejects(
      loadTokenizer(dir),
      /merges\.txt: line 3 is "broken", not a merge of two symbols/,
    );
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\ni n\n");
    await rejects(
      loadTokenizer(dir, { padToken: "<pad>" }),
      /pad token "<pad>" is not in the vocabulary; pass a padToken/,
    );
    await rejects(loadTokenizer(dir, { maxLength: 1 }), /maxLength 1 is not an integer ≥ 2/);
    await Deno.writeTextFile(`${dir}/vocab.json`, "[1, 2]");
    await rejects(loadTokenizer(dir), /vocab\.json is not a CLIP vocabulary/);
    await Deno.writeTextFile(`${dir}/vocab.json`, "{");
    await rejects(loadTokenizer(dir), /vocab\.json is not valid JSON/);
    await Deno.writeFile(`${dir}/bad.txt.gz`, new Uint8Array([0x1f, 0x8b, 1, 2, 3, 4]));
    await rejects(loadTokenizer(`${dir}/bad.txt.gz`), /bad\.txt\.gz is not a readable gzip file/);
    await Deno.writeTextFile(`${dir}/empty.txt`, "#version: 0.2\n");
    await rejects(loadTokenizer(`${dir}/empty.txt`), /empty\.txt holds no merges/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const tok = await loadTokenizer(TINY_SD15);
  assert.throws(
    () => tok.decode([5000]),
    /token id 5000 is not in this tokenizer's vocabulary of 928/,
  );
});

Deno.test("fixText reproduces ftfy's documented fixes", () => {
  const cases: [string, string][] = [
    ["ﬂuﬃeﬆ", "fluffiest"], // fix_latin_ligatures
    ["ＬＯＵＤ　ＮＯＩＳＥＳ", "LOUD NOISES"], // fix_character_width
    ["Ｕﾀｰﾝ", "Uターン"],
    ["\u201chere\u2019s a test\u201d", '"here\'s a test"'], // uncurl_quotes
    ["&lt;tag&gt;", "<tag>"], // unescape_html
    ["P&EACUTE;REZ", "PÉREZ"],
    ["BUNDESSTRA&SZLIG;E", "BUNDESSTRASSE"],
    ["&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"],
    ["this&not that", "this&not that"],
    ["&#39;&#x27;&#X27;&#0;&#1;&#150;&#xD800;&#12a;", "'''\ufffd–\ufffd&#12a;"],
    ["&amp;lt;3", "<3"], // fixes repeat until nothing changes
    ["<em>HTML entities &lt;3</em>", "<em>HTML entities &lt;3</em>"],
    ["a &amp; b\n<b> &amp;\nc &amp; d", "a & b\n<b> &amp;\nc &amp; d"], // off from the first `<` on
    [
      "\x01\x1b[36;44mI&#x92;m blue, da ba dee da ba doo&#133;\x1b[0m",
      "I'm blue, da ba dee da ba doo…",
    ],
    ["\ufeffParty\x7f like\r\nit\u2028is\u20291999\x85", "Party like\nit\nis\n1999…"],
    ["e\u0301", "\u00e9"], // NFC
    ["x\ud83dy", "x\ufffdy"], // fix_surrogates
  ];
  for (const [text, want] of cases) assert.equal(fixText(text), want, JSON.stringify(text));
  assert.equal(
    unescapeHtml("fish &amp; chips &#39;n&#x27; P&EACUTE;REZ"),
    "fish & chips 'n' PÉREZ",
  );
});

Deno.test("cleanText: whitespace collapse and lower case; known differences from ftfy", () => {
  assert.equal(whitespaceClean("  a\t\n photo\u3000\u00a0\x1c of \u2003"), "a photo of");
  assert.equal(cleanText("  A Photo of an ＡＳＴＲＯＮＡＵＴ\n\n"), "a photo of an astronaut");
  assert.equal(cleanText("ΟΔΟΣ İ"), "οδος i\u0307"); // final sigma and dotted I, as Python's lower()
  for (const d of KNOWN_DIFFERENCES) {
    assert.equal(cleanText(d.text), d.ours, `${JSON.stringify(d.text)} (${d.reason})`);
    assert.notEqual(d.ours, d.ftfy.toLowerCase(), `${JSON.stringify(d.text)} now matches ftfy`);
  }
});

Deno.test("byte-level BPE pieces: byte table, pre-tokenizer, merges, cache", () => {
  const table = bytesToUnicode();
  assert.equal(new Set(table).size, 256);
  assert.deepEqual([table[0x21], table[0x20], table[0x00], table[0xad]], ["!", "Ġ", "Ā", "Ń"]);
  assert.deepEqual(preTokenize("don't 1080p!! <|endoftext|>café"), [
    "don",
    "'t",
    "1",
    "0",
    "8",
    "0",
    "p",
    "!!",
    "<|endoftext|>",
    "café",
  ]);
  // "b c</w>" is repeated: as in Python's dict(zip(merges, ranks)), its last rank (3) counts.
  const merges = parseMerges("#version: 0.2\nb c</w>\na b\nx x\nb c</w>\n", "inline");
  assert.deepEqual(merges, [["b", "c</w>"], ["a", "b"], ["x", "x"], ["b", "c</w>"]]);
  const vocab = vocabFromMerges(merges);
  assert.equal(vocab.length, 518);
  assert.deepEqual(vocab.slice(510), [
    "ł</w>",
    "Ń</w>",
    "bc</w>",
    "ab",
    "xx",
    "bc</w>",
    "<|startoftext|>",
    "<|endoftext|>",
  ]);
  const bpe = new ByteLevelBpe(new Map(vocab.map((t, i) => [t, i])), merges, { unkId: -1 });
  assert.deepEqual(bpe.symbols("abc"), ["ab", "c</w>"]); // rank 1 before the repeated rank 3
  assert.deepEqual(bpe.symbols("xxxx"), ["xx", "x", "x</w>"]); // left to right, no overlap
  assert.deepEqual(bpe.symbols("é!"), ["Ã", "©", "!</w>"]); // UTF-8 bytes
  const small = new ByteLevelBpe(new Map([["xx", 7]]), merges, { unkId: -1, cacheSize: 1 });
  assert.deepEqual(small.encodeWord("xxx"), [7, -1]);
  assert.deepEqual(small.encodeWord("abc"), [-1, -1]);
  assert.deepEqual(small.encodeWord("xxx"), [7, -1], "after the cache starts over");
  assert.deepEqual(bpe.symbols("<|startoftext|>"), ["<|startoftext|>"]);
});

Deno.test("loadTokenizer: a gzipped merges file may not expand past 64 MiB (a gzip bomb stops early)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_tok_" });
  try {
    const zeros = new Uint8Array(70 * 1024 * 1024); // 70 MiB of zeros, about 70 KB gzipped
    const bomb = await new Response(
      new Blob([zeros]).stream().pipeThrough(new CompressionStream("gzip")),
    ).bytes();
    assert.ok(bomb.length < 1024 * 1024, `${bomb.length} bytes`);
    await Deno.writeFile(`${dir}/bomb.txt.gz`, bomb);
    await assert.rejects(
      loadTokenizer(`${dir}/bomb.txt.gz`),
      /bomb\.txt\.gz expands to more than 67108864 bytes, far beyond a CLIP merges file/,
    );
    const huge = await Deno.open(`${dir}/huge.txt`, { write: true, create: true });
    await huge.truncate(65 * 1024 * 1024); // sparse: no disk used
    huge.close();
    await assert.rejects(
      loadTokenizer(`${dir}/huge.txt`),
      /huge\.txt is 68157440 bytes, far beyond/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
