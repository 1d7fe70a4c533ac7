import assert from "node:assert/strict";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { activeLoras, applyLoras, mergeLoraInto } from "../../src/pipeline/lora.ts";
import { loraMergeRef } from "../../src/reference/lora.ts";
import { loadLora } from "../../src/weights/lora.ts";
import { openModelSource, readComponent } from "../../src/weights/source.ts";
import { testPipeline } from "./pipes.ts";
import { f16Unavailable, GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";
import { bytesOf, encodeSafetensors, modelDir } from "../weights/fixtures.ts";
import {
  ldmNames,
  type LoraFormat,
  makeLora,
  type MakeLoraOptions,
  modelShapes,
  type WrittenModule,
} from "./addon_files.ts";

const SD15 = modelDir("tiny-sd15");
const TMP = await Deno.makeTempDir({ prefix: "denoise-lora-" });
const shapes = await modelShapes(SD15);
const configs = (await openModelSource(SD15)).configs;

function pipeFor(dtype: "f32" | "f16"): Promise<Pipeline> {
  return testPipeline("tiny-sd15", { dtype });
}

const baseValues = new Map<string, Promise<Map<string, Float32Array>>>();
/** A tiny model's weights as float32, by `component:key`. */
function base(dir = SD15): Promise<Map<string, Float32Array>> {
  let values = baseValues.get(dir);
  if (values === undefined) {
    values = (async () => {
      const src = await openModelSource(dir);
      const out = new Map<string, Float32Array>();
      for (const c of ["unet", "text_encoder"] as const) {
        for (const [k, t] of await readComponent(src, c, { f32: true })) {
          out.set(`${c}:${k}`, t.data as Float32Array);
        }
      }
      return out;
    })();
    baseValues.set(dir, values);
  }
  return values;
}

async function write(name: string, bytes: Uint8Array): Promise<string> {
  const path = `${TMP}/${name}.safetensors`;
  await Deno.writeFile(path, bytes);
  return path;
}

/** Tolerances of a merged weight against the float64 reference, for the model's dtype. */
function tolerance(dtype: string, delta: number) {
  return dtype === "f16" ? { atol: 2e-3 * delta, rtol: 1e-3 } : { atol: 1e-6 * delta, rtol: 1e-6 };
}

/** Checks every adapted weight against base + Σ scale·up·down in float64. */
async function checkMerged(
  pipe: Pipeline,
  loras: { modules: WrittenModule[]; multiplier: number }[],
  label: string,
  dir = SD15,
) {
  const baseMap = await base(dir);
  const byKey = new Map<string, { m: WrittenModule; multiplier: number }[]>();
  for (const { modules, multiplier } of loras) {
    for (const m of modules) {
      const id = `${m.component}:${m.key}`;
      byKey.set(id, [...(byKey.get(id) ?? []), { m, multiplier }]);
    }
  }
  for (const [id, list] of byKey) {
    const [component, key] = id.split(/:(.*)/s);
    const weight = (component === "unet" ? pipe.unet : pipe.textEncoder).params.get(key)!;
    const parts = list.map(({ m, multiplier }) => ({
      down: m.down.data,
      up: m.up.data,
      rank: m.rank,
      scale: multiplier * (m.alpha === undefined ? 1 : m.alpha / m.rank),
    }));
    const b = baseMap.get(id)!;
    const ref = loraMergeRef(b, weight.shape[0], parts);
    let delta = 0;
    for (let i = 0; i < ref.length; i++) delta = Math.max(delta, Math.abs(ref[i] - b[i]));
    assert.ok(delta > 0, `${label} ${id}: the LoRA changes nothing`);
    assertClose(await weight.read(), ref, {
      ...tolerance(weight.dtype, delta),
      label: `${label} ${id}`,
    });
  }
}

/** Checks that every weight a LoRA touched holds its original values bit for bit. */
async function checkBase(pipe: Pipeline, modules: WrittenModule[], label: string) {
  const baseMap = await base();
  for (const m of modules) {
    const weight = (m.component === "unet" ? pipe.unet : pipe.textEncoder).params.get(m.key)!;
    assert.deepEqual(
      await weight.read(),
      baseMap.get(`${m.component}:${m.key}`),
      `${label} ${m.key}`,
    );
  }
}

Deno.test({
  name: "LoRA merge: W + Σ scale·up·down on odd shapes (linear and k×k conv, two LoRAs) vs float64",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const cases = [
      { shape: [7, 5], ranks: [3] },
      { shape: [9, 3, 3, 3], ranks: [2, 5] },
      { shape: [33, 17, 1, 1], ranks: [1, 4] },
      { shape: [65, 130], ranks: [8] },
    ];
    for (const dtype of testDTypes(rt)) {
      for (const { shape, ranks } of cases) {
        const out = shape[0], cols = shape.slice(1).reduce((a, b) => a * b, 1);
        const b = randomArray(out * cols, out + cols);
        const parts = ranks.map((r, i) => ({
          down: { shape: [r, ...shape.slice(1)], data: randomArray(r * cols, 10 + i) },
          up: { shape: [out, r], data: randomArray(out * r, 20 + i) },
          scale: i === 0 ? 0.75 : -1.3,
        }));
        const baseT = rt.upload(b, shape, { dtype });
        const weight = rt.empty(shape, dtype);
        mergeLoraInto(weight, baseT, parts);
        const got = await weight.read();
        const rounded = dtype === "f16" ? Float32Array.from(Float16Array.from(b)) : b;
        const ref = loraMergeRef(
          rounded,
          out,
          parts.map((p, i) => ({
            down: p.down.data,
            up: p.up.data,
            rank: ranks[i],
            scale: p.scale,
          })),
        );
        const tol = dtype === "f16" ? { atol: 2e-2, rtol: 2e-3 } : { atol: 1e-5, rtol: 1e-5 };
        assertClose(got, ref, { ...tol, label: `merge ${dtype} [${shape}] ranks ${ranks}` });
        baseT.dispose();
        weight.dispose();
      }
    }
  },
});

