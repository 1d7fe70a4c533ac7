// Key names of the add-ons: LoRA keys of every format, the diffusers → LDM U-Net path inverse
// (checked against the single-file layouts written independently of names.ts), stand-alone VAE
// files in every layout, and A1111's extra-network prompt tags.
import assert from "node:assert/strict";
import { ldmTensors } from "../../bench/make_checkpoint.ts";
import { parseExtraNetworks } from "../../src/pipeline/extra_networks.ts";
import { chunkTokens, parsePromptAttention } from "../../src/pipeline/prompt_parse.ts";
import { SD15, SD21 } from "../../src/weights/configs.ts";
import {
  ldmUnetModule,
  loraModuleAliases,
  mapSingleFileKeys,
  mapVaeFileKeys,
  parseLoraKey,
  type UNetLayoutConfig,
} from "../../src/weights/names.ts";
import { openModelSource } from "../../src/weights/source.ts";
import { modelDir, singleFile } from "./fixtures.ts";

Deno.test("LoRA keys: kohya, LoCon, PEFT, diffusers processors; other LyCORIS types named", () => {
  const cases: [string, unknown][] = [
    ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", {
      module: "lora_unet_down_blocks_0_attentions_0_proj_in",
      part: "down",
    }],
    ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", {
      module: "lora_te_text_model_encoder_layers_0_mlp_fc1",
      part: "up",
    }],
    ["lora_unet_input_blocks_1_0_in_layers_2.alpha", {
      module: "lora_unet_input_blocks_1_0_in_layers_2",
      part: "alpha",
    }],
    ["unet.mid_block.attentions.0.proj_out.lora_A.weight", {
      module: "unet.mid_block.attentions.0.proj_out",
      part: "down",
    }],
    ["base_model.model.conv_in.lora_B.default.weight", {
      module: "base_model.model.conv_in",
      part: "up",
    }],
    ["text_encoder.text_model.encoder.layers.1.self_attn.k_proj.lora_linear_layer.down.weight", {
      module: "text_encoder.text_model.encoder.layers.1.self_attn.k_proj",
      part: "down",
    }],
    ["up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor.to_out_lora.up.weight", {
      module: "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0",
      part: "up",
    }],
    ["lora_unet_conv_in.hada_w1_a", { other: "LyCORIS LoHa (hada_*)" }],
    ["lora_unet_conv_in.lokr_w2", { other: "LyCORIS LoKr (lokr_*)" }],
    ["lora_unet_conv_in.lora_mid.weight", {
      other: "LyCORIS LoCon with CP decomposition (lora_mid)",
    }],
    ["lora_unet_conv_in.dora_scale", { other: "DoRA (dora_scale)" }],
    ["bundle_emb.style.string_to_param.*", undefined],
  ];
  for (const [key, want] of cases) assert.deepEqual(parseLoraKey(key), want, key);
});

/** Checks ldmUnetModule against a single-file mapping that names.ts did not write. */
function checkInverse(
  entries: { target: { component: string; key: string }; source: string }[],
  cfg: UNetLayoutConfig,
  label: string,
) {
  let n = 0;
  for (const e of entries) {
    if (e.target.component !== "unet" || !/\.(weight|bias)$/.test(e.target.key)) continue;
    const [, module, param] = /^(.+)\.(weight|bias)$/.exec(e.target.key)!;
    const ldm = `model.diffusion_model.${ldmUnetModule(module, cfg)}.${param}`;
    assert.equal(ldm, e.source, `${label}: ${e.target.key}`);
    n++;
  }
  assert.ok(n > 100, `${label}: ${n} keys checked`);
}

Deno.test("ldmUnetModule inverts the single-file U-Net mapping (full-size SD 1.5 / 2.1 layouts)", () => {
  for (const [family, configs] of [["sd15", SD15], ["sd21", SD21]] as const) {
    const shapes = new Map(ldmTensors(family).map((t) => [t.name, { shape: t.shape }]));
    const { entries } = mapSingleFileKeys(shapes, {
      unet: configs.unet,
      vae: configs.vae,
      textEncoder: configs.text_encoder,
    });
    checkInverse(entries, configs.unet, family);
  }
});

Deno.test("ldmUnetModule on the tiny models (diffusers' own single-file conversion)", async () => {
  for (const model of ["tiny-sd15", "tiny-sd2"]) {
    const path = singleFile(model);
    if (path === undefined) return;
    const configs = (await openModelSource(modelDir(model))).configs;
    const src = await openModelSource(path, { configs });
    if (src.kind !== "single_file") throw new Error("expected a single file");
    src.file.close();
    checkInverse(src.mapping.entries, configs.unet, model);
  }
});

Deno.test("LoRA aliases name a module in kohya (diffusers and LDM paths), PEFT and diffusers forms", () => {
  assert.deepEqual(loraModuleAliases("unet", "up_blocks.3.attentions.2.proj_out", SD15.unet), [
    "lora_unet_up_blocks_3_attentions_2_proj_out",
    "lora_unet_output_blocks_11_1_proj_out",
    "unet.up_blocks.3.attentions.2.proj_out",
    "up_blocks.3.attentions.2.proj_out",
    "base_model.model.up_blocks.3.attentions.2.proj_out",
  ]);
  assert.deepEqual(
    loraModuleAliases("text_encoder", "text_model.encoder.layers.11.self_attn.out_proj"),
    [
      "lora_te_text_model_encoder_layers_11_self_attn_out_proj",
      "text_encoder.text_model.encoder.layers.11.self_attn.out_proj",
      "text_model.encoder.layers.11.self_attn.out_proj",
    ],
  );
  assert.equal(
    loraModuleAliases("unet", "down_blocks.1.resnets.0.time_emb_proj", SD15.unet)[1],
    "lora_unet_input_blocks_4_0_emb_layers_1",
  );
  assert.equal(
    loraModuleAliases("unet", "up_blocks.0.upsamplers.0.conv", SD15.unet)[1],
    "lora_unet_output_blocks_2_1_conv",
  );
});

