// gen.ts with add-ons: --lora-model-dir with <lora:…> in the prompt, --embd-dir, --vae; the PNG
// records them as A1111 does; a tag without a folder or naming a missing file is refused before
// the model loads.
import assert from "node:assert/strict";
import { gen, MODEL, ok, parameters, usage } from "./gen_util.ts";
import { makeEmbedding, makeLora, modelShapes } from "../pipeline/addon_files.ts";
import { randomArray } from "../util.ts";

Deno.test({
  name: "gen: --lora-model-dir, --embd-dir and --vae; Lora hashes, TI hashes, VAE in the infotext",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_gen_addons_" });
    try {
      await Deno.mkdir(`${dir}/loras`);
      await Deno.mkdir(`${dir}/emb`);
      const { bytes } = makeLora(await modelShapes(MODEL!), {
        format: "kohya",
        dtype: "F16",
        seed: 5,
      });
      await Deno.writeFile(`${dir}/loras/ink.safetensors`, bytes);
      await Deno.writeFile(
        `${dir}/emb/shiny.safetensors`,
        makeEmbedding(randomArray(2 * 32, 4), 32, { format: "a1111", dtype: "F16" }),
      );
      const common = ["--model", MODEL!, "--steps", "1", "-W", "64", "-H", "64", "-s", "5"];
      const prompt = "a shiny fox <lora:ink:0.6>";
      const r = await gen([
        prompt,
        ...common,
        "--lora-model-dir",
        `${dir}/loras`,
        "--embd-dir",
        `${dir}/emb`,
        "--vae",
        `${MODEL}/vae`,
        "-o",
        `${dir}/a.png`,
      ]);
      ok(r);
      const { text } = await parameters(`${dir}/a.png`);
      assert.match(
        text,
        /^a shiny fox <lora:ink:0\.6>\nSteps: 1, .*, Model: tiny-sd15, VAE hash: [0-9a-f]{10}, VAE: vae, Lora hashes: "ink: [0-9a-f]{12}", TI hashes: "shiny: [0-9a-f]{12}"$/,
      );
      usage(
        await gen([prompt, ...common, "-o", `${dir}/b.png`]),
        /the prompt names <lora:ink:0\.6>, but no LoRA folder is set.*--lora-model-dir DIR/,
      );
      usage(
        await gen([
          "a <lora:nope:1>",
          ...common,
          "--lora-dir",
          `${dir}/loras`,
          "-o",
          `${dir}/c.png`,
        ]),
        /LoRA "nope" is not in .*it has: ink/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