const FORMATS: { format: LoraFormat; dtype: "F16" | "F32"; layers?: "locon" }[] = [
  { format: "kohya", dtype: "F16" },
  { format: "kohya", dtype: "F32", layers: "locon" },
  { format: "kohya_ldm", dtype: "F32", layers: "locon" },
  { format: "peft", dtype: "F16" },
  { format: "peft", dtype: "F32", layers: "locon" },
  { format: "diffusers_old", dtype: "F32" },
];

for (const { format, dtype, layers } of FORMATS) {
  Deno.test({
    name: `LoRA ${format}${layers ? " (LoCon)" : ""} ${dtype} file on the f32 tiny-sd15: every ` +
      `adapted weight matches the float64 formula, and [] restores the base exactly`,
    ...GPU_TEST,
    fn: async () => {
      const options: MakeLoraOptions = { format, dtype, layers, seed: 7 };
      if (format === "kohya_ldm") {
        const ldm = await ldmNames("tiny-sd15", configs);
        if (ldm === undefined) return;
        options.ldm = ldm;
      }
      const { bytes, modules } = makeLora(shapes, options);
      const path = await write(`${format}-${dtype}-${layers ?? "attn"}`, bytes);
      const pipe = await pipeFor("f32");
      const lora = await loadLora(path);
      assert.equal(lora.modules.size, modules.length);
      assert.ok(modules.some((m) => m.component === "text_encoder"), "the text encoder is adapted");
      if (layers === "locon") assert.ok(modules.some((m) => m.down.shape[2] === 3), "3×3 convs");
      await applyLoras(pipe, [{ lora, weight: 0.8 }], {
        onUnmatched: (_, keys) => assert.fail(`unmatched: ${keys}`),
      });
      await checkMerged(pipe, [{ modules, multiplier: 0.8 }], format);
      await applyLoras(pipe, []);
      await checkBase(pipe, modules, `${format} restored`);
    },
  });
}

