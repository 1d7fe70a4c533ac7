import assert from "node:assert/strict";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import type { Pipeline } from "../../src/pipeline/load.ts";
import { applyWeights } from "../../src/pipeline/prompt_parse.ts";
import { testPipeline } from "./pipes.ts";
import { GPU_TEST } from "../gpu_util.ts";
import { assertClose, assertCloseToScale, errorStats, fixture, modelDir } from "../util.ts";

const PROMPT = "a photo of an astronaut riding a horse on mars";

function pipeFor(model: string): Promise<Pipeline> {
  return testPipeline(model, { dtype: "f32" });
}

/** The text encoder's output for `ids` (77 of them), read back: [77·D]. */
async function encoderOutput(pipe: Pipeline, ids: number[], clipSkip = 1): Promise<Float32Array> {
  const out = pipe.textEncoder.forward(ids, { clipSkip });
  out.pooled.dispose();
  const host = await out.lastHiddenState.read();
  out.lastHiddenState.dispose();
  return host;
}

/** `encodePrompt` read back, after checking both shapes; frees the GPU tensors. */
async function encodeRead(
  pipe: Pipeline,
  prompt: string,
  options: Parameters<typeof encodePrompt>[2] = {},
): Promise<{ cond: Float32Array; uncond: Float32Array; length: number }> {
  const e = await encodePrompt(pipe, prompt, options);
  const dim = pipe.textEncoder.config.hidden_size;
  assert.equal(e.cond.shape.length, 3);
  assert.deepEqual(e.uncond.shape, e.cond.shape, "cond and uncond have the same shape");
  assert.equal(e.cond.shape[0], 1);
  assert.equal(e.cond.shape[2], dim);
  assert.equal(e.cond.shape[1] % 77, 0, `[${e.cond.shape}] is a whole number of 77-token chunks`);
  const out = { cond: await e.cond.read(), uncond: await e.uncond.read(), length: e.cond.shape[1] };
  e.dispose();
  return out;
}

for (const [model, run] of [["tiny-sd15", "tiny-sd15__pndm"], ["tiny-sd2", "tiny-sd2__ddim_v"]]) {
  Deno.test({
    name: `encode ${model}: a plain prompt gives diffusers' embeddings with parse a1111 and none`,
    ignore: modelDir(model) === undefined,
    ...GPU_TEST,
    fn: async () => {
      const pipe = await pipeFor(model);
      const cond = await fixture(`dumps/${run}/text_embeds_cond.npy`);
      const uncond = await fixture(`dumps/${run}/text_embeds_uncond.npy`);
      for (const parse of ["a1111", "none"] as const) {
        const got = await encodeRead(pipe, PROMPT, { parse });
        assert.equal(got.length, 77);
        assertCloseToScale(got.cond, cond.data, 1e-4, `${model} cond (parse ${parse})`);
        assertCloseToScale(got.uncond, uncond.data, 1e-4, `${model} uncond (parse ${parse})`);
      }
    },
  });
}

Deno.test({
  name: "encode: (word:1.3) scales that token's rows, then restores the chunk's mean",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    const tok = pipe.tokenizer;
    assert.equal(tok.encode("red").length, 1, "the weighted word is one token");
    const plain = await encodeRead(pipe, "a red fox");
    const weighted = await encodeRead(pipe, "a (red:1.3) fox", { negativePrompt: "[blurry]" });
    const weights = new Array(77).fill(1);
    weights[1 + tok.encode("a").length] = 1.3; // after bos and "a"
    const want = applyWeights(plain.cond, weights);
    assertClose(weighted.cond, want, { atol: 1e-6, rtol: 1e-6, label: "weighted cond" });
    const moved = errorStats(weighted.cond, plain.cond).maxAbs;
    assert.ok(moved > 0.1, `the weight changes the embedding (max |Δ| ${moved})`);
    const blurry = await encodeRead(pipe, "blurry");
    const n = tok.encode("blurry").length;
    const wantNeg = applyWeights(blurry.cond, new Array(77).fill(1).fill(1 / 1.1, 1, 1 + n));
    assertClose(weighted.uncond, wantNeg, { atol: 1e-6, rtol: 1e-6, label: "[blurry] uncond" });
  },
});

