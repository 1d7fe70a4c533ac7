// End to end with add-ons on the tiny models: a LoRA from a prompt tag changes the image with its
// weight and gives the base image back exactly at weight 0; textual-inversion embeddings in both
// formats and widths, with their token cost; external VAEs in every layout through the strict path;
// the infotext fields.
import assert from "node:assert/strict";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { AutoencoderKL } from "../../src/models/vae.ts";
import { ClipTextModel } from "../../src/models/clip.ts";
import { RandomWeights } from "../../bench/random_weights.ts";
import { addEmbeddings, addonInfotext } from "../../src/pipeline/addons.ts";
import { decodeLatents } from "../../src/pipeline/decode.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { generate } from "../../src/pipeline/generate.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import { loadEmbedding } from "../../src/weights/textual_inversion.ts";
import { openModelSource, openVaeSource } from "../../src/weights/source.ts";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import { StrictImportError } from "../../src/weights/strict.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { randomArray } from "../util.ts";
import {
  bytesOf,
  encodeSafetensors,
  modelDir,
  type RawTensor,
  singleFile,
} from "../weights/fixtures.ts";
import { makeEmbedding, makeLora, modelShapes } from "./addon_files.ts";

const SD15 = modelDir("tiny-sd15");
const TMP = await Deno.makeTempDir({ prefix: "denoise-addons-" });
const LORAS = `${TMP}/loras`;
await Deno.mkdir(LORAS);

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice()));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

let pipe15: Promise<Pipeline> | undefined;
function tiny15(): Promise<Pipeline> {
  pipe15 ??= testRuntime().then((runtime) =>
    loadPipeline(SD15, { dtype: "f32", runtime, loraDir: LORAS })
  );
  return pipe15;
}

/** The settings of {@link image}, as `generate()` options: a 2-step Euler image at 64×64, seed 3. */
const GEN = {
  negativePrompt: "blurry",
  steps: 2,
  width: 64,
  height: 64,
  seed: 3,
  sampler: "euler",
} as const;

