import assert from "node:assert/strict";
import { decodePng } from "../../src/io/png.ts";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { generate } from "../../src/pipeline/generate.ts";
import { GeneratedImage } from "../../src/pipeline/image.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { modelDir } from "../util.ts";

const MODEL = modelDir("tiny-sd15");
let pipe: Promise<Pipeline> | undefined;
const tiny = () =>
  pipe ??= testRuntime().then((runtime) => loadPipeline(MODEL!, { dtype: "f32", runtime }));

Deno.test({
  name: "generate: count images from seed, seed+1, … equal to the three composable steps",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const before = p.rt.pool.stats().inUseBytes;
    const opts = { steps: 2, guidance: 5, sampler: "euler_a", negativePrompt: "blurry" };
    const seen: string[] = [];
    const images = await generate(p, "a red fox", {
      ...opts,
      seed: 5,
      count: 2,
      onStep: (s) => seen.push(`${s.image}:${s.index}/${s.total}:${s.seed}`),
    });
    assert.equal(images.length, 2);
    assert.deepEqual(images.map((i) => i.seed), [5n, 6n]);
    assert.deepEqual(seen, ["0:0/2:5", "0:1/2:5", "1:0/2:6", "1:1/2:6"]);
    assert.equal(p.rt.pool.stats().inUseBytes, before, "generate left GPU memory behind");
    // the same picture through encodePrompt → sampleLatents → decodeLatents
    using embeds = await encodePrompt(p, "a red fox", { negativePrompt: "blurry" });
    let last: Tensor | undefined;
    for await (
      const s of sampleLatents(p, embeds, { ...opts, scheduler: "euler_a", seed: 6 })
    ) last = s.latents;
    using latents = last!;
    const manual = await decodeLatents(p, latents);
    assert.deepEqual(images[1].data, manual.data, "generate differs from the composable steps");
    const info = images[1].parameters;
    assert.match(info, /^a red fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, /);
    assert.match(info, /CFG scale: 5, Seed: 6, Size: 128x128, Model: tiny-sd15/);
  },
});

Deno.test("GeneratedImage: PNG with the infotext, and a Jupyter display of image/png", () => {
  const data = new Uint8Array(2 * 3 * 4).map((_, i) => (i % 4 === 3 ? 255 : i * 9));
  const image = new GeneratedImage({ width: 2, height: 3, data }, {
    prompt: "p",
    seed: 7n,
    parameters: "p\nSteps: 1, Seed: 7",
  });
  const png = decodePng(image.png());
  assert.deepEqual([png.width, png.height], [2, 3]);
  assert.deepEqual(png.data, data);
  assert.equal(png.text.parameters, "p\nSteps: 1, Seed: 7");
  const display = (image as unknown as Record<symbol, () => Record<string, string>>)[
    Symbol.for("Jupyter.display")
  ];
  assert.equal(typeof display, "function", "no Symbol.for('Jupyter.display') method");
  const bundle = display.call(image);
  const shown = decodePng(Uint8Array.fromBase64(bundle["image/png"]));
  assert.deepEqual(shown.data, data);
  assert.match(bundle["text/plain"], /2×3, seed 7: p/);
  assert.throws(
    () => new GeneratedImage({ width: 2, height: 2, data }, image),
    /needs 16 RGBA bytes, got 24/,
  );
});

Deno.test({
  name: "generate: bad count, seed or sampler are refused before any work; an abort stops it",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    await assert.rejects(generate(p, "x", { count: 0 }), /count must be a whole number ≥ 1/);
    await assert.rejects(generate(p, "x", { seed: -1 }), /outside torch's 0/);
    await assert.rejects(generate(p, "x", { seed: 2n ** 64n - 1n, count: 2 }), /outside torch's/);
    await assert.rejects(generate(p, "x", { sampler: "no such sampler" }), /no such sampler/i);
    const stop = new AbortController();
    const images = await generate(p, "x", {
      steps: 3,
      count: 2,
      signal: stop.signal,
      onStep: () => stop.abort(),
    });
    assert.deepEqual(images, [], "an aborted image was returned");
  },
});