Deno.test({
  name: "encode: a prompt over 75 tokens gives 154 rows, the other side padded with empty chunks",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    assert.equal(pipe.tokenizer.encode("cat").length, 1);
    const long = "cat ".repeat(100); // 100 tokens: chunks of 75 and 25
    const first = await encodeRead(pipe, "cat ".repeat(75));
    const second = await encodeRead(pipe, "cat ".repeat(25));
    const empty = await encodeRead(pipe, "");
    const fox = await encodeRead(pipe, "a fox");
    const rows = 77 * pipe.textEncoder.config.hidden_size;

    const got = await encodeRead(pipe, long);
    assert.equal(got.length, 154);
    assertClose(got.cond.subarray(0, rows), first.cond, { label: "cond chunk 1" });
    assertClose(got.cond.subarray(rows), second.cond, { label: "cond chunk 2" });
    assertClose(got.uncond.subarray(0, rows), empty.cond, { label: "uncond chunk 1" });
    assertClose(got.uncond.subarray(rows), empty.cond, { label: "uncond padding chunk" });

    const neg = await encodeRead(pipe, "a fox", { negativePrompt: long });
    assert.equal(neg.length, 154);
    assertClose(neg.cond.subarray(0, rows), fox.cond, { label: "short cond" });
    assertClose(neg.cond.subarray(rows), empty.cond, { label: "cond padding chunk" });
    assertClose(neg.uncond, got.cond, { label: "long negative prompt" });
  },
});

Deno.test({
  name: 'encode: parse "none" truncates at 77 tokens, reports the cut, keeps brackets verbatim',
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    const cuts: string[] = [];
    const got = await encodeRead(pipe, "cat ".repeat(100), {
      parse: "none",
      onTruncate: (cut) => cuts.push(cut),
    });
    assert.equal(got.length, 77);
    assert.equal(cuts.length, 1, "one truncation reported (the empty negative is not cut)");
    assert.deepEqual(cuts[0].trim().split(/\s+/), new Array(25).fill("cat"));
    const first = await encodeRead(pipe, "cat ".repeat(75));
    assertClose(got.cond, first.cond, { label: "truncated cond" });

    const text = "a (red:1.3) fox";
    const verbatim = await encodeRead(pipe, text, { parse: "none" });
    const want = await encoderOutput(pipe, pipe.tokenizer.encodePadded(text));
    assertClose(verbatim.cond, want, { label: "brackets go to the tokenizer" });
  },
});

Deno.test({
  name: "encode: clipSkip 2 is the penultimate layer for both prompts; bad options are refused",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    const tok = pipe.tokenizer;
    const one = await encodeRead(pipe, PROMPT, { clipSkip: 1 });
    const two = await encodeRead(pipe, PROMPT, { clipSkip: 2 });
    const diff = errorStats(two.cond, one.cond).maxAbs;
    assert.ok(diff > 0.1, `clipSkip 2 differs from 1 (max |Δ| ${diff})`);
    const want = await encoderOutput(pipe, tok.encodePadded(PROMPT), 2);
    assertClose(two.cond, want, { label: "clipSkip 2 cond" });
    const wantUncond = await encoderOutput(pipe, tok.encodePadded(""), 2);
    assertClose(two.uncond, wantUncond, { label: "clipSkip 2 uncond" });

    const layers = pipe.textEncoder.config.num_hidden_layers;
    for (const bad of [0, 1.5, -1, NaN]) {
      await assert.rejects(
        encodePrompt(pipe, PROMPT, { clipSkip: bad }),
        /clipSkip must be a whole number ≥ 1 \(1 = last layer\)/,
      );
    }
    await assert.rejects(
      encodePrompt(pipe, PROMPT, { clipSkip: layers + 1 }),
      new RegExp(`clipSkip ${layers + 1} exceeds the text encoder's ${layers} layers`),
    );
    await assert.rejects(
      encodePrompt(pipe, PROMPT, { parse: "compel" as "none" }),
      /parse must be "a1111" or "none", got "compel"/,
    );
  },
});

Deno.test({
  name: "encode: dispose() returns every buffer the embeddings took",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    for (const prompt of [PROMPT, "a (red:1.3) fox", "cat ".repeat(100)]) {
      await pipe.rt.flush();
      const before = pipe.rt.pool.stats().inUseBytes;
      const e = await encodePrompt(pipe, prompt, { negativePrompt: "blurry" });
      await e.cond.read();
      e.dispose();
      assert.equal(pipe.rt.pool.stats().inUseBytes, before, `bytes left in use after "${prompt}"`);
    }
  },
});
