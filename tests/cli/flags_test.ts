import assert from "node:assert/strict";
import { flag, helpText, parseFlags, spellings, UsageError } from "../../src/cli/flags.ts";
import { FLAGS, MAX_SEED, parseSeed } from "../../src/cli/options.ts";

const noEnv = () => undefined;

Deno.test("flags: sd.cpp's and A1111's spellings land on our rows", () => {
  const { values, positionals, spelled } = parseFlags(
    FLAGS,
    [
      "-p",
      "a fox",
      "-n",
      "-blurry",
      "-s",
      "-1",
      "-W",
      "512",
      "-H=",
      "--cfg-scale",
      "5",
      "-b",
      "3",
      "--sampling_method",
      "DPM++ 2M Karras",
      "--output=x.png",
      "-m",
      "model.safetensors",
      "--batch-count",
      "4",
    ].filter((a) => a !== "-H="),
    noEnv,
  );
  assert.deepEqual(positionals, []);
  assert.equal(values.prompt, "a fox");
  assert.equal(values.negative, "-blurry", "a value may start with a dash");
  assert.equal(values.seed, undefined, "-1 is a random seed");
  assert.equal(values.width, 512);
  assert.equal(values.height, undefined);
  assert.equal(values.cfg, 5);
  assert.equal(values.count, 4, "the last of repeated spellings wins");
  assert.equal(values.sampler, "DPM++ 2M Karras");
  assert.equal(values.out, "x.png");
  assert.equal(values.model, "model.safetensors");
  assert.equal(values.steps, 20, "defaults fill absent flags");
  assert.equal(spelled.count, "--batch-count");
  assert.equal(spelled.cfg, "--cfg-scale");
});

Deno.test("flags: seeds cover torch's 0 … 2^64−1 exactly, as bigints", () => {
  assert.equal(parseSeed("12345678901234567890"), 12345678901234567890n);
  assert.equal(parseSeed("18446744073709551615"), MAX_SEED);
  assert.equal(parseSeed("0"), 0n);
  assert.equal(parseSeed("-1"), undefined);
  assert.throws(() => parseSeed("18446744073709551616"), /beyond torch's seeds/);
  assert.throws(() => parseSeed("-2"), /not a seed: use a whole number 0 … 18446744073709551615/);
  assert.throws(() => parseSeed("1e3"), /not a seed/);
  assert.throws(() => parseSeed("4.5"), /not a seed/);
});

Deno.test("flags: every value is checked by its row, quoting the spelling the user typed", () => {
  const bad = (args: string[], message: RegExp) =>
    assert.throws(() => parseFlags(FLAGS, args, noEnv), (e) => {
      assert.ok(e instanceof UsageError, `${e}`);
      assert.match(e.message, message);
      return true;
    });
  bad(["--steps", "1e9"], /^--steps 1e9: 1e9 is out of range: use a whole number from 1 to 1000$/);
  bad(["--sample-steps", "0"], /^--sample-steps 0: 0 is out of range/);
  bad(["-b", "1e9"], /^-b 1e9: 1e9 is out of range: use a whole number from 1 to 100000$/);
  bad(["--cfg-scale", "1e308"], /^--cfg-scale 1e308: .* from 0 to 100$/);
  bad(["--cfg", "NaN"], /"NaN" is not a number/);
  bad(["--cfg", "0x10"], /"0x10" is not a number/);
  bad(["-W", "0"], /^-W 0: "0" is not a size: use a whole number of pixels, 1 … 16384$/);
  bad(["--clip-skip", "99"], /^--clip-skip 99: .*1 \(the last layer\) … 48/);
  bad(["--dtype", "bf16"], /^--dtype bf16: "bf16" is not one of auto, f16, f32$/);
  bad(["--sampling-method", "nonsense"], /^--sampling-method nonsense: unknown scheduler/);
  bad(["-s", "abc"], /^-s abc: "abc" is not a seed/);
  bad(
    ["--seeed", "3"],
    /^unknown flag --seeed; did you mean --seed\? \(--help lists every flag\)$/,
  );
  bad(["--steps"], /^--steps needs a value \(N\)/);
  bad(["--overwrite=maybe"], /^--overwrite maybe: "maybe" is not true or false/);
  assert.equal(parseFlags(FLAGS, ["--clip-skip", "-1"], noEnv).values.clipSkip, 1);
  assert.equal(parseFlags(FLAGS, ["--overwrite"], noEnv).values.overwrite, true);
  assert.deepEqual(parseFlags(FLAGS, ["a", "--", "--steps", "-s"], noEnv).positionals, [
    "a",
    "--steps",
    "-s",
  ]);
});

Deno.test("flags: an environment variable is named as such, and a flag beats it", () => {
  const env = (name: string) => (name === "DENOISE_MODEL" ? "/nope" : undefined);
  const fromEnv = parseFlags(FLAGS, [], env);
  assert.equal(fromEnv.values.model, "/nope");
  assert.equal(fromEnv.spelled.model, "DENOISE_MODEL");
  const fromFlag = parseFlags(FLAGS, ["-m", "/here"], env);
  assert.equal(fromFlag.values.model, "/here");
  assert.equal(fromFlag.spelled.model, "-m");
  const table = { n: flag.int({ name: "n", group: "G", help: "n", env: "N_ENV", min: 1 }) };
  assert.throws(
    () => parseFlags(table, [], () => "0"),
    /^UsageError: N_ENV=0: 0 is out of range: use a whole number ≥ 1$/,
  );
});

Deno.test("flags: the table has no clashing spellings; --help groups rows and shows every spelling", () => {
  const names = spellings(FLAGS);
  for (const s of ["-p", "-n", "-s", "-W", "-H", "-o", "-b", "-m", "--cfg-scale"]) {
    assert.ok(names.has(s), `${s} is accepted`);
  }
  for (const s of ["--negative-prompt", "--batch-count", "--sampling-method", "--output"]) {
    assert.ok(names.has(s), `${s} is accepted`);
  }
  assert.throws(
    () =>
      spellings({ ...FLAGS, other: flag.text({ name: "x", short: "s", group: "G", help: "" }) }),
    /-s is given to both seed and other/,
  );
  const help = helpText(FLAGS, { usage: "usage" });
  for (const group of ["Prompt:", "Model:", "Sampling:", "Output:"]) {
    assert.match(help, new RegExp(`^${group}$`, "m"));
  }
  for (const row of Object.values(FLAGS)) {
    const longs = [row.name, ...(row.also ?? [])].map((n) => `--${n}`).join(", ");
    const head = `${row.short ? `-${row.short}, ` : "    "}${longs}`;
    assert.ok(help.includes(`  ${head}`), `--help shows "${head}"`);
  }
  assert.match(help, /^ {2}-s, --seed N +torch's seed, 0 … 2\^64−1; -1 = random/m);
  assert.ok(help.split("\n").every((l) => l.length <= 100), "lines fit 100 columns");
});