Deno.test("VAE files: LDM keys with or without first_stage_model., diffusers keys (old attention names)", () => {
  const sd15 = ldmTensors("sd15").filter((t) => t.name.startsWith("first_stage_model."));
  const prefixed = new Map(sd15.map((t) => [t.name, { shape: t.shape }]));
  prefixed.set("first_stage_model.model_ema.decay", { shape: [] });
  const bare = new Map(
    sd15.map((t) => [t.name.slice("first_stage_model.".length), { shape: t.shape }]),
  );
  const a = mapVaeFileKeys(prefixed, { levels: 4 });
  const b = mapVaeFileKeys(bare, { levels: 4 });
  assert.deepEqual(a.unknown, []);
  assert.deepEqual(b.unknown, []);
  assert.equal(a.ignored.length, 1);
  const targets = (m: typeof a) => m.entries.map((e) => `${e.target.key} [${e.shape}]`).sort();
  assert.deepEqual(targets(a), targets(b));
  const full = mapSingleFileKeys(
    new Map(ldmTensors("sd15").map((t) => [t.name, { shape: t.shape }])),
    { unet: SD15.unet, vae: SD15.vae, textEncoder: SD15.text_encoder },
  );
  const vaeOnly = { ...full, entries: full.entries.filter((e) => e.target.component === "vae") };
  assert.deepEqual(targets(a), targets(vaeOnly));
  // a diffusers file maps to itself; the pre-0.14 attention names are renamed (and 1×1-squeezed)
  const diffusers = new Map(a.entries.map((e) => [e.target.key, { shape: e.shape }]));
  diffusers.delete("decoder.mid_block.attentions.0.to_q.weight");
  diffusers.set("decoder.mid_block.attentions.0.query.weight", { shape: [512, 512, 1, 1] });
  const c = mapVaeFileKeys(diffusers, { levels: 4 });
  assert.deepEqual(c.unknown, []);
  assert.deepEqual(targets(c), targets(a));
  const junk = mapVaeFileKeys(new Map([["model.diffusion_model.conv_in.weight", { shape: [1] }]]), {
    levels: 4,
  });
  assert.deepEqual(junk.unknown, ["model.diffusion_model.conv_in.weight"]);
});

Deno.test("extra networks: <lora:name[:te[:unet]]>, te=/unet=, lyco alias; others refused", () => {
  const p = parseExtraNetworks("a castle <lora:ghibli:0.7>, <lyco:ink:0.5:1.2> <lora:plain> x");
  assert.equal(p.text, "a castle ,   x");
  assert.deepEqual(p.loras.map(({ name, te, unet }) => [name, te, unet]), [
    ["ghibli", 0.7, 0.7],
    ["ink", 0.5, 1.2],
    ["plain", 1, 1],
  ]);
  const named = parseExtraNetworks("<lora:a:te=0.2:unet=0.9>");
  assert.deepEqual([named.loras[0].te, named.loras[0].unet], [0.2, 0.9]);
  assert.throws(() => parseExtraNetworks("<hypernet:x:1>"), /not "hypernet" networks/);
  assert.throws(() => parseExtraNetworks("<lora:x:heavy>"), /"heavy" is not a number/);
  assert.throws(() => parseExtraNetworks("<lora:x:1:1:8>"), /dyn/);
  assert.equal(parseExtraNetworks("no tags <b>").text, "no tags <b>");
});

Deno.test("chunking: an embedding takes its vectors' positions and moves whole to the next chunk", () => {
  const encode = (t: string) => t.split(/\s+/).filter(Boolean).map((w) => w === "emb" ? 7 : 5);
  const findEmbedding = (ids: readonly number[], at: number) =>
    ids[at] === 7 ? { name: "emb", length: 1, vectors: 3 } : undefined;
  const opts = { bos: 1, eos: 2, chunkLength: 6, findEmbedding, commaPaddingBacktrack: 0 };
  const [one] = chunkTokens(parsePromptAttention("a (emb) b"), encode, opts);
  assert.deepEqual(one.ids, [1, 5, 0, 0, 0, 5, 2, 2]);
  assert.deepEqual(one.fixes, [{ offset: 1, name: "emb", vectors: 3 }]);
  assert.deepEqual(one.weights.slice(2, 5), [1.1, 1.1, 1.1]);
  const two = chunkTokens(parsePromptAttention("a b c d emb"), encode, opts);
  assert.equal(two.length, 2);
  assert.deepEqual(two[0].ids, [1, 5, 5, 5, 5, 2, 2, 2]);
  assert.equal(two[0].fixes, undefined);
  assert.deepEqual(two[1].ids, [1, 0, 0, 0, 2, 2, 2, 2]);
  assert.deepEqual(two[1].fixes, [{ offset: 0, name: "emb", vectors: 3 }]);
});
