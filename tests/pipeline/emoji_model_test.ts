/**
 * The shipped model (`models/denoise-emoji`, trained by `train/`) against the PyTorch model it was
 * trained as: `train/export.py --fixture` ran the same prompt, seed, scheduler and guidance in
 * float32 on the folder's f16 weights and dumped the tokens, text embeddings, initial noise, every
 * step's latents and the image into `tests/fixtures/denoise-emoji/`. This is the end-to-end proof
 * that the engine runs learned weights as PyTorch does.
 */
import assert from "node:assert/strict";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { DEFAULT_MODEL, latentFactor, loadPipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import { torchRandn } from "../../src/rng/torch_randn.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { assertClose, errorStats, fixture, FIXTURES } from "../util.ts";
import { gen, ok, parameters } from "../cli/gen_util.ts";

const BASE = new URL("denoise-emoji/", FIXTURES);
const TOL = 1e-3; // of each tensor's scale

function ints(a: { data: Float32Array }): number[] {
  return Array.from(a.data, (v) => Math.round(v));
}

Deno.test({
  name: "denoise-emoji: tokens, embeddings, every step's latents and the image match PyTorch (f32)",
  ...GPU_TEST,
  fn: async () => {
    const manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", BASE)));
    const runtime = await testRuntime();
    const pipe = await loadPipeline(DEFAULT_MODEL, { dtype: "f32", runtime });
    try {
      // 1. tokens: the trainer's Python tokenizer and ours
      assert.deepEqual(
        pipe.tokenizer.encodePadded(manifest.prompt),
        ints(await fixture("tokens_cond.npy", BASE)),
      );
      assert.deepEqual(
        pipe.tokenizer.encodePadded(""),
        ints(await fixture("tokens_uncond.npy", BASE)),
      );
      // 2. text embeddings [1, L, D]
      const embeds = await encodePrompt(pipe, manifest.prompt, { parse: "none" });
      const report: string[] = [];
      const check = (name: string, got: ArrayLike<number>, ref: Float32Array) => {
        const st = errorStats(got, ref);
        report.push(`${name}: max |Δ| ${(st.maxAbs / st.scale).toExponential(2)} of scale`);
        assertClose(got, ref, { atol: TOL * st.scale, rtol: 0, label: report.join("\n") });
      };
      check(
        "cond embeds",
        await embeds.cond.read(),
        (await fixture("text_embeds_cond.npy", BASE)).data,
      );
      check(
        "uncond embeds",
        await embeds.uncond!.read(),
        (await fixture("text_embeds_uncond.npy", BASE)).data,
      );
      // 3. the seed's noise (torch.randn) and every step
      const noise = await fixture("latents_init_noise.npy", BASE);
      assert.deepEqual(
        Array.from(torchRandn(manifest.seed).randn(noise.shape)),
        Array.from(noise.data),
        "torchRandn(seed) is the trainer's initial noise",
      );
      const steps = await fixture("step_latents_out.npy", BASE);
      const per = steps.shape.slice(1).reduce((a, b) => a * b, 1);
      let last;
      for await (
        const s of sampleLatents(pipe, embeds, {
          steps: manifest.steps,
          guidance: manifest.guidance,
          seed: manifest.seed,
        })
      ) {
        assert.equal(s.timestep, manifest.timesteps[s.index], `timestep of step ${s.index}`);
        check(
          `step ${s.index}`,
          await s.latents.read(),
          steps.data.subarray(s.index * per, (s.index + 1) * per),
        );
        last = s.latents;
      }
      assert.equal(report.length, 2 + manifest.steps);
      // 4. the image: raw decoder output within TOL, pixels within 2/255
      const image = await decodeLatents(pipe, last!);
      last!.dispose();
      embeds.dispose();
      const decoded = await fixture("image_decoded.npy", BASE); // [1, 3, H, W]
      const [, , h, w] = decoded.shape;
      assert.deepEqual([image.height, image.width], [h, w]);
      const float = new Float32Array(3 * h * w); // back to [1, 3, H, W] in [0, 1]
      const ref = new Float32Array(3 * h * w);
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < h * w; i++) {
          float[c * h * w + i] = image.float[i * 3 + c];
          ref[c * h * w + i] = Math.min(1, Math.max(0, decoded.data[c * h * w + i] / 2 + 0.5));
        }
      }
      check("image [0, 1]", float, ref);
      const u8 = await fixture("image_uint8.npy", BASE); // [H, W, 3]
      let worst = 0;
      for (let i = 0; i < u8.data.length; i++) {
        worst = Math.max(worst, Math.abs(image.data[Math.floor(i / 3) * 4 + (i % 3)] - u8.data[i]));
      }
      assert.ok(worst <= 2, `image pixels differ by up to ${worst}/255 (allowed 2)`);
      console.log(`${report.join("\n")}\nimage: max pixel |Δ| ${worst}/255`);
    } finally {
      pipe.dispose();
    }
  },
});

Deno.test({
  name: "denoise-emoji: loadPipeline() without a path loads it, at its native size",
  ...GPU_TEST,
  fn: async () => {
    const runtime = await testRuntime();
    const pipe = await loadPipeline(undefined, { runtime });
    try {
      assert.equal(pipe.name, "denoise-emoji");
      const size = pipe.configs.unet.sample_size * latentFactor(pipe);
      assert.equal(size, pipe.configs.vae.sample_size, "the U-Net's size is the VAE's image size");
      const embeds = await encodePrompt(pipe, "tropical fish");
      let last;
      for await (const s of sampleLatents(pipe, embeds, { steps: 2, seed: 1 })) last = s.latents;
      const image = await decodeLatents(pipe, last!);
      last!.dispose();
      embeds.dispose();
      assert.deepEqual([image.width, image.height], [size, size]);
    } finally {
      pipe.dispose();
    }
  },
});

Deno.test({
  name: "denoise-emoji: gen.ts without --model or DENOISE_MODEL draws with it, at 32×32",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_emoji_" });
    try {
      const run = await gen(["tropical fish", "--steps", "2", "--seed", "1", "--out", dir]);
      ok(run);
      const png = await parameters(`${dir}/00000-1.png`);
      assert.match(png.text, /Size: 32x32, Model: denoise-emoji/);
      assert.equal(png.width, 32);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
