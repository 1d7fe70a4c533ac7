import assert from "node:assert/strict";
import { describeError } from "../../src/cli/errors.ts";
import { UsageError } from "../../src/cli/flags.ts";
import { checkComponentConfig } from "../../src/weights/config_check.ts";
import { SD15, SD21 } from "../../src/weights/configs.ts";
import { gen, MODEL, usage } from "./gen_util.ts";

/** A copy of the tiny model whose `unet/config.json` lacks `block_out_channels`. */
async function brokenModel(dir: string): Promise<string> {
  const copy = `${dir}/broken`;
  await new Deno.Command("cp", { args: ["-r", MODEL!, copy] }).output();
  const path = `${copy}/unet/config.json`;
  const config = JSON.parse(await Deno.readTextFile(path));
  delete config.block_out_channels;
  await Deno.writeTextFile(path, JSON.stringify(config));
  return copy;
}

Deno.test({
  name:
    "gen: what the model or the paths make wrong is refused before loading, in the flags' words",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_pre_" });
    try {
      const broken = await brokenModel(dir);
      const m = ["a fox", "-m", MODEL!, "-o", `${dir}/out/`];
      const results = await Promise.all([
        gen([...m, "--steps", "1000"]),
        gen([...m, "--clip-skip", "3"]),
        gen([...m, "-W", "100"]),
        gen(["a fox", "-o", `${dir}/out/`], { env: { DENOISE_MODEL: "/nope" } }),
        gen([...m], { permissions: ["--allow-read=/tmp", "--allow-write", "--allow-env"] }),
        gen(["a fox", "-m", broken, "-o", `${dir}/out/`]),
        gen([...m, "--taesd", `${dir}/missing.safetensors`]),
        gen([...m, "--vae-tile-size", "60"]),
        gen([...m, "--schedule", "exponential"]),
      ]);
      const [steps, clipSkip, width, env, noRead, config, taesd, tile, schedule] = results;
      usage(steps, /^error: the model's PNDMScheduler with --steps 1000: .*timestep 1000 falls/m);
      usage(clipSkip, /^error: --clip-skip 3: this model's text encoder has 2 layers: use 1 … 2$/m);
      usage(width, /^error: -W 100 is not a multiple of 8 .*; try 96 or 104$/m);
      usage(env, /^error: DENOISE_MODEL=\/nope: no such file or folder$/m);
      usage(noRead, /-m .*tiny-sd15: deno was not given read access: run with -A or --allow-read/);
      assert.equal(config.code, 1, config.stderr);
      assert.match(
        config.stderr,
        /^error: .*broken\/unet\/config\.json: "block_out_channels" is missing \(a list of channel counts, like \[320, 640, 1280, 1280\]\)/m,
      );
      usage(taesd, /^error: --taesd .*missing\.safetensors: no such file or folder$/m);
      usage(tile, /^error: --vae-tile-size 60: VAE tile size 60 px is not a multiple of 32/m);
      usage(
        schedule,
        /^error: the model's PNDMScheduler with --steps 20 and --schedule exponential: the exponential schedule applies to the sigma samplers \(euler, .*\), not pndm/m,
      );
      for (const r of results) {
        assert.doesNotMatch(r.stderr, /^loaded /m, `refused before loading:\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, /internal error|TypeError/);
      }
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["broken"], "no out/ left");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("config check: every field the models read is named with its file when missing or wrong", () => {
  checkComponentConfig("unet", SD15.unet, "unet/config.json");
  checkComponentConfig("unet", SD21.unet, "unet/config.json");
  checkComponentConfig("vae", SD15.vae, "vae/config.json");
  checkComponentConfig("text_encoder", SD21.text_encoder, "text_encoder/config.json");
  const without = (c: object, key: string) => {
    const copy: Record<string, unknown> = { ...c };
    delete copy[key];
    return copy;
  };
  assert.throws(
    () => checkComponentConfig("vae", without(SD15.vae, "latent_channels"), "m/vae/config.json"),
    /^Error: m\/vae\/config\.json: "latent_channels" is missing \(latent channels, 4 for SD\)/,
  );
  assert.throws(
    () =>
      checkComponentConfig("text_encoder", { ...SD15.text_encoder, num_hidden_layers: "12" }, "t"),
    /^Error: t: "num_hidden_layers" is "12", not transformer layers, 12 for SD 1\.x/,
  );
  assert.throws(
    () =>
      checkComponentConfig("unet", {
        ...SD15.unet,
        up_block_types: SD15.unet.up_block_types.slice(1),
      }, "u"),
    /"block_out_channels" has 4, "down_block_types" has 4, "up_block_types" has 3 entries/,
  );
  assert.throws(
    () => checkComponentConfig("unet", { ...SD21.unet, attention_head_dim: [5, 10] }, "u"),
    /"attention_head_dim" lists 2 values for 4 blocks/,
  );
});

Deno.test("errors: usage 2, the model's or the files' problems 1, internal errors 70 with a stack", () => {
  assert.deepEqual(describeError(new UsageError("-s x: bad")), {
    code: 2,
    text: "error: -s x: bad",
  });
  assert.deepEqual(describeError(new Error("file truncated")), {
    code: 1,
    text: "error: file truncated",
  });
  assert.equal(describeError(new Deno.errors.NotFound("gone")).code, 1);
  const internal = describeError(new TypeError("Cannot read properties of undefined"));
  assert.equal(internal.code, 70);
  assert.match(internal.text, /^internal error \(a bug in denoise; please report it/);
  assert.match(internal.text, /TypeError: Cannot read properties of undefined\n\s+at /);
});
