import assert from "node:assert/strict";
import { decodePng } from "../../src/io/png.ts";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import type { Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import type { Rng } from "../../src/rng/torch_randn.ts";
import { testPipeline } from "./pipes.ts";
import { GPU_TEST } from "../gpu_util.ts";
import { assertClose, dumpDir, errorStats, fixture, modelDir } from "../util.ts";

// img2img and inpainting end to end on the GPU (f32). tests/conditioning_test.ts replays all nine
// dumps on the CPU; these runs cover the VAE encoder sample, the begin index with a two-call
// sampler, the 9-channel U-Net input (with and without the init image encoded) and the 4-channel
// blend. (img2img_ddim_s0.3 and the v-prediction img2img_euler_a_v_s0.3 also match, 1.7e-5 and
// 1.8e-5 of scale; left out to keep the suite short.)
const RUNS = [
  "tiny-sd15__img2img_heun_s0.6",
  "tiny-sd15-inpaint__inpaint9_ddim_s1.0",
  "tiny-sd15-inpaint__inpaint9_euler_a_s0.75",
  "tiny-sd15__inpaint4_euler_s0.75",
];

/** Replays the dump's generator draws in its recorded order, then the in-step draws. */
async function replayRng(base: URL, manifest: { notes: { generator_draws_in_order: unknown[] } }) {
  const draws: Float32Array[] = [];
  for (const d of manifest.notes.generator_draws_in_order) {
    if (typeof d === "object" && d) {
      draws.push((await fixture((d as { file: string }).file, base)).data);
    }
  }
  try {
    const steps = await fixture("step_noise.npy", base);
    const per = steps.data.length / steps.shape[0];
    for (let k = 0; k < steps.shape[0]; k++) draws.push(steps.data.slice(k * per, (k + 1) * per));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let next = 0;
  const rng: Rng = {
    randn(shape: number[]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const d = draws[next++];
      assert.ok(d, `the pipeline drew more noise than diffusers (draw ${next})`);
      assert.equal(d.length, n, `draw ${next}: ${n} values, the reference has ${d.length}`);
      return d;
    },
  };
  return { rng, left: () => draws.length - next };
}

function pipeFor(model: string): Promise<Pipeline> {
  return testPipeline(model, { dtype: "f32", vaeEncoder: true });
}

for (const run of RUNS) {
  const model = run.split("__")[0];
  const base = dumpDir(run);
  Deno.test({
    name: `img2img/inpaint ${run}: every call, the final latents and the image match diffusers`,
    ignore: base === undefined || modelDir(model) === undefined,
    ...GPU_TEST,
    fn: async () => {
      const m = JSON.parse(await Deno.readTextFile(new URL("manifest.json", base!)));
      const pipe = await pipeFor(model);
      const embeds = await encodePrompt(pipe, m.args.prompt, {
        negativePrompt: m.args.negative_prompt ?? "",
      });
      const image = decodePng(await Deno.readFile(new URL("init_image.png", base)));
      const mask = m.mode === "inpaint"
        ? decodePng(await Deno.readFile(new URL("mask.png", base)))
        : undefined;
      const { rng, left } = await replayRng(base!, m);
      const out = await fixture("step_latents_out.npy", base);
      const per = out.data.length / out.shape[0];
      let worst = 0, last, calls = 0;
      for await (
        const s of sampleLatents(pipe, embeds, {
          steps: m.args.steps,
          guidance: m.args.guidance,
          scheduler: { ...m.scheduler_config, _class_name: m.scheduler_class },
          image,
          mask,
          strength: m.img2img_inpaint.strength,
          rng,
        })
      ) {
        assertClose([s.timestep], [m.timesteps[s.index]], { atol: 0, rtol: 2e-7 });
        assert.equal(s.total, m.timesteps.length);
        const got = await s.latents.read();
        const ref = out.data.subarray(s.index * per, (s.index + 1) * per);
        const st = errorStats(got, ref);
        worst = Math.max(worst, st.maxAbs / st.scale);
        assertClose(got, ref, { atol: 1e-4 * st.scale, rtol: 0, label: `${run} call ${s.index}` });
        last = s.latents;
        calls++;
      }
      assert.equal(calls, m.timesteps.length);
      assert.equal(left(), 0, "every reference draw was used");
      const img = await decodeLatents(pipe, last!);
      last!.dispose();
      embeds.dispose();
      const float = await fixture("image_float.npy", base);
      assertClose(img.float, float.data, { atol: 2e-4, rtol: 0, label: "image_float" });
      console.log(`${run}: worst call latent |Δ| ${worst.toExponential(2)} of scale`);
    },
  });
}

Deno.test({
  name: "img2img: bad images, masks and strengths are refused with the fix",
  ignore: modelDir("tiny-sd15") === undefined,
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    const embeds = await encodePrompt(pipe, "a fox");
    const rgba = (w: number, h: number) => ({
      width: w,
      height: h,
      data: new Uint8Array(w * h * 4),
    });
    const bad = async (o: object, re: RegExp) => {
      await assert.rejects(async () => {
        for await (const _ of sampleLatents(pipe, embeds, { steps: 4, seed: 1, ...o })) { /* */ }
      }, re);
    };
    await bad({ image: rgba(64, 64), width: 128 }, /image is 64×64 but the run is 128×64/);
    await bad({ image: rgba(64, 64), strength: 0.1 }, /strength 0.1 of 4 steps leaves no step/);
    await bad({ image: rgba(64, 64), strength: 1.5 }, /strength must be a number in \(0, 1\]/);
    await bad({ mask: rgba(64, 64) }, /mask needs image/);
    await bad({ strength: 0.5 }, /strength applies to img2img and inpainting/);
    await bad({ image: rgba(64, 64), mask: rgba(32, 32) }, /mask is 32×32 but the run is 64×64/);
    embeds.dispose();
  },
});
