/**
 * img2img and inpainting on the CPU against diffusers' dumps: the image and mask preprocessing,
 * the begin index from `strength`, `add_noise` at the begin index, and every call replayed with
 * the recorded U-Net outputs (with the 4-channel inpainting blend). The GPU pipeline runs are in
 * `tests/pipeline/img2img_test.ts`.
 */
import assert from "node:assert/strict";
import { decodePng } from "../src/io/png.ts";
import {
  binaryMask,
  imageToChw,
  maskToLatent,
  strengthSchedule,
} from "../src/pipeline/condition.ts";
import { createScheduler } from "../src/schedulers/mod.ts";
import { sampleCpu } from "../src/schedulers/cpu.ts";
import { assertClose, dumpDir, errorStats, fixture } from "./util.ts";

const RUNS = [
  "tiny-sd15__img2img_pndm_s0.6",
  "tiny-sd15__img2img_ddim_s0.3",
  "tiny-sd15__img2img_euler_a_s0.6",
  "tiny-sd15__img2img_heun_s0.6",
  "tiny-sd2__img2img_euler_a_v_s0.3",
  "tiny-sd15-inpaint__inpaint9_ddim_s1.0",
  "tiny-sd15-inpaint__inpaint9_euler_a_s0.75",
  "tiny-sd15__inpaint4_ddim_s1.0",
  "tiny-sd15__inpaint4_euler_s0.75",
];

type Arr = { shape: number[]; data: Float32Array };
const at = (a: Arr, k: number) => {
  const n = a.data.length / a.shape[0];
  return a.data.subarray(k * n, (k + 1) * n);
};
const closeToScale = (got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, label: string) =>
  assertClose(got, ref, { atol: tol * errorStats(got, ref).scale, rtol: 0, label });

for (const run of RUNS) {
  const base = dumpDir(run);
  Deno.test({
    name: `conditioning: ${run} (preprocessing, begin index, add_noise, every call) on the CPU`,
    ignore: base === undefined,
    fn: async () => {
      const read = (f: string) => fixture(f, base);
      const has = async (f: string) => {
        try {
          await Deno.stat(new URL(f, base));
          return true;
        } catch {
          return false;
        }
      };
      const m = JSON.parse(await Deno.readTextFile(new URL("manifest.json", base!)));
      const info = m.img2img_inpaint;
      const inpaint = m.mode === "inpaint";
      const s = createScheduler(m.scheduler_class, m.scheduler_config, { steps: m.args.steps });
      // 1. begin index and the timesteps run
      const { begin } = strengthSchedule(m.args.steps, info.strength, s.order);
      assert.equal(begin, info.t_start * s.order, "begin index");
      const used = await read("timesteps_used.npy");
      assertClose(s.timesteps.slice(begin), used.data, { atol: 0, rtol: 2e-7, label: "timesteps" });
      // 2. the image as the VAE sees it, the encoder's sample, the mask
      const image = decodePng(await Deno.readFile(new URL("init_image.png", base)));
      const chw = imageToChw(image);
      assertClose(chw, (await read("vae_encode_in.npy")).data, {
        atol: 0,
        rtol: 0,
        label: "image",
      });
      const scaling = 0.18215; // the tiny models' VAE config
      let init: Float32Array | undefined;
      if (await has("init_latents.npy")) {
        const [mean, std, eps] = await Promise.all(
          ["vae_encode_mean", "vae_encode_std", "vae_encode_sample_noise"].map((f) =>
            read(`${f}.npy`)
          ),
        );
        init = (await read("init_latents.npy")).data;
        const ours = mean.data.map((v, k) => scaling * (v + std.data[k] * eps.data[k]));
        closeToScale(ours, init, 1e-6, "init latents = scaling·(mean + std·ε)");
      }
      let mask: Float32Array | undefined;
      if (inpaint) {
        const png = decodePng(await Deno.readFile(new URL("mask.png", base)));
        const full = binaryMask(png);
        assertClose(full, (await read("mask_condition.npy")).data, { atol: 0, rtol: 0 });
        const keep = full.map((v) => (v < 0.5 ? 1 : 0));
        const masked = imageToChw(image, keep);
        assertClose(masked, (await read("masked_image.npy")).data, { atol: 0, rtol: 0 });
        mask = maskToLatent(full, image.width, m.vae_scale_factor);
        assertClose(mask, (await read("mask_latent.npy")).data, { atol: 0, rtol: 0 });
      }
      // 3. the start latents
      const noise = (await read("latents_init_noise.npy")).data;
      const start = (await read("latents_init.npy")).data;
      let ours: Float32Array;
      if (inpaint && info.strength === 1) {
        ours = noise.map((v) => v * s.initNoiseSigma);
      } else {
        const [a, b] = s.noiseCoefs(begin);
        ours = init!.map((v, k) => a * v + b * noise[k]);
      }
      closeToScale(ours, start, 1e-6, "start latents");
      // 4. every call, with the recorded guided outputs and draws
      const pred = await read("step_noise_pred.npy");
      const out = await read("step_latents_out.npy");
      const draws = (await has("step_noise.npy")) ? await read("step_noise.npy") : undefined;
      let drawn = 0;
      const blend = run.includes("__inpaint4_"); // a regular U-Net: the known region blended back
      const final = sampleCpu(s, noise, {
        begin,
        start,
        model: (_x, _t, i) => at(pred, i - begin),
        randn: () => at(draws!, drawn++),
        onStep: (i, latents) => {
          if (blend) {
            const [a, b] = s.noiseCoefs(i + 1);
            for (let k = 0; k < latents.length; k++) {
              const known = a * init![k] + b * noise[k];
              const w = mask![k % mask!.length];
              latents[k] = (1 - w) * known + w * latents[k];
            }
          }
          closeToScale(latents, at(out, i - begin), 2e-6, `${run} call ${i}`);
        },
      });
      assert.equal(drawn, draws?.shape[0] ?? 0, "every recorded draw was used");
      closeToScale(final, (await read("latents_final.npy")).data, 2e-6, `${run} final`);
    },
  });
}
