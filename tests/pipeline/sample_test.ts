import assert from "node:assert/strict";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents, schedulerFor } from "../../src/pipeline/sample.ts";
import type { Rng } from "../../src/rng/torch_randn.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { assertClose, dumpDir, errorStats, fixture, modelDir } from "../util.ts";

const RUNS = [
  "tiny-sd15__pndm",
  "tiny-sd15__ddim",
  "tiny-sd15__euler",
  "tiny-sd15__euler_a",
  "tiny-sd15__dpmpp2m",
  "tiny-sd15__lcm",
  "tiny-sd2__ddim_v",
  "tiny-sd15-vae4__pndm", // a 3-level VAE: latent factor 4, 128×128 images from 32×32 latents
  // sizes that are not multiples of 64: 17×9 and 25×15 latents (diffusers' forward_upsample_size)
  "tiny-sd15__euler_136x72",
  "tiny-sd15__euler_200x120",
  // the newer samplers at 64×64 (tests/schedulers_test.ts replays all 22 runs on the CPU with the
  // recorded U-Net outputs): two-call steps, a draw in every call, 5-term lincombs, SDE noise,
  // Karras σ, the UniPC corrector and DDPM, in ε and v. (tiny-sd2__unipc_64's last call and
  // tiny-sd15__kdpm2_a_64's second are ill-conditioned on the random U-Net: an input change of
  // 3e-5 moves the output by 1.5e-2, so f32 kernels cannot follow them to 1e-4.)
  "tiny-sd15__heun_64",
  "tiny-sd2__kdpm2_64",
  "tiny-sd2__kdpm2_a_64",
  "tiny-sd2__lms_64",
  "tiny-sd15__dpmpp2m_sde_karras_64",
  "tiny-sd15__unipc_64",
  "tiny-sd15__ddpm_64",
];

