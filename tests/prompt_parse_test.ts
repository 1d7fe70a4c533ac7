import assert from "node:assert/strict";
import {
  applyWeights,
  chunkTokens,
  parsePromptAttention,
  type PromptPart,
} from "../src/pipeline/prompt_parse.ts";
import { assertClose } from "./util.ts";

Deno.test("parsePromptAttention: the cases of A1111's docstring", () => {
  assert.deepEqual(parsePromptAttention("normal text"), [["normal text", 1.0]]);
  assert.deepEqual(parsePromptAttention("an (important) word"), [
    ["an ", 1.0],
    ["important", 1.1],
    [" word", 1.0],
  ]);
  assert.deepEqual(parsePromptAttention("(unbalanced"), [["unbalanced", 1.1]]);
  assert.deepEqual(parsePromptAttention("\\(literal\\]"), [["(literal]", 1.0]]);
  assert.deepEqual(parsePromptAttention("(unnecessary)(parens)"), [["unnecessaryparens", 1.1]]);
  assert.deepEqual(
    parsePromptAttention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
    [
      ["a ", 1.0],
      ["house", 1.5730000000000004],
      [" ", 1.1],
      ["on", 1.0],
      [" a ", 1.1],
      ["hill", 0.55],
      [", sun, ", 1.1],
      ["sky", 1.4641000000000006],
      [".", 1.1],
    ],
  );
});

Deno.test("parsePromptAttention: nesting, square brackets, explicit weights with spaces", () => {
  assert.deepEqual(parsePromptAttention("((word))"), [["word", 1.2100000000000002]]);
  assert.deepEqual(parsePromptAttention("[word]"), [["word", 0.9090909090909091]]);
  assert.deepEqual(parsePromptAttention("[[word]]"), [["word", 0.8264462809917354]]);
  assert.deepEqual(parsePromptAttention("(word:1.3)"), [["word", 1.3]]);
  assert.deepEqual(parsePromptAttention("(word : 1.3 )"), [["word ", 1.3]]);
  assert.deepEqual(parsePromptAttention("((word:1.5))"), [["word", 1.6500000000000001]]);
  assert.deepEqual(parsePromptAttention("(a:.5) (b:-1) (c:2.)"), [
    ["a", 0.5],
    [" ", 1],
    ["b", -1],
    [" ", 1],
    ["c", 2],
  ]);
  // A colon without a number is text; the bracket still weights.
  assert.deepEqual(parsePromptAttention("(a:b)"), [["a:b", 1.1]]);
  assert.deepEqual(parsePromptAttention(""), [["", 1.0]]);
  assert.throws(() => parsePromptAttention("(a:1.2.3)"), /weight "1\.2\.3".*not a number/);
});

Deno.test("parsePromptAttention: escapes and unbalanced brackets as A1111", () => {
  assert.deepEqual(parsePromptAttention("\\(a\\) \\[b\\] c\\\\d"), [["(a) [b] c\\d", 1.0]]);
  // A lone backslash before another character is dropped.
  assert.deepEqual(parsePromptAttention("a\\b"), [["ab", 1.0]]);
  assert.deepEqual(parsePromptAttention("a ]b) c"), [["a ]b) c", 1.0]]);
  assert.deepEqual(parsePromptAttention("[unbalanced"), [["unbalanced", 0.9090909090909091]]);
  assert.deepEqual(parsePromptAttention("x (a [b"), [
    ["x ", 1.0],
    ["a ", 1.1],
    ["b", 1.0],
  ]);
  assert.deepEqual(parsePromptAttention("\\((x)\\)"), [["(", 1.0], ["x", 1.1], [")", 1.0]]);
});

Deno.test("parsePromptAttention: BREAK splits only as a whole word", () => {
  assert.deepEqual(parsePromptAttention("a BREAK b"), [["a", 1], ["BREAK", -1], ["b", 1]]);
  assert.deepEqual(parsePromptAttention("BREAK a"), [["", 1], ["BREAK", -1], ["a", 1]]);
  assert.deepEqual(parsePromptAttention("aBREAK b_BREAK éBREAK"), [["aBREAK b_BREAK éBREAK", 1]]);
  assert.deepEqual(parsePromptAttention("a BREAK (b)"), [["a", 1], ["BREAK", -1], ["", 1], [
    "b",
    1.1,
  ]]);
  // Inside brackets the marker's weight is scaled too, so A1111 no longer treats it as BREAK.
  assert.deepEqual(parsePromptAttention("(a BREAK b)"), [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]);
});

// A toy tokenizer: each space-separated word is one token; "," is its own token.
const COMMA = 267;
const BOS = 49406;
const EOS = 49407;
function encode(text: string): number[] {
  return text.replaceAll(",", " , ").split(/\s+/).filter((w) => w !== "").map((w) =>
    w === "," ? COMMA : 1000 + Number(w.replace(/\D/g, "") || 0)
  );
}
const words = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `w${from + i}`).join(" ");
const OPTS = { bos: BOS, eos: EOS, comma: COMMA };

Deno.test("chunkTokens: one padded chunk with per-token weights", () => {
  const chunks = chunkTokens(parsePromptAttention("w1 (w2) [w3]"), encode, OPTS);
  assert.equal(chunks.length, 1);
  const { ids, weights } = chunks[0];
  assert.equal(ids.length, 77);
  assert.deepEqual(ids.slice(0, 5), [BOS, 1001, 1002, 1003, EOS]);
  assert.ok(ids.slice(4).every((id) => id === EOS));
  assert.deepEqual(weights.slice(0, 5), [1, 1, 1.1, 0.9090909090909091, 1]);
  assert.ok(weights.slice(4).every((w) => w === 1));
  const empty = chunkTokens(parsePromptAttention(""), encode, OPTS);
  assert.equal(empty.length, 1);
  assert.deepEqual(empty[0].ids, [BOS, ...new Array(76).fill(EOS)]);
});

