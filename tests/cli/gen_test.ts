import assert from "node:assert/strict";
import { SHARED, sharedAvailable } from "../util.ts";
import { gen, MODEL, ok, parameters, usage } from "./gen_util.ts";

const TAESD = "data/taesd/taesd_decoder.safetensors";
const PROGRESS = /^\[(\d+)\/(\d+)\] step (\d+)\/(\d+) {2}\d+\.\d\d it\/s {2}ETA \d+\.\d+ s$/;

Deno.test({
  name: "gen: a run writes a numbered PNG with A1111 parameters, never overwriting, with progress",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    try {
      const first = await gen([
        "a red fox",
        "--model",
        MODEL!,
        "--steps",
        "2",
        "--seed",
        "7",
        "--out",
        dir,
      ]);
      ok(first);
      const path = `${dir}/00000-7.png`;
      assert.equal(first.stdout.trim(), path);
      const png = await parameters(path);
      assert.equal(
        png.text,
        "a red fox\nSteps: 2, Sampler: PLMS, CFG scale: 7.5, Seed: 7, Size: 128x128, Model: tiny-sd15",
      );
      assert.equal(png.width, 128);
      assert.ok(new Set(png.data).size > 16, "the image is not flat");
      const lines = first.stderr.split("\n").filter((l) => l.includes(" step "));
      assert.ok(lines.length >= 2, `progress lines on stderr:\n${first.stderr}`);
      for (const line of lines) assert.match(line, PROGRESS);
      const last = PROGRESS.exec(lines.at(-1)!)!;
      assert.equal(last[3], last[4], "the last progress line is the last step");
      assert.equal(last[4], "2", "PNDM --steps 2 makes 3 U-Net calls and counts 2 steps, as PLMS");
      assert.ok(!first.stderr.includes("\r"), "no carriage returns when stderr is not a TTY");
      assert.ok(lines.length <= 5, "a few plain lines, not one per step");
      assert.match(first.stderr, /^\[1\/1\] decoding 128×128 with the VAE$/m);
      assert.match(first.stderr, /^\[1\/1\] 2 steps in \d+\.\d+ s, decoded in \d+\.\d+ s$/m);
      assert.match(
        first.stderr,
        /^done: 1 image in [\d.]+ s \(load [\d.]+ s, sampling [\d.]+ s at [\d.]+ it\/s, decoding [\d.]+ s\)\n$/m,
      );
      assert.match(first.stderr, /^seed 7$/m);

      const bytes = await Deno.readFile(path);
      const common = ["--model", MODEL!, "--steps", "1", "--width", "64", "--height", "64"];
      const second = await gen(["a red fox", ...common, "--seed", "7", "--out", dir]);
      ok(second);
      assert.equal(second.stdout.trim(), `${dir}/00001-7.png`);
      assert.deepEqual(await Deno.readFile(path), bytes, "the first image is untouched");

      const refused = await gen(["a red fox", ...common, "--out", path]);
      usage(refused, new RegExp(`${path} exists: pass --overwrite to replace it`));
      assert.deepEqual(await Deno.readFile(path), bytes, "the refused run wrote nothing");
      const replaced = await gen([
        "a red fox",
        ...common,
        "--seed",
        "3",
        "--out",
        path,
        "--overwrite",
      ]);
      ok(replaced);
      assert.match((await parameters(path)).text, /Seed: 3, Size: 64x64/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gen: --count 2 writes seeds s and s+1; --vae-tiling decodes in tiles; --taesd with TAESD",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    try {
      const common = ["--model", MODEL!, "--steps", "1", "--width", "64", "--height", "64"];
      const [r, tiled] = await Promise.all([
        gen(["a cat", ...common, "--seed", "11", "--count", "2", "--out", dir]),
        gen([
          "a cat",
          ...common,
          "-s",
          "11",
          "--vae-tiling",
          "--vae-tile-size",
          "32",
          "-o",
          `${dir}/t.png`,
        ]),
      ]);
      ok(r);
      ok(tiled);
      assert.deepEqual(r.stdout.trim().split("\n"), [`${dir}/00000-11.png`, `${dir}/00001-12.png`]);
      const a = await parameters(`${dir}/00000-11.png`);
      const b = await parameters(`${dir}/00001-12.png`);
      assert.match(a.text, /Seed: 11,/);
      assert.match(b.text, /Seed: 12,/);
      assert.notDeepEqual(a.data, b.data, "different seeds give different images");
      assert.match(r.stderr, /^\[2\/2\] step 1\/1 /m);
      // sd.cpp's --vae-tiling: 9 overlapping 32-px tiles, blended; close to the whole decode
      assert.match(tiled.stderr, /^\[1\/1\] decoding 64×64 with the VAE in 9 tiles of 32 px$/m);
      assert.match(tiled.stderr, /^\[1\/1\] decoding 64×64 .*: 9\/9$/m);
      const t = await parameters(`${dir}/t.png`);
      assert.notDeepEqual(t.data, a.data, "tiles see their own GroupNorm statistics");
      const diff = t.data.reduce((s, v, i) => s + Math.abs(v - a.data[i]), 0) / t.data.length;
      assert.ok(diff < 25, `tiled and whole decodes differ by ${diff} per byte on average`);

      if (!sharedAvailable(TAESD)) return;
      const taesd = decodeURIComponent(new URL(TAESD, SHARED).pathname);
      const ta = await gen(["a cat", ...common, "--seed", "11", "--taesd", taesd, "--out", dir]);
      ok(ta);
      const c = await parameters(`${dir}/00002-11.png`);
      assert.equal(c.width, 64);
      assert.match(c.text, /Seed: 11, Size: 64x64, Model: tiny-sd15/);
      assert.notDeepEqual(c.data, a.data, "TAESD's image is not the VAE's");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gen: bad flags exit with code 2 and say what is wrong",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    const m = ["a fox", "--model", MODEL!, "--out", dir];
    const [noModel, notEight, notEightH, sampler, steps, cfg, width, pastSeeds] = await Promise
      .all([
        gen(["a fox", "--model", `${dir}/nowhere`, "--out", dir]),
        gen([...m, "--width", "100"]),
        gen([...m, "--height", "70", "--steps", "1"]),
        gen([...m, "--sampler", "nonsense"]),
        gen([...m, "--steps", "abc"]),
        gen([...m, "--cfg", "x"]),
        gen([...m, "--width", "abc"]),
        gen([...m, "-s", "18446744073709551615", "-b", "2"]),
      ]).finally(() => Deno.remove(dir, { recursive: true }));
    usage(noModel, /--model .*nowhere/);
    usage(
      notEight,
      /--width 100 is not a multiple of 8 \(this model's VAE scales by 8\); try 96 or 104/,
    );
    usage(notEightH, /--height 70 is not a multiple of 8 .*; try 64 or 72/);
    usage(
      sampler,
      /--sampler nonsense: unknown scheduler "nonsense"; valid names .*euler_a.*Euler a/,
    );
    usage(steps, /--steps abc: "abc" is not a whole number from 1 to 1000/);
    usage(cfg, /--cfg x: "x" is not a number from 0 to 100/);
    usage(width, /--width abc: "abc" is not a size/);
    usage(
      pastSeeds,
      /seeds 18446744073709551615 … 18446744073709551616 run past 18446744073709551615/,
    );
  },
});

Deno.test({
  name:
    "gen: sd.cpp spellings and --schedule; seeds up to 2^64−1 reach name, metadata and noise exactly",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    try {
      const common = ["-m", MODEL!, "-W", "64", "-H", "64", "--steps", "2", "--cfg-scale", "3"]
        .concat(["--sampling-method", "DPM++2M", "--schedule", "exponential"]);
      const [big, small, random] = await Promise.all([
        gen(["-p", "a cat", ...common, "-s", "18446744073709551614", "-b", "2", "-o", `${dir}/a`]),
        gen(["-p", "a cat", ...common, "-s", "4294967294", "--output", `${dir}/b.png`]),
        gen(["-p", "a cat", ...common, "-s", "-1", "-o", `${dir}/c`]),
      ]);
      for (const r of [big, small, random]) ok(r);
      assert.deepEqual(big.stdout.trim().split("\n"), [
        `${dir}/a/00000-18446744073709551614.png`,
        `${dir}/a/00001-18446744073709551615.png`,
      ]);
      const a = await parameters(`${dir}/a/00000-18446744073709551614.png`);
      assert.match(
        a.text,
        /Steps: 2, Sampler: DPM\+\+ 2M, Schedule type: Exponential, CFG scale: 3, Seed: 18446744073709551614, Size: 64x64/,
      );
      const last = await parameters(`${dir}/a/00001-18446744073709551615.png`);
      assert.match(last.text, /Seed: 18446744073709551615,/);
      // torch's CPU generator uses the seed's low 32 bits: 2^64−2 draws what 2^32−2 draws
      const b = await parameters(`${dir}/b.png`);
      assert.match(b.text, /Seed: 4294967294,/);
      assert.deepEqual(a.data, b.data, "seed 2^64−2 gives seed 2^32−2's image, as torch");
      const seed = /^seed (\d+)$/m.exec(random.stderr)?.[1];
      assert.ok(seed, `-s -1 prints the random seed:\n${random.stderr}`);
      assert.equal(random.stdout.trim(), `${dir}/c/00000-${seed}.png`);
      assert.match(
        (await parameters(`${dir}/c/00000-${seed}.png`)).text,
        new RegExp(`Seed: ${seed},`),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
