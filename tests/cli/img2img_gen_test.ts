// gen.ts --init-img / --mask / --strength / --resize end to end: a seed gives diffusers' picture
// (the same torch generator, the same draws in the same order), the infotext records the strength,
// and bad inputs are refused before the model loads.
import assert from "node:assert/strict";
import { decodePng, encodePng } from "../../src/io/png.ts";
import { dumpDir, fixture } from "../util.ts";
import { gen, MODEL, ok, parameters, usage } from "./gen_util.ts";

const IMG2IMG = dumpDir("tiny-sd15__img2img_ddim_s0.3");
const INPAINT = dumpDir("tiny-sd15__inpaint4_euler_s0.75");

/** The number of uint8 channel values of `png` more than 1 away from the dump's `image_uint8`. */
async function offPixels(png: Uint8Array, base: URL): Promise<number> {
  const got = decodePng(png);
  const ref = await fixture("image_uint8.npy", base);
  let off = 0;
  for (let i = 0; i < ref.data.length; i++) {
    const px = Math.floor(i / 3), c = i % 3;
    if (Math.abs(got.data[px * 4 + c] - ref.data[i]) > 1) off++;
  }
  return off;
}

Deno.test({
  name: "gen: -i --strength (img2img) and --mask (inpainting) with -s 0 give diffusers' images",
  ignore: MODEL === undefined || IMG2IMG === undefined || INPAINT === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_img2img_" });
    try {
      const prompt = "a photo of an astronaut riding a horse on mars";
      const common = [
        prompt,
        "-m",
        MODEL!,
        "-s",
        "0",
        "--steps",
        "4",
        "--cfg",
        "7.5",
        "--dtype",
        "f32",
      ];
      const path = (u: URL | undefined, f: string) => decodeURIComponent(new URL(f, u).pathname);
      const [a, b] = await Promise.all([
        gen([
          ...common,
          "-i",
          path(IMG2IMG, "init_image.png"),
          "--strength",
          "0.3",
          "--sampling-method",
          "DDIM",
          "-o",
          `${dir}/img2img.png`,
        ]),
        gen([
          ...common,
          "--init-img",
          path(INPAINT, "init_image.png"),
          "--mask",
          path(INPAINT, "mask.png"),
          "--denoising-strength",
          "0.75",
          "--sampler",
          "euler",
          "-o",
          `${dir}/inpaint.png`,
        ]),
      ]);
      ok(a);
      ok(b);
      const img = await parameters(`${dir}/img2img.png`);
      assert.match(img.text, /Sampler: DDIM, CFG scale: 7\.5, Seed: 0, Size: 128x128, /);
      assert.match(img.text, /Denoising strength: 0\.3/);
      assert.equal(await offPixels(await Deno.readFile(`${dir}/img2img.png`), IMG2IMG!), 0);
      const inp = await parameters(`${dir}/inpaint.png`);
      assert.match(inp.text, /Sampler: Euler, .*Denoising strength: 0\.75/);
      assert.equal(await offPixels(await Deno.readFile(`${dir}/inpaint.png`), INPAINT!), 0);
      assert.match(a.stderr, /step 1\/1 /, "one U-Net call at strength 0.3 of 4 steps");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "gen: init images and masks of the wrong size are refused before loading, or --resize fits them",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_img2img_" });
    try {
      const png = (w: number, h: number) => {
        const data = new Uint8Array(w * h * 4).map((_, i) => (i % 4 === 3 ? 255 : (i * 7) % 256));
        return encodePng({ width: w, height: h, data });
      };
      await Deno.writeFile(`${dir}/wide.png`, png(100, 60));
      await Deno.writeFile(`${dir}/square.png`, png(64, 64));
      await Deno.writeFile(`${dir}/small.png`, png(32, 32));
      await Deno.writeFile(`${dir}/text.png`, new TextEncoder().encode("not a png"));
      const m = ["a fox", "-m", MODEL!, "--steps", "2", "-o", `${dir}/out/`];
      const [odd, other, mask, noImage, notPng, resized] = await Promise.all([
        gen([...m, "-i", `${dir}/wide.png`]),
        gen([...m, "-i", `${dir}/square.png`, "-W", "128"]),
        gen([...m, "-i", `${dir}/square.png`, "--mask", `${dir}/small.png`]),
        gen([...m, "--mask", `${dir}/small.png`]),
        gen([...m, "-i", `${dir}/text.png`]),
        gen([...m, "-i", `${dir}/wide.png`, "--resize", "crop", "--strength", "0.5"]),
      ]);
      usage(
        odd,
        /-i .*wide\.png is 100×60, not a multiple of 8 .*--resize stretch or crop \(to 96×56\)/,
      );
      usage(
        other,
        /-i .*square\.png is 64×64 but the run is 128×64: pass --resize stretch or crop/,
      );
      usage(mask, /--mask .*small\.png is 32×32 but the run is 64×64/);
      usage(noImage, /--mask needs --init-img/);
      usage(notPng, /-i .*text\.png is not a PNG/);
      for (const r of [odd, other, mask, noImage, notPng]) {
        assert.doesNotMatch(r.stderr, /^loaded /m, `refused before loading:\n${r.stderr}`);
      }
      ok(resized);
      const out = (await Array.fromAsync(Deno.readDir(`${dir}/out`))).map((e) => e.name);
      assert.equal(out.length, 1);
      const p = await parameters(`${dir}/out/${out[0]}`);
      assert.match(p.text, /Size: 96x56, .*Denoising strength: 0\.5/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