Deno.test("chunkTokens: 75 tokens fill one chunk; the 76th opens another", () => {
  const full = chunkTokens([[words(0, 75), 1]], encode, OPTS);
  assert.equal(full.length, 1);
  assert.deepEqual(full[0].ids, [BOS, ...Array.from({ length: 75 }, (_, i) => 1000 + i), EOS]);
  const over = chunkTokens([[words(0, 76), 1]], encode, OPTS);
  assert.equal(over.length, 2);
  assert.equal(over[0].ids[75], 1074);
  assert.deepEqual(over[1].ids.slice(0, 3), [BOS, 1075, EOS]);
});

Deno.test("chunkTokens: the chunk ends after a comma within the last 20 tokens", () => {
  // 60 words, a comma (token index 60), then 20 words: 81 tokens.
  const prompt = `${words(0, 60)}, ${words(60, 80)}`;
  const [a, b] = chunkTokens([[prompt, 1.2]], encode, OPTS);
  // First chunk: 60 words + the comma, then eos padding.
  assert.equal(a.ids[61], COMMA);
  assert.ok(a.ids.slice(62).every((id) => id === EOS));
  assert.deepEqual(a.weights.slice(60, 63), [1.2, 1.2, 1]);
  // Second chunk: the 14 moved words (w60..w73), then the rest.
  assert.deepEqual(b.ids.slice(0, 22), [
    BOS,
    ...Array.from({ length: 20 }, (_, i) => 1060 + i),
    EOS,
  ]);
  assert.deepEqual(b.weights.slice(0, 22), [1, ...new Array(20).fill(1.2), 1]);
  // A comma 25 tokens back is too far: hard split at 75.
  const far = chunkTokens([[`${words(0, 50)}, ${words(50, 80)}`, 1]], encode, OPTS);
  assert.equal(far[0].ids[76], EOS);
  assert.equal(far[0].ids[75], 1073);
  assert.deepEqual(far[1].ids.slice(0, 8), [BOS, 1074, 1075, 1076, 1077, 1078, 1079, EOS]);
  // Backtracking off, or no comma id: hard split too.
  for (const opts of [{ ...OPTS, commaPaddingBacktrack: 0 }, { bos: BOS, eos: EOS }]) {
    const hard = chunkTokens([[prompt, 1]], encode, opts);
    assert.equal(hard[0].ids[75], 1073);
    assert.equal(hard[1].ids[1], 1074);
  }
});

Deno.test("chunkTokens: BREAK closes the chunk, even an empty one", () => {
  const parts: PromptPart[] = parsePromptAttention("w1 w2 BREAK w3");
  const chunks = chunkTokens(parts, encode, OPTS);
  assert.equal(chunks.length, 2);
  assert.deepEqual(chunks[0].ids.slice(0, 4), [BOS, 1001, 1002, EOS]);
  assert.deepEqual(chunks[1].ids.slice(0, 3), [BOS, 1003, EOS]);
  const leading = chunkTokens(parsePromptAttention("BREAK w1"), encode, OPTS);
  assert.equal(leading.length, 2);
  assert.deepEqual(leading[0].ids, [BOS, ...new Array(76).fill(EOS)]);
  // The text "BREAK" with any other weight is tokenized as text.
  const literal = chunkTokens([["BREAK", -1.1]], encode, OPTS);
  assert.equal(literal.length, 1);
  assert.equal(literal[0].ids[1], 1000);
});

Deno.test("chunkTokens: a distinct pad id fills after the first eos (SD 2.x)", () => {
  const [c] = chunkTokens([["w1 w2", 1]], encode, { ...OPTS, pad: 0 });
  assert.deepEqual(c.ids.slice(0, 6), [BOS, 1001, 1002, EOS, 0, 0]);
  assert.ok(c.ids.slice(4).every((id) => id === 0));
  assert.throws(() => chunkTokens([["a", 1]], encode, { bos: -1, eos: EOS }), /bos must be/);
});

Deno.test("applyWeights: multiplies per token, then restores the chunk mean", () => {
  const z = Float32Array.from([1, 2, 3, 4, 5, 6]); // [3 tokens, 2 dims]
  const w = [1, 2, 0.5];
  const scaled = [1, 2, 6, 8, 2.5, 3]; // mean 3.75, original mean 3.5
  const ratio = Math.fround(3.5 / 3.75);
  const got = applyWeights(z, w);
  assertClose(got, scaled.map((v) => Math.fround(v * ratio)), { atol: 0, rtol: 0 });
  const mean = got.reduce((a, b) => a + b, 0) / got.length;
  assertClose([mean], [3.5], { atol: 1e-6, rtol: 0, label: "restored mean" });
  assertClose(applyWeights(z, w, { normalize: false }), scaled, { atol: 0, rtol: 0 });
  assert.deepEqual(z, Float32Array.from([1, 2, 3, 4, 5, 6])); // input untouched
  assert.throws(() => applyWeights(z, [1, 1, 1, 1]), /do not split into 4 token rows/);
  assert.throws(() => applyWeights(Float32Array.from([1, -1]), [1, 1]), /mean 0/);
});
