import assert from "node:assert/strict";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { modelDir } from "../util.ts";

const MODEL = modelDir("tiny-sd15");
let pipe: Promise<Pipeline> | undefined;
const tiny = () =>
  pipe ??= testRuntime().then((runtime) => loadPipeline(MODEL!, { dtype: "f32", runtime }));
const inUse = (p: Pipeline) => p.rt.pool.stats().inUseBytes;

Deno.test({
  name:
    "sampleLatents: after `break`, the last latents yielded stay valid until the caller frees them",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const before = inUse(p);
    using embeds = await encodePrompt(p, "a red fox");
    let last: Tensor | undefined;
    for await (const step of sampleLatents(p, embeds, { steps: 4, seed: 1, guidance: 3 })) {
      last = step.latents;
      if (step.index === 1) break;
    }
    assert.ok(last && !last.disposed, "the latents yielded last were freed by the break");
    const image = await decodeLatents(p, last);
    assert.equal(image.width, 128);
    last.dispose();
    embeds.dispose();
    assert.equal(inUse(p), before, "the loop left GPU memory behind");
  },
});

Deno.test({
  name: "sampleLatents: an abort stops the loop and the last latents yielded stay valid",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const before = inUse(p);
    using embeds = await encodePrompt(p, "a red fox");
    const stop = new AbortController();
    const seen: Tensor[] = [];
    for await (
      const step of sampleLatents(p, embeds, { steps: 4, seed: 1, signal: stop.signal })
    ) {
      seen.push(step.latents);
      stop.abort();
    }
    assert.equal(seen.length, 1, "the loop went on after the abort");
    const last = seen[0];
    assert.ok(!last.disposed);
    assert.equal((await decodeLatents(p, last)).height, 128);
    last.dispose();
    embeds.dispose();
    assert.equal(inUse(p), before);
  },
});

Deno.test({
  name:
    "sampleLatents: earlier latents are freed as the loop goes on; inside rt.scope nothing leaks",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    const before = inUse(p);
    const seen: Tensor[] = [];
    const image = await p.rt.scope(async () => {
      const embeds = await encodePrompt(p, "a red fox");
      for await (const step of sampleLatents(p, embeds, { steps: 3, seed: 2 })) {
        seen.push(step.latents);
      }
      assert.ok(seen.slice(0, -1).every((t) => t.disposed), "earlier steps were kept");
      assert.ok(!seen.at(-1)!.disposed);
      return await decodeLatents(p, seen.at(-1)!);
    });
    assert.equal(image.width, 128);
    assert.ok(seen.at(-1)!.disposed, "the scope frees the final latents it was handed");
    assert.equal(inUse(p), before, "the scope left GPU memory behind");
  },
});

/**
 * Peak pool bytes of a 2-step Euler run with guidance (batch-2 U-Net) on tiny-sd15 in f32 at
 * 128², before the `rt.scope` / `using` refactor of the models (measured on 82c352d). The refactor
 * must not make it grow.
 */
const PEAK_BEFORE_REFACTOR = 1_278_976;

/**
 * Bytes of the `kv` fusion's output, which lives for the whole U-Net call: every cross-attention's
 * k and v of the text, `[B, 77, Σ 2·C]` (one transformer per resnet of a cross-attention block).
 */
function kvAllBytes(p: Pipeline, batch: number): number {
  const c = p.configs.unet;
  const ch = c.block_out_channels as number[];
  const layers = c.layers_per_block as number;
  const cross = (t: string) => t.startsWith("CrossAttn");
  let channels = ch.at(-1)!; // mid block
  (c.down_block_types as string[]).forEach((t, i) => channels += cross(t) ? layers * ch[i] : 0);
  (c.up_block_types as string[]).forEach((t, i) =>
    channels += cross(t) ? (layers + 1) * ch[ch.length - 1 - i] : 0
  );
  return batch * 77 * 2 * channels * (p.dtype === "f16" ? 2 : 4);
}

Deno.test({
  name: "sampleLatents: a tiny CFG step's peak GPU memory has not grown with scoped lifetimes",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tiny();
    using embeds = await encodePrompt(p, "a red fox", { negativePrompt: "blurry" });
    const base = inUse(p);
    p.rt.pool.resetPeak();
    let last: Tensor | undefined;
    for await (
      const s of sampleLatents(p, embeds, { steps: 2, seed: 1, guidance: 7.5, scheduler: "euler" })
    ) last = s.latents;
    const peak = p.rt.pool.stats().peakBytes - base;
    last!.dispose();
    const bound = PEAK_BEFORE_REFACTOR + kvAllBytes(p, 2);
    console.log(
      `peak of a tiny CFG step: ${peak} bytes (before the refactor ${PEAK_BEFORE_REFACTOR}, ` +
        `+ the kv fusion's output: ${bound})`,
    );
    assert.ok(peak <= bound, `peak ${peak} > ${bound}`);
    assert.equal(inUse(p), base);
  },
});