Deno.test({
  name: "LoRA: two LoRAs with their own weights on the f16 model; switching weights and back to " +
    "weight 0 gives the base weights bit for bit",
  ignore: await f16Unavailable(),
  ...GPU_TEST,
  fn: async () => {
    const a = makeLora(shapes, { format: "kohya", dtype: "F16", seed: 1, layers: "locon" });
    const b = makeLora(shapes, { format: "peft", dtype: "F32", seed: 2 });
    const loraA = await loadLora(await write("a", a.bytes));
    const loraB = await loadLora(await write("b", b.bytes));
    const pipe = await pipeFor("f16");
    await applyLoras(pipe, [{ lora: loraA, weight: 0.5 }, { lora: loraB, weight: -0.7 }]);
    await checkMerged(pipe, [
      { modules: a.modules, multiplier: 0.5 },
      { modules: b.modules, multiplier: -0.7 },
    ], "a+b");
    await applyLoras(pipe, [{ lora: loraA, weight: 1 }]);
    await checkMerged(pipe, [{ modules: a.modules, multiplier: 1 }], "a alone");
    await checkBase(
      pipe,
      b.modules.filter((m) => !a.modules.some((x) => x.key === m.key)),
      "b off",
    );
    await applyLoras(pipe, [{ lora: loraA, weight: 0 }, { lora: loraB, te: 0, unet: 0 }]);
    await checkBase(pipe, [...a.modules, ...b.modules], "weight 0");
  },
});

Deno.test({
  name: "LoRA: separate text-encoder and U-Net weights (A1111's te/unet multipliers)",
  ...GPU_TEST,
  fn: async () => {
    const a = makeLora(shapes, { format: "kohya", dtype: "F32", seed: 3 });
    const lora = await loadLora(await write("te-unet", a.bytes));
    const pipe = await pipeFor("f32");
    await applyLoras(pipe, [{ lora, te: 0, unet: 1.5 }]);
    await checkMerged(pipe, [{
      modules: a.modules.filter((m) => m.component === "unet"),
      multiplier: 1.5,
    }], "unet");
    await checkBase(pipe, a.modules.filter((m) => m.component === "text_encoder"), "te off");
    await applyLoras(pipe, []);
  },
});