/** {@link GEN}'s image through the three composable steps: its RGBA bytes. */
async function image(pipe: Pipeline, prompt: string): Promise<Uint8Array> {
  const { negativePrompt, sampler, ...sampling } = GEN;
  const embeds = await encodePrompt(pipe, prompt, { negativePrompt });
  let last: Tensor | undefined;
  for await (const s of sampleLatents(pipe, embeds, { ...sampling, scheduler: sampler })) {
    last = s.latents;
  }
  embeds.dispose();
  const img = await decodeLatents(pipe, last!);
  last!.dispose();
  return img.data;
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

Deno.test({
  name: "LoRA end to end: <lora:NAME:W> changes the image with W, and W = 0 (or no tag) gives " +
    "the base image bit for bit",
  ...GPU_TEST,
  fn: async () => {
    const shapes = await modelShapes(SD15);
    const { bytes } = makeLora(shapes, {
      format: "kohya",
      dtype: "F16",
      seed: 11,
      layers: "locon",
      magnitude: 0.5,
    });
    await Deno.writeFile(`${LORAS}/style.safetensors`, bytes);
    const pipe = await tiny15();
    const base = await image(pipe, "a red fox");
    const full = await image(pipe, "a red fox <lora:style:1>");
    const half = await image(pipe, "a red fox <lora:style:0.5>");
    const zero = await image(pipe, "a red fox <lora:style:0>");
    const again = await image(pipe, "a red fox");
    const d1 = meanAbsDiff(base, full), dHalf = meanAbsDiff(base, half);
    assert.ok(d1 > 2, `weight 1 changes the image (mean |Δ| ${d1.toFixed(2)} of 255)`);
    assert.ok(
      dHalf > 0.5 && meanAbsDiff(half, full) > 0.5,
      `weight 0.5 is between (${dHalf.toFixed(2)})`,
    );
    assert.deepEqual(zero, base, "weight 0 is the base image");
    assert.deepEqual(again, base, "without the tag the base weights are back");
    // generate({ loras }) is the library spelling of the same thing
    const [plainGen0] = await generate(pipe, "a red fox", GEN);
    assert.deepEqual(
      plainGen0.data,
      base,
      "generate() = encodePrompt → sampleLatents → decodeLatents",
    );
    const [viaOption] = await generate(pipe, "a red fox", {
      ...GEN,
      loras: [{ lora: `${LORAS}/style.safetensors`, weight: 1 }],
    });
    assert.deepEqual(viaOption.data, full, "generate({ loras }) = the <lora:style:1> image");
    assert.match(viaOption.parameters, /, Lora hashes: "style: [0-9a-f]{12}"$/);
    const [plainGen] = await generate(pipe, "a red fox", GEN);
    assert.deepEqual(plainGen.data, base, "the next generate() has the base weights");
    // the tag is not tokenized: the prompt encodes as the text without it
    const plain = await encodePrompt(pipe, "a red fox , ok");
    const tagged = await encodePrompt(pipe, "a red fox <lora:style:0>, ok");
    assert.deepEqual(await tagged.cond.read(), await plain.cond.read());
    const info = await addonInfotext(pipe, tagged);
    assert.equal(info.loraHashes, undefined, "a weight-0 LoRA is not recorded");
    const used = await encodePrompt(pipe, "a red fox <lora:style:0.8>");
    const fields = await addonInfotext(pipe, used);
    const data = bytes.slice(8 + Number(new DataView(bytes.buffer).getBigUint64(0, true)));
    assert.equal(fields.loraHashes, `style: ${(await sha256(data)).slice(0, 12)}`);
    for (const e of [plain, tagged, used]) e.dispose();
    await assert.rejects(
      encodePrompt(pipe, "x <lora:nothere:1>"),
      /"nothere" is not in .*it has: style/,
    );
    await assert.rejects(
      encodePrompt(pipe, "x", { negativePrompt: "<lora:style:1>" }),
      /LoRA tags are read from the prompt only/,
    );
    await encodePrompt(pipe, "back to base").then((e) => e.dispose());
  },
});

Deno.test({
  name: "textual inversion: an embedding equal to the rows of 'red fox' encodes exactly as 'red " +
    "fox' (A1111 and diffusers files, f32 and f16, tiny-sd15 and tiny-sd2), taking its vectors' positions",
  ...GPU_TEST,
  fn: async () => {
    const runtime = await testRuntime();
    for (const model of ["tiny-sd15", "tiny-sd2"]) {
      const pipe = model === "tiny-sd15"
        ? await tiny15()
        : await loadPipeline(modelDir(model), { dtype: "f32", runtime });
      const dim = pipe.configs.text_encoder.hidden_size;
      const ids = pipe.tokenizer.encode("red fox");
      const vectors = new Float32Array(ids.length * dim);
      ids.forEach((id, i) =>
        vectors.set(pipe.textEncoder.tokenEmbedding.subarray(id * dim, (id + 1) * dim), i * dim)
      );
      const a1111 = `${TMP}/${model}-foxy.safetensors`;
      await Deno.writeFile(a1111, makeEmbedding(vectors, dim, { format: "a1111", dtype: "F32" }));
      const diffusers = `${TMP}/${model}-concept.safetensors`;
      await Deno.writeFile(
        diffusers,
        makeEmbedding(vectors, dim, { format: "diffusers", dtype: "F16", token: "<fox-thing>" }),
      );
      const [e1, e2] = await addEmbeddings(pipe, [a1111, diffusers]);
      assert.deepEqual([e1.count, e1.format, e2.format], [ids.length, "a1111", "diffusers"]);
      assert.deepEqual(e2.triggers, [`${model}-concept`, "<fox-thing>"]);
      const want = await encodePrompt(pipe, "a photo of a red fox, (in snow:1.2)", {
        negativePrompt: "red fox",
      });
      for (const name of [`${model}-foxy`, `${model}-concept`, "<fox-thing>"]) {
        const got = await encodePrompt(pipe, `a photo of a ${name}, (in snow:1.2)`, {
          negativePrompt: name,
        });
        assert.deepEqual(await got.cond.read(), await want.cond.read(), `${model} ${name} cond`);
        assert.deepEqual(
          await got.uncond.read(),
          await want.uncond.read(),
          `${model} ${name} uncond`,
        );
        assert.equal(got.embeddings?.length, 1);
        const fields = await addonInfotext(pipe, got);
        const hash = await sha256(await Deno.readFile(got.embeddings![0].path));
        assert.equal(fields.tiHashes, `${got.embeddings![0].name}: ${hash.slice(0, 12)}`);
        got.dispose();
      }
      const none = await encodePrompt(pipe, `a photo of a ${model}-foxy`, { parse: "none" });
      const noneWant = await encodePrompt(pipe, "a photo of a red fox", { parse: "none" });
      assert.deepEqual(await none.cond.read(), await noneWant.cond.read(), `${model} parse none`);
      for (const e of [want, none, noneWant]) e.dispose();
      if (model !== "tiny-sd15") pipe.dispose();
    }
  },
});

Deno.test({
  name: "textual inversion: the chunk cost is the vector count; wrong widths, SDXL, several " +
    "tensors and pickles are refused; a folder skips what does not fit, saying so",
  ...GPU_TEST,
  fn: async () => {
    const pipe = await tiny15();
    const dim = pipe.configs.text_encoder.hidden_size;
    const long = `${TMP}/tenvec.safetensors`;
    await Deno.writeFile(
      long,
      makeEmbedding(randomArray(10 * dim, 5), dim, { format: "a1111", dtype: "F16" }),
    );
    await addEmbeddings(pipe, [long]);
    const words = Array.from({ length: 70 }, () => "a").join(" ");
    const one = await encodePrompt(pipe, `${words} b`);
    const two = await encodePrompt(pipe, `${words} tenvec`);
    assert.equal(one.cond.shape[1], 77, "70 + 1 tokens fit one chunk");
    assert.equal(two.cond.shape[1], 154, "70 tokens + 10 vectors need two chunks");
    one.dispose();
    two.dispose();
    const wide = `${TMP}/wide.safetensors`;
    await Deno.writeFile(
      wide,
      makeEmbedding(randomArray(2 * 768, 1), 768, { format: "a1111", dtype: "F16" }),
    );
    await assert.rejects(
      addEmbeddings(pipe, [wide]),
      /is 768 wide \(SD 1\.x\), but this model's text encoder is 32 wide/,
    );
    const xl = `${TMP}/xl.safetensors`;
    const raw = (name: string, n: number): RawTensor => ({
      name,
      dtype: "F32",
      shape: [1, n],
      data: bytesOf(new Float32Array(n)),
    });
    await Deno.writeFile(xl, encodeSafetensors([raw("clip_l", 768), raw("clip_g", 1280)]));
    await assert.rejects(loadEmbedding(xl), /SDXL embedding/);
    const two2 = `${TMP}/twokeys.safetensors`;
    await Deno.writeFile(two2, encodeSafetensors([raw("a", 32), raw("b", 32)]));
    await assert.rejects(
      loadEmbedding(two2),
      /not a textual-inversion embedding: it has 2 tensors/,
    );
    await assert.rejects(loadEmbedding(`${TMP}/old.pt`), /pickle/);
    const dir = `${TMP}/embeddings`;
    await Deno.mkdir(`${dir}/sub`, { recursive: true });
    await Deno.copyFile(long, `${dir}/sub/deep.safetensors`);
    await Deno.copyFile(wide, `${dir}/wide.safetensors`);
    await Deno.writeFile(`${dir}/old.pt`, new Uint8Array([0x80, 2]));
    const warnings: string[] = [];
    const runtime = await testRuntime();
    const p = await loadPipeline(SD15, {
      dtype: "f32",
      runtime,
      embeddingDir: dir,
      onWarning: (m) => warnings.push(m),
    });
    const e = await encodePrompt(p, "deep");
    assert.equal(e.embeddings?.[0].name, "deep");
    await e.cond.read(); // submits the recorded work before its weights go
    e.dispose();
    assert.match(
      warnings.join("\n"),
      /skipped 2 files[\s\S]*old\.pt \(a pickle[\s\S]*wide\.safetensors \(embedding .* is 768 wide/,
    );
    p.dispose();
  },
});

/** CLIP parameter shapes for a config (the keys ClipTextModel takes). */
function clipShapes(c: { hidden_size: number; intermediate_size: number; vocab_size: number }) {
  const d = c.hidden_size, i = c.intermediate_size;
  const shapes = new Map<string, number[]>([
    ["text_model.embeddings.token_embedding.weight", [c.vocab_size, d]],
    ["text_model.embeddings.position_embedding.weight", [77, d]],
    ["text_model.final_layer_norm.weight", [d]],
    ["text_model.final_layer_norm.bias", [d]],
  ]);
  const layer = "text_model.encoder.layers.0";
  for (const p of ["q", "k", "v", "out"]) {
    shapes.set(`${layer}.self_attn.${p}_proj.weight`, [d, d]);
    shapes.set(`${layer}.self_attn.${p}_proj.bias`, [d]);
  }
  for (const n of ["layer_norm1", "layer_norm2"]) {
    shapes.set(`${layer}.${n}.weight`, [d]);
    shapes.set(`${layer}.${n}.bias`, [d]);
  }
  shapes.set(`${layer}.mlp.fc1.weight`, [i, d]).set(`${layer}.mlp.fc1.bias`, [i]);
  shapes.set(`${layer}.mlp.fc2.weight`, [d, i]).set(`${layer}.mlp.fc2.bias`, [d]);
  return shapes;
}

Deno.test({
  name: "textual inversion on 768- and 1024-wide text encoders (SD 1.x / 2.x widths, one layer, " +
    "random weights): the embedding equals the words it replaces; the other width is refused",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const tiny = await tiny15();
    for (const [dim, act, other] of [[768, "quick_gelu", 1024], [1024, "gelu", 768]] as const) {
      const config = {
        ...tiny.configs.text_encoder,
        hidden_size: dim,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: dim / 64,
        hidden_act: act,
      };
      const textEncoder = ClipTextModel.load(rt, {
        tensors: new RandomWeights(clipShapes(config), { seed: dim, dtype: "f32" }),
        config,
        dtype: "f32",
      });
      const pipe = {
        ...tiny,
        textEncoder,
        configs: { ...tiny.configs, text_encoder: config },
      } as Pipeline;
      const ids = pipe.tokenizer.encode("red fox");
      const vectors = new Float32Array(ids.length * dim);
      ids.forEach((id, i) =>
        vectors.set(textEncoder.tokenEmbedding.subarray(id * dim, (id + 1) * dim), i * dim)
      );
      const path = `${TMP}/wide${dim}.safetensors`;
      await Deno.writeFile(path, makeEmbedding(vectors, dim, { format: "a1111", dtype: "F32" }));
      await addEmbeddings(pipe, [path]);
      const want = await encodePrompt(pipe, "a (red fox:1.1)");
      const got = await encodePrompt(pipe, `a (wide${dim}:1.1)`);
      assert.equal(got.cond.shape[2], dim);
      assert.deepEqual(await got.cond.read(), await want.cond.read(), `${dim} wide`);
      want.dispose();
      got.dispose();
      const wrong = `${TMP}/other${other}.safetensors`;
      await Deno.writeFile(
        wrong,
        makeEmbedding(randomArray(other, 1), other, { format: "a1111", dtype: "F16" }),
      );
      const family = (d: number) => d === 768 ? "SD 1\\.x" : "SD 2\\.x";
      await assert.rejects(
        addEmbeddings(pipe, [wrong]),
        new RegExp(
          `is ${other} wide \\(${
            family(other)
          }\\), but this model's text encoder is ${dim} wide \\(${family(dim)}\\)`,
        ),
      );
      textEncoder.dispose();
    }
  },
});

/** Writes the tiny VAE in another layout; returns the path. */
async function writeVae(
  name: string,
  keys: (ldm: string, diffusers: string) => string,
  dtype: "F16" | "F32",
) {
  const single = singleFile("tiny-sd15");
  if (single === undefined) return undefined;
  const f = await openSafetensors(single);
  const tensors: RawTensor[] = [];
  for (const [key, info] of f.tensors) {
    if (!key.startsWith("first_stage_model.")) continue;
    const raw = await f.read(key);
    const data = dtype === "F16" ? raw : bytesOf(
      Float32Array.from(new Float16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2)),
    );
    tensors.push({
      name: keys(key, key.slice("first_stage_model.".length)),
      dtype,
      shape: info.shape,
      data,
    });
  }
  f.close();
  tensors.push({
    name: "model_ema.decay",
    dtype: "F32",
    shape: [],
    data: bytesOf(new Float32Array([0.9999])),
  });
  const path = `${TMP}/${name}.safetensors`;
  await Deno.writeFile(path, encodeSafetensors(tensors));
  return path;
}

Deno.test({
  name:
    "external VAE: a diffusers folder and single files (first_stage_model., bare LDM, diffusers " +
    "keys; f16, f32) decode exactly as the model's own VAE; shapes checked strictly; recorded in the infotext",
  ...GPU_TEST,
  fn: async () => {
    const runtime = await testRuntime();
    const base = await tiny15();
    const latents = runtime.upload(randomArray(4 * 8 * 8, 9), [1, 4, 8, 8]);
    const want = (await decodeLatents(base, latents)).float;
    const config = (await openModelSource(SD15)).configs.vae;
    const check = async (path: string, label: string) => {
      const src = await openVaeSource(path, { config });
      const vae = AutoencoderKL.load(runtime, {
        tensors: src.tensors,
        config: src.config,
        dtype: "f32",
        parts: ["decoder"],
      });
      const got = vae.decode(latents.reshape([1, 4, 8, 8]));
      assert.deepEqual(await got.read(), await decodeRaw(base, latents), label);
      got.dispose();
      vae.dispose();
    };
    const prefixed = await writeVae("vae-ldm", (ldm) => ldm, "F16");
    const bare = await writeVae("vae-bare", (_, d) => d, "F32");
    const layouts: [string | undefined, string][] = [
      [prefixed, "first_stage_model."],
      [bare, "bare LDM f32"],
      [`${SD15}/vae/diffusion_pytorch_model.safetensors`, "diffusers keys"],
    ];
    for (const [path, label] of layouts) if (path !== undefined) await check(path, label);
    // through loadPipeline: the folder, with the infotext fields
    const pipe = await loadPipeline(SD15, { dtype: "f32", runtime, vae: `${SD15}/vae` });
    assert.deepEqual((await decodeLatents(pipe, latents)).float, want, "folder VAE");
    const fields = await addonInfotext(pipe, {});
    const weights = await Deno.readFile(`${SD15}/vae/diffusion_pytorch_model.safetensors`);
    assert.deepEqual(fields, { vae: "vae", vaeHash: (await sha256(weights)).slice(0, 10) });
    pipe.dispose();
    // strictness: a VAE of other widths, and a file that is no VAE
    const sd2vae = `${TMP}/narrow.safetensors`;
    const tensors: RawTensor[] = [];
    const f = await openSafetensors(`${SD15}/vae/diffusion_pytorch_model.safetensors`);
    for (const [key, info] of f.tensors) {
      const shape = key === "decoder.conv_in.weight" ? [16, ...info.shape.slice(1)] : info.shape;
      const n = shape.reduce((a, b) => a * b, 1);
      tensors.push({ name: key, dtype: "F16", shape, data: bytesOf(new Float16Array(n)) });
    }
    f.close();
    await Deno.writeFile(
      sd2vae,
      encodeSafetensors(tensors.filter((t) => t.name !== "decoder.conv_out.bias")),
    );
    await assert.rejects(
      loadPipeline(SD15, { dtype: "f32", runtime, vae: sd2vae }),
      (e: unknown) =>
        e instanceof StrictImportError && e.missing.includes("decoder.conv_out.bias") &&
        e.mismatched.some((m) => m.key === "decoder.conv_in.weight"),
    );
    await assert.rejects(
      loadPipeline(SD15, {
        dtype: "f32",
        runtime,
        vae: `${SD15}/unet/diffusion_pytorch_model.safetensors`,
      }),
      /is not a VAE this loader knows: \d+ keys match no VAE layout/,
    );
    await assert.rejects(
      loadPipeline(SD15, { dtype: "f32", runtime, vae: `${TMP}/nope.safetensors` }),
      /VAE .* does not exist/,
    );
    latents.dispose();
  },
});

/** The raw decoder output of the model's own VAE (before the image conversion). */
async function decodeRaw(pipe: Pipeline, latents: Tensor): Promise<Float32Array> {
  const out = pipe.vae.decode(latents.reshape([1, 4, 8, 8]));
  const values = await out.read();
  out.dispose();
  return values;
}

globalThis.addEventListener("unload", () => Deno.removeSync(TMP, { recursive: true }));
