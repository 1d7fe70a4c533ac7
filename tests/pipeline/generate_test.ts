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
import { dumpDir, fixture, modelDir } from "../util.ts";

const MODEL = modelDir("tiny-sd15");
let pipe: Promise<Pipeline> | undefined;
const tiny = () =>
  pipe ??= testRuntime().then((runtime) =>
    loadPipeline(MODEL!, { dtype: "f32", runtime, vaeEncoder: true })
  );

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

const IMG2IMG = dumpDir("tiny-sd15__img2img_ddim_s0.3");
const INPAINT = dumpDir("tiny-sd15__inpaint4_euler_s0.75");

/** The channel values of `image` more than 1 away from the dump's `image_uint8` (RGB). */
async function offPixels(image: { data: Uint8Array }, base: URL): Promise<number> {
  const ref = await fixture("image_uint8.npy", base);
  let off = 0;
  for (let i = 0; i < ref.data.length; i++) {
    if (Math.abs(image.data[Math.floor(i / 3) * 4 + (i % 3)] - ref.data[i]) > 1) off++;
  }
  return off;
}

Deno.test({
  name: "generate: image + strength (img2img) and + mask (inpainting) give diffusers' images, " +
    "with Denoising strength in the infotext",
  ignore: MODEL === undefined || IMG2IMG === undefined || INPAINT === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const path = (u: URL, f: string) => decodeURIComponent(new URL(f, u).pathname);
    const prompt = "a photo of an astronaut riding a horse on mars";
    const common = { steps: 4, guidance: 7.5, seed: 0 };
    const [a] = await generate(p, prompt, {
      ...common,
      image: path(IMG2IMG!, "init_image.png"),
      strength: 0.3,
      sampler: "DDIM",
    });
    assert.equal(await offPixels(a, IMG2IMG!), 0, "img2img differs from diffusers");
    assert.match(a.parameters, /Sampler: DDIM, CFG scale: 7\.5, Seed: 0, Size: 128x128, /);
    assert.match(a.parameters, /Denoising strength: 0\.3/);
    const [b] = await generate(p, prompt, {
      ...common,
      image: decodePng(await Deno.readFile(new URL("init_image.png", INPAINT))),
      mask: path(INPAINT!, "mask.png"),
      strength: 0.75,
      sampler: "euler",
    });
    assert.equal(await offPixels(b, INPAINT!), 0, "inpainting differs from diffusers");
    assert.match(b.parameters, /Sampler: Euler, .*Denoising strength: 0\.75/);
  },
});

Deno.test({
  name: "generate: init images of another size are refused with the fix, or resized; a mask " +
    "needs an image; strength defaults to 0.8 (1 with a mask)",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const rgba = (w: number, h: number) => ({
      width: w,
      height: h,
      data: new Uint8Array(w * h * 4).map((_, i) => (i % 4 === 3 ? 255 : (i * 7) % 256)),
    });
    const o = { steps: 5, seed: 1, sampler: "euler" };
    await assert.rejects(
      generate(p, "x", { ...o, image: rgba(100, 60) }),
      /image is 100×60, not a multiple of 8 .*: pass resize: "stretch" or "crop" \(to 96×56\)/,
    );
    await assert.rejects(
      generate(p, "x", { ...o, image: rgba(64, 64), width: 128 }),
      /image is 64×64 but the run is 128×64: pass resize: .*, or drop width\/height/,
    );
    await assert.rejects(
      generate(p, "x", { ...o, image: rgba(64, 64), mask: rgba(32, 32) }),
      /mask is 32×32 but the run is 64×64/,
    );
    await assert.rejects(generate(p, "x", { ...o, mask: rgba(64, 64) }), /mask needs image/);
    await assert.rejects(generate(p, "x", { ...o, strength: 0.5 }), /strength applies to img2img/);
    await assert.rejects(
      generate(p, "x", { ...o, image: "no/such.png" }),
      /image no\/such\.png: .*No such file/,
    );
    await assert.rejects(
      generate(p, "x", { ...o, image: rgba(64, 64), strength: 0.1 }),
      /strength 0.1 of 5 steps leaves no step/,
    );
    const steps: number[] = [];
    const [img] = await generate(p, "x", {
      ...o,
      image: rgba(100, 60),
      resize: "crop",
      onStep: (s) => steps.push(s.total),
    });
    assert.deepEqual([img.width, img.height], [96, 56]);
    assert.match(img.parameters, /Size: 96x56, .*Denoising strength: 0\.8/);
    assert.equal(steps.length, 4, "strength 0.8 of 5 steps runs int(5·0.8) = 4");
    const [inpainted] = await generate(p, "x", {
      ...o,
      image: rgba(64, 64),
      mask: rgba(64, 64),
    });
    assert.match(inpainted.parameters, /Denoising strength: 1(,|$)/);
  },
});
