import assert from "node:assert/strict";
import { OPTIONS } from "../../gen.ts";
import { decodePng } from "../../src/io/png.ts";
import { modelDir, SHARED, sharedAvailable } from "../util.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const MODEL = modelDir("tiny-sd15");
const TAESD = "data/taesd/taesd_decoder.safetensors";
const PROGRESS = /^\[(\d+)\/(\d+)\] step (\d+)\/(\d+) {2}\d+\.\d\d it\/s {2}ETA \d+\.\d s$/;

/** Runs `deno run -A gen.ts …args` in the repository root with stdout and stderr piped (no TTY). */
async function gen(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "gen.ts", ...args],
    cwd: ROOT,
    env: { DENOISE_MODEL: "", NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Asserts a run succeeded, with its output in the message when it did not. */
function ok(r: { code: number; stdout: string; stderr: string }): void {
  assert.equal(r.code, 0, `gen.ts failed:\n${r.stdout}\n${r.stderr}`);
}

/** A usage error: exit code 2 and the message on stderr. */
function usage(r: { code: number; stderr: string }, message: RegExp): void {
  assert.equal(r.code, 2, `exit code 2 expected:\n${r.stderr}`);
  assert.match(r.stderr, message);
}

async function parameters(
  path: string,
): Promise<{ text: string; width: number; data: Uint8Array }> {
  const png = decodePng(await Deno.readFile(path));
  return { text: png.text.parameters, width: png.width, data: png.data };
}

Deno.test({
  name: "gen: a run writes a numbered PNG with A1111 parameters, never overwriting, with progress",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    try {
      const first = await gen(
        "a red fox",
        "--model",
        MODEL!,
        "--steps",
        "2",
        "--seed",
        "7",
        "--out",
        dir,
      );
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
      assert.ok(!first.stderr.includes("\r"), "no carriage returns when stderr is not a TTY");
      assert.match(first.stderr, /^seed 7$/m);

      const bytes = await Deno.readFile(path);
      const common = ["--model", MODEL!, "--steps", "1", "--width", "64", "--height", "64"];
      const second = await gen("a red fox", ...common, "--seed", "7", "--out", dir);
      ok(second);
      assert.equal(second.stdout.trim(), `${dir}/00001-7.png`);
      assert.deepEqual(await Deno.readFile(path), bytes, "the first image is untouched");

      const refused = await gen("a red fox", ...common, "--out", path);
      usage(refused, new RegExp(`${path} exists: pass --overwrite to replace it`));
      assert.deepEqual(await Deno.readFile(path), bytes, "the refused run wrote nothing");
      const replaced = await gen(
        "a red fox",
        ...common,
        "--seed",
        "3",
        "--out",
        path,
        "--overwrite",
      );
      ok(replaced);
      assert.match((await parameters(path)).text, /Seed: 3, Size: 64x64/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gen: --count 2 writes two images with seeds s and s+1; --taesd decodes with TAESD",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    try {
      const common = ["--model", MODEL!, "--steps", "1", "--width", "64", "--height", "64"];
      const r = await gen("a cat", ...common, "--seed", "11", "--count", "2", "--out", dir);
      ok(r);
      assert.deepEqual(r.stdout.trim().split("\n"), [`${dir}/00000-11.png`, `${dir}/00001-12.png`]);
      const a = await parameters(`${dir}/00000-11.png`);
      const b = await parameters(`${dir}/00001-12.png`);
      assert.match(a.text, /Seed: 11,/);
      assert.match(b.text, /Seed: 12,/);
      assert.notDeepEqual(a.data, b.data, "different seeds give different images");
      assert.match(r.stderr, /^\[2\/2\] step 1\/1 /m);

      if (!sharedAvailable(TAESD)) return;
      const taesd = decodeURIComponent(new URL(TAESD, SHARED).pathname);
      const t = await gen("a cat", ...common, "--seed", "11", "--taesd", taesd, "--out", dir);
      ok(t);
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
  name: "gen: --help lists every flag; bad flags exit with code 2 and say what is wrong",
  ignore: MODEL === undefined,
  fn: async () => {
    const help = await gen("--help");
    ok(help);
    for (const flag of Object.keys(OPTIONS)) {
      assert.match(help.stdout, new RegExp(`^ +--${flag}\\b`, "m"), `--help lists --${flag}`);
    }
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_" });
    const m = ["a fox", "--model", MODEL!, "--out", dir];
    const [noModel, notEight, notSixtyFour, sampler, steps, cfg, width] = await Promise.all([
      gen("a fox", "--out", dir),
      gen(...m, "--width", "100"),
      gen(...m, "--height", "72", "--steps", "1"),
      gen(...m, "--sampler", "heun"),
      gen(...m, "--steps", "abc"),
      gen(...m, "--cfg", "x"),
      gen(...m, "--width", "abc"),
    ]).finally(() => Deno.remove(dir, { recursive: true }));
    usage(noModel, /no model given: pass --model PATH .* or set DENOISE_MODEL/);
    usage(notEight, /--width 100 is not a multiple of 8/);
    usage(notSixtyFour, /--height 72 is not a multiple of 64 .*; try 64/);
    usage(sampler, /--sampler: unknown scheduler "heun"; valid names .*euler_a.*Euler a/);
    usage(steps, /--steps "abc" is not a whole number/);
    usage(cfg, /--cfg "x" is not a number/);
    usage(width, /--width "abc" is not a whole number/);
  },
});