/** An rng that replays the fixture's draws: the initial noise, then every in-step draw. */
async function replayRng(base: URL): Promise<{ rng: Rng; left: () => number }> {
  const draws: Float32Array[] = [(await fixture("latents_init_noise.npy", base)).data];
  try {
    const steps = await fixture("step_noise.npy", base);
    const per = steps.shape.slice(1).reduce((a, b) => a * b, 1);
    for (let k = 0; k < steps.shape[0]; k++) draws.push(steps.data.slice(k * per, (k + 1) * per));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let next = 0;
  return {
    rng: {
      randn(shape: number[]) {
        const n = shape.reduce((a, b) => a * b, 1);
        const d = draws[next++];
        assert.ok(d, `the sampler drew more noise than the reference (draw ${next})`);
        assert.equal(d.length, n, `draw ${next} has ${n} values, the reference ${d.length}`);
        return d;
      },
    },
    left: () => draws.length - next,
  };
}

const pipes = new Map<string, Promise<Pipeline>>();
function pipeFor(model: string): Promise<Pipeline> {
  let p = pipes.get(model);
  if (!p) {
    p = testRuntime().then((runtime) => loadPipeline(modelDir(model)!, { dtype: "f32", runtime }));
    pipes.set(model, p);
  }
  return p;
}

for (const run of RUNS) {
  const model = run.split("__")[0];
  const base = dumpDir(run);
  Deno.test({
    name: `pipeline ${run}: every step, the final latents and the image match diffusers (f32)`,
    ignore: modelDir(model) === undefined || base === undefined,
    ...GPU_TEST,
    fn: async () => {
      const manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", base!)));
      const args = manifest.args;
      const pipe = await pipeFor(model);
      const embeds = await encodePrompt(pipe, args.prompt, {
        negativePrompt: args.negative_prompt ?? "",
      });
      const { rng, left } = await replayRng(base!);
      const stepsOut = await fixture("step_latents_out.npy", base);
      const per = stepsOut.shape.slice(1).reduce((a, b) => a * b, 1);
      const errors: string[] = [];
      let worst = 0;
      let last;
      for await (
        const s of sampleLatents(pipe, embeds, {
          steps: args.steps,
          guidance: args.guidance,
          // the dump's own scheduler config, as a diffusers config object
          scheduler: { ...manifest.scheduler_config, _class_name: manifest.scheduler_class },
          eta: args.eta || undefined,
          karras: args.karras || undefined,
          width: manifest.width,
          height: manifest.height,
          rng,
        })
      ) {
        assertClose([s.timestep], [manifest.timesteps[s.index]], {
          atol: 0,
          rtol: 2e-7,
          label: `timestep of step ${s.index}`,
        });
        const got = await s.latents.read();
        const ref = stepsOut.data.subarray(s.index * per, (s.index + 1) * per);
        const st = errorStats(got, ref);
        worst = Math.max(worst, st.maxAbs / st.scale);
        errors.push(
          `step ${s.index}: max |Δ| ${st.maxAbs.toExponential(2)} of scale ${st.scale.toFixed(3)}`,
        );
        assertClose(got, ref, {
          atol: 1e-4 * st.scale,
          rtol: 0,
          label: `${run} step ${s.index}\n${errors.join("\n")}`,
        });
        last = s.latents;
      }
      assert.equal(errors.length, manifest.timesteps.length);
      assert.equal(left(), 0, "every reference draw was used");
      const final = await fixture("latents_final.npy", base);
      const got = await last!.read();
      assertClose(got, final.data, {
        atol: 2e-4 * errorStats(got, final.data).scale,
        rtol: 0,
        label: "final latents",
      });
      const image = await decodeLatents(pipe, last!);
      last!.dispose();
      embeds.dispose();
      assert.deepEqual([image.height, image.width], [manifest.height, manifest.width]);
      const float = await fixture("image_float.npy", base);
      assertClose(image.float, float.data, { atol: 2e-4, rtol: 0, label: "image_float" });
      const u8 = await fixture("image_uint8.npy", base);
      let off = 0;
      for (let i = 0; i < u8.data.length; i++) {
        const px = Math.floor(i / 3), c = i % 3;
        if (Math.abs(image.data[px * 4 + c] - u8.data[i]) > 1) off++;
      }
      assert.equal(off, 0, `${off} pixel values differ from image_uint8 by more than 1`);
      console.log(`${run}: worst step latent |Δ| ${worst.toExponential(2)} of scale`);
    },
  });
}

Deno.test({
  name:
    "pipeline: seed 0 with the default torch-compatible rng reproduces diffusers' run (euler a)",
  ...GPU_TEST,
  fn: async () => {
    const run = "tiny-sd15__euler_a";
    const pipe = await pipeFor("tiny-sd15");
    const embeds = await encodePrompt(pipe, "a photo of an astronaut riding a horse on mars");
    let last;
    for await (
      const s of sampleLatents(pipe, embeds, { steps: 4, scheduler: "Euler a", seed: 0 })
    ) last = s.latents;
    const final = await fixture(`dumps/${run}/latents_final.npy`);
    const got = await last!.read();
    assertClose(got, final.data, {
      atol: 2e-4 * errorStats(got, final.data).scale,
      rtol: 0,
      label: "final latents",
    });
    last!.dispose();
    embeds.dispose();
  },
});

for (const run of ["tiny-sd15__pndm", "tiny-sd15__heun_64"]) {
  const base = dumpDir(run);
  Deno.test({
    name: `pipeline: f16 compute stays within f16 tolerance of the f32 reference (${run})`,
    ignore: base === undefined,
    ...GPU_TEST,
    fn: async () => {
      const rt = await testRuntime();
      if (!rt.gpu.hasF16) {
        console.log("skipped: the adapter has no shader-f16");
        return;
      }
      const manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", base!)));
      const pipe = await loadPipeline(modelDir("tiny-sd15")!, { dtype: "f16", runtime: rt });
      try {
        assert.equal(pipe.dtype, "f16");
        const embeds = await encodePrompt(pipe, manifest.args.prompt);
        let last;
        for await (
          const s of sampleLatents(pipe, embeds, {
            steps: 4,
            seed: 0,
            scheduler: manifest.scheduler_class,
            width: manifest.width,
            height: manifest.height,
          })
        ) last = s.latents;
        const final = await fixture("latents_final.npy", base);
        const got = await last!.read();
        const st = errorStats(got, final.data);
        assert.ok(
          st.nmse < 1e-4,
          `f16 latents NMSE ${st.nmse} (max |Δ| ${st.maxAbs} of ${st.scale})`,
        );
        const image = await decodeLatents(pipe, last!);
        const float = await fixture("image_float.npy", base);
        const ist = errorStats(image.float, float.data);
        assert.ok(ist.maxAbs < 2e-2, `f16 image max |Δ| ${ist.maxAbs}`);
        console.log(
          `${run} f16: latents NMSE ${st.nmse.toExponential(2)}, image max ${ist.maxAbs}`,
        );
        last!.dispose();
        embeds.dispose();
      } finally {
        pipe.dispose();
      }
    },
  });
}

Deno.test({
  name: "pipeline: abort stops the loop and bad sizes are refused with the fix",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("tiny-sd15");
    const embeds = await encodePrompt(pipe, "a fox");
    const ctl = new AbortController();
    const seen: number[] = [];
    for await (const s of sampleLatents(pipe, embeds, { steps: 4, seed: 1, signal: ctl.signal })) {
      seen.push(s.index);
      ctl.abort();
    }
    assert.deepEqual(seen, [0]);
    const bad = async (o: object, re: RegExp) => {
      await assert.rejects(async () => {
        for await (const _ of sampleLatents(pipe, embeds, { steps: 1, ...o })) { /* drain */ }
      }, re);
    };
    await bad({ width: 100 }, /width 100 is not a multiple of 8/);
    await bad({ height: 70 }, /height 70 is not a multiple of 8 .*try 64/);
    await bad({ scheduler: "nope" }, /unknown scheduler "nope"/);
    await bad({ latents: new Float32Array(3) }, /latents have 3 values/);
    embeds.dispose();
  },
});

Deno.test("pipeline: the scheduler option takes a diffusers config object over the model's", () => {
  const pipe = {
    schedulerConfig: {
      _class_name: "PNDMScheduler",
      beta_start: 0.00085,
      beta_end: 0.012,
      beta_schedule: "scaled_linear",
      skip_prk_steps: true,
      steps_offset: 1,
    },
  } as unknown as Pipeline;
  assert.equal(schedulerFor(pipe, { steps: 4 }).kind, "pndm");
  const s = schedulerFor(pipe, {
    steps: 4,
    scheduler: { _class_name: "EulerDiscreteScheduler", timestep_spacing: "trailing" },
  });
  assert.equal(s.kind, "euler");
  assert.deepEqual(s.timesteps, [999, 749, 499, 249]);
  assert.equal(s.config.beta_schedule, "scaled_linear", "the model's keys stay");
  const k = schedulerFor(pipe, { steps: 4, scheduler: "DPM++ 2M Karras" });
  assert.equal(k.config.use_karras_sigmas, true);
  assert.throws(
    () => schedulerFor(pipe, { steps: 4, scheduler: { timestep_spacing: "trailing" } }),
    /_class_name/,
  );
});