Deno.test({
  name: "LoRA families and refusals: SD 2.x (by shape or metadata) and SDXL LoRAs on SD 1.x, SD " +
    "1.x on SD 2.x; an SD 2.x LoRA via loadPipeline({ loras }) on tiny-sd2; other LyCORIS types, " +
    "missing and wrong-shaped factors; unmatched keys are listed",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await pipeFor("f32");
    const sd2 = await modelShapes(modelDir("tiny-sd2"));
    const v2 = makeLora(sd2, { format: "kohya", dtype: "F16", seed: 4 });
    await assert.rejects(
      applyLoras(pipe, [{ lora: await write("sd2", v2.bytes) }]),
      /is a LoRA for SD 2\.x \(its proj_in\/proj_out are linear \(SD 2\.x\).*the model is SD 1\.x/,
    );
    const runtime0 = await testRuntime();
    await assert.rejects(
      loadPipeline(SD15, {
        dtype: "f32",
        runtime: runtime0,
        loras: [{ lora: `${TMP}/sd2.safetensors` }],
      }),
      /is a LoRA for SD 2\.x/,
      "loadPipeline({ loras }) matches them before reading the weights",
    );
    const tagged = makeLora(shapes, {
      format: "kohya",
      dtype: "F16",
      seed: 4,
      metadata: { ss_v2: "True" },
    });
    await assert.rejects(
      applyLoras(pipe, [{ lora: await write("tagged", tagged.bytes) }]),
      /is a LoRA for SD 2\.x \(its metadata says so\)/,
    );
    const wide = new Map(shapes.unet);
    for (const [k, s] of wide) if (/attn2\.to_[kv]\.weight$/.test(k)) wide.set(k, [s[0], 1024]);
    const ctx = makeLora({ unet: wide, text_encoder: shapes.text_encoder }, {
      format: "peft",
      dtype: "F16",
      seed: 5,
    });
    await assert.rejects(
      applyLoras(pipe, [{ lora: await write("ctx1024", ctx.bytes) }]),
      /SD 2\.x \(its cross-attention takes 1024-wide text embeddings, the model's 32\)/,
    );
    const f16 = (n: number) => bytesOf(new Float16Array(n));
    const file = (name: string, tensors: [string, number[]][]) =>
      write(
        name,
        encodeSafetensors(tensors.map(([n, shape]) => ({
          name: n,
          dtype: "F16",
          shape,
          data: f16(shape.reduce((a, b) => a * b, 1)),
        }))),
      );
    const q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    await assert.rejects(
      applyLoras(pipe, [{
        lora: await file("xl", [[`lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight`, [
          2,
          32,
        ]], [`lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight`, [37, 2]]]),
      }]),
      /is a LoRA for SDXL \(it has lora_te1_/,
    );
    await assert.rejects(
      loadLora(await file("loha", [[`${q}.hada_w1_a`, [32, 2]], [`${q}.hada_w1_b`, [2, 32]]])),
      /LyCORIS LoHa/,
    );
    await assert.rejects(
      loadLora(await file("noup", [[`${q}.lora_down.weight`, [2, 32]]])),
      /missing its up/,
    );
    await assert.rejects(
      applyLoras(pipe, [{
        lora: await file("wrong", [[`${q}.lora_down.weight`, [2, 31]], [`${q}.lora_up.weight`, [
          32,
          2,
        ]]]),
      }]),
      /1 layers with the wrong shape[\s\S]*to_q\.weight: down \[2,31\], up \[32,2\] vs weight \[32,32\]/,
    );
    await assert.rejects(
      applyLoras(pipe, [{
        lora: await file("none", [[`lora_unet_nowhere.lora_down.weight`, [2, 32]], [
          `lora_unet_nowhere.lora_up.weight`,
          [32, 2],
        ]]),
      }]),
      /none of its 1 layers matches this model/,
    );
    let listed: string[] = [];
    await applyLoras(pipe, [{
      lora: await file("partly", [
        [`${q}.lora_down.weight`, [2, 32]],
        [`${q}.lora_up.weight`, [32, 2]],
        [`lora_unet_nowhere.lora_down.weight`, [2, 32]],
        [`lora_unet_nowhere.lora_up.weight`, [32, 2]],
        [`bundle_emb.style.string_to_param.*`, [1, 32]],
      ]),
    }], { onUnmatched: (_, keys) => listed = keys });
    assert.deepEqual(listed, ["lora_unet_nowhere", "bundle_emb.style.string_to_param.*"]);
    await applyLoras(pipe, []);
    // the other way round: an SD 2.x LoRA applies to SD 2.x, an SD 1.x one is refused there
    const runtime = await testRuntime();
    const dir2 = modelDir("tiny-sd2");
    const v2peft = makeLora(sd2, { format: "peft", dtype: "F32", seed: 6 });
    const pipe2 = await loadPipeline(dir2, {
      dtype: "f32",
      runtime,
      loras: [{ lora: await write("sd2-peft", v2peft.bytes), weight: 0.9 }],
    });
    try {
      assert.deepEqual(activeLoras(pipe2).map((l) => [l.name, l.te, l.unet]), [[
        "sd2-peft",
        0.9,
        0.9,
      ]]);
      await checkMerged(pipe2, [{ modules: v2peft.modules, multiplier: 0.9 }], "sd2 on sd2", dir2);
      const v1 = makeLora(shapes, { format: "kohya", dtype: "F16", seed: 4 });
      await assert.rejects(
        applyLoras(pipe2, [{ lora: await write("sd1", v1.bytes) }]),
        /is a LoRA for SD 1\.x \(its proj_in\/proj_out are 1×1 convs \(SD 1\.x\).*the model is SD 2\.x/,
      );
    } finally {
      pipe2.dispose();
    }
  },
});

Deno.test({
  name:
    "LoRA hash: kohya's addnet hash (SHA-256 after the header), or the metadata's sshs_model_hash",
  fn: async () => {
    const { bytes } = makeLora(shapes, {
      format: "kohya",
      dtype: "F16",
      seed: 9,
      textEncoder: false,
    });
    const lora = await loadLora(await write("hashme", bytes));
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const digest = await crypto.subtle.digest("SHA-256", bytes.slice(8 + headerLength));
    const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
    assert.equal(lora.hash, hex);
    assert.equal(lora.shorthash, hex.slice(0, 12));
    assert.equal(lora.name, "hashme");
    const named = makeLora(shapes, {
      format: "kohya",
      dtype: "F16",
      seed: 9,
      textEncoder: false,
      metadata: { sshs_model_hash: "feedbeef".repeat(8), ss_output_name: "Pretty" },
    });
    const l2 = await loadLora(await write("named", named.bytes));
    assert.equal(l2.shorthash, "feedbeeffeed");
    assert.equal(l2.alias, "Pretty");
  },
});

globalThis.addEventListener("unload", () => Deno.removeSync(TMP, { recursive: true }));
