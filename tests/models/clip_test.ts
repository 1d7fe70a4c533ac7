import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { ClipTextModel } from "../../src/models/clip.ts";
import { layerNormRef } from "../../src/reference/norm.ts";
import type { CLIPTextConfig } from "../../src/weights/configs.ts";
import {
  closeModelSource,
  type LoadedTensor,
  type ModelSource,
  openModelSource,
  readComponent,
} from "../../src/weights/source.ts";
import { StrictImportError } from "../../src/weights/strict.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertCloseToScale, errorStats, fixture } from "../util.ts";
import { modelDir, MODELS, singleFile } from "../weights/fixtures.ts";

const KERNELS = ["norm", "attention", "layout"];
const RUNS: Record<string, string> = {
  "tiny-sd15": "tiny-sd15__pndm",
  "tiny-sd2": "tiny-sd2__ddim_v",
};
// f16: 5e-3 of scale (the f16 error is ~8e-4; the wrong MLP activation gives ~1e-2)
const TOL: Record<DType, number> = { f32: 1e-4, f16: 5e-3 };

type Npy = { shape: number[]; data: Float32Array };

/** The reference tensors of one dump run. */
async function references(run: string) {
  const f = (name: string) => fixture(`dumps/${run}/${name}.npy`);
  const [tokCond, tokUncond] = [await f("tokens_cond"), await f("tokens_uncond")];
  return {
    // batch order (uncond, cond), as the pipeline's U-Net batch
    ids: Int32Array.from([...tokUncond.data, ...tokCond.data]),
    hidden: [await f("text_hidden_states_uncond"), await f("text_hidden_states_cond")],
    embeds: [await f("text_embeds_uncond"), await f("text_embeds_cond")],
    pooledCond: await f("text_pooled_cond"),
  };
}

/** Rows `[start, start + n)` of a flat array. */
function rows(a: Float32Array, start: number, n: number, width: number): Float32Array {
  return a.subarray(start * width, (start + n) * width);
}

/** Per-tensor error lines, printed before a failing check so a wrong stage is found at once. */
function report(label: string, got: Float32Array, ref: Float32Array): string {
  const s = errorStats(got, ref);
  return `${label}: max |Δ| ${s.maxAbs.toExponential(2)} of scale ${s.scale.toFixed(3)}, ` +
    `nmse ${s.nmse.toExponential(2)}`;
}

/** float32 values of a loaded tensor (F32 or F16 bytes). */
function hostValues(t: LoadedTensor): Float64Array {
  const d = t.data;
  if (d instanceof Float32Array) return Float64Array.from(d);
  if (t.dtype === "F32") return Float64Array.from(new Float32Array(d.slice().buffer));
  assert.equal(t.dtype, "F16");
  return Float64Array.from(new Float16Array(d.slice().buffer));
}

async function openSource(model: string, layout: string): Promise<ModelSource | undefined> {
  const folder = await openModelSource(modelDir(model));
  if (layout === "folder") return folder;
  const path = singleFile(model);
  return path === undefined ? undefined : await openModelSource(path, { configs: folder.configs });
}

async function checkAgainstFixtures(
  rt: Runtime,
  tensors: Map<string, LoadedTensor>,
  config: CLIPTextConfig,
  run: string,
): Promise<void> {
  const ref = await references(run);
  const D = config.hidden_size, L = 77, n = config.num_hidden_layers;
  for (const dtype of testDTypes(rt)) {
    const model = ClipTextModel.load(rt, { tensors, config, dtype });
    assert.deepEqual(model.unused, []);
    const tol = TOL[dtype];
    const out = model.forward(ref.ids, { outputHiddenStates: true });
    assert.deepEqual(out.lastHiddenState.shape, [2, L, D]);
    assert.deepEqual(out.pooled.shape, [2, D]);
    assert.equal(out.hiddenStates!.length, n + 1);
    const hidden = await Promise.all(out.hiddenStates!.map((t) => t.read()));
    const last = await out.lastHiddenState.read();
    const pooled = await out.pooled.read();

    const checks: [string, Float32Array, Float32Array][] = [];
    for (const [b, which] of [[0, "uncond"], [1, "cond"]] as const) {
      for (let i = 0; i <= n; i++) {
        const want = rows(ref.hidden[b].data, i * L, L, D);
        checks.push([`${dtype} hidden_states[${i}] ${which}`, rows(hidden[i], b * L, L, D), want]);
      }
      checks.push([`${dtype} text_embeds ${which}`, rows(last, b * L, L, D), ref.embeds[b].data]);
    }
    checks.push([`${dtype} pooled cond`, rows(pooled, 1, 1, D), ref.pooledCond.data]);
    const lines = checks.map(([label, got, want]) => report(label, got, want)).join("\n");
    for (const [label, got, want] of checks) {
      try {
        assertCloseToScale(got, want, tol, label);
      } catch (e) {
        throw new Error(`${(e as Error).message}\nper stage:\n${lines}`);
      }
    }

    // clip skip 2 = final_layer_norm(hidden_states[-2]), on the fixture's penultimate state
    const skip = model.forward(ref.ids, { clipSkip: 2 });
    assert.equal(skip.hiddenStates, undefined);
    const got = await skip.lastHiddenState.read();
    const w = hostValues(tensors.get("text_model.final_layer_norm.weight")!);
    const bias = hostValues(tensors.get("text_model.final_layer_norm.bias")!);
    for (const [b, which] of [[0, "uncond"], [1, "cond"]] as const) {
      const penultimate = rows(ref.hidden[b].data, (n - 1) * L, L, D);
      const want = layerNormRef(penultimate, w, bias, { eps: config.layer_norm_eps });
      assertCloseToScale(rows(got, b * L, L, D), want, tol, `${dtype} clip skip 2 ${which}`);
    }
    // the pooled output stays the last layer's
    assertCloseToScale(rows(await skip.pooled.read(), 1, 1, D), ref.pooledCond.data, tol, "pooled");

    for (const t of [...out.hiddenStates!, out.lastHiddenState, out.pooled]) t.dispose();
    skip.lastHiddenState.dispose();
    skip.pooled.dispose();
    model.dispose();
  }
}

for (const model of MODELS) {
  for (const layout of ["folder", "single_file"]) {
    Deno.test({
      name:
        `ClipTextModel: ${model} (${layout}) matches transformers' hidden states, embeddings, ` +
        `pooled output and clip skip`,
      ...GPU_TEST,
      fn: async () => {
        const src = await openSource(model, layout);
        if (src === undefined) return;
        try {
          const rt = await testRuntime(KERNELS);
          const tensors = await readComponent(src, "text_encoder");
          await checkAgainstFixtures(rt, tensors, src.configs.text_encoder, RUNS[model]);
        } finally {
          closeModelSource(src);
        }
      },
    });
  }
}

async function tinyClip(): Promise<{ tensors: Map<string, LoadedTensor>; config: CLIPTextConfig }> {
  const src = await openModelSource(modelDir("tiny-sd15"));
  return { tensors: await readComponent(src, "text_encoder"), config: src.configs.text_encoder };
}

Deno.test({
  name: "ClipTextModel: strict import names a missing key, a wrong shape, and unused keys",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const { tensors, config } = await tinyClip();
    const missing = "text_model.encoder.layers.1.mlp.fc2.bias";
    const reshaped = "text_model.encoder.layers.0.self_attn.k_proj.weight";
    const broken = new Map(tensors);
    broken.delete(missing);
    const k = broken.get(reshaped)!;
    broken.set(reshaped, { ...k, shape: [k.shape[1], k.shape[0] / 2, 2] });
    assert.throws(
      () => ClipTextModel.load(rt, { tensors: broken, config, dtype: "f32" }),
      (e: unknown) => {
        assert.ok(e instanceof StrictImportError);
        assert.deepEqual(e.missing, [missing]);
        assert.deepEqual(e.mismatched.map((m) => m.key), [reshaped]);
        assert.match(e.message, new RegExp(`missing: ${missing.replaceAll(".", "\\.")}`));
        assert.match(
          e.message,
          /shape mismatch: .*k_proj\.weight: expected \[32,32\], found \[32,16,2\]/,
        );
        return true;
      },
    );
    const tooFewLayers = { ...config, num_hidden_layers: 1 };
    const extra = new Map(tensors);
    extra.set("text_model.embeddings.position_ids", {
      shape: [1, 77],
      dtype: "I64",
      data: new Uint8Array(616),
    });
    const model = ClipTextModel.load(rt, { tensors: extra, config: tooFewLayers, dtype: "f32" });
    assert.ok(model.unused.includes("text_model.embeddings.position_ids"));
    assert.ok(model.unused.includes("text_model.encoder.layers.1.mlp.fc1.weight"));
    assert.ok(!model.unused.some((key) => key.includes("layers.0.")));
    model.dispose();
  },
});

Deno.test({
  name: "ClipTextModel: pools at the first eos, or at the largest id with the legacy eos id 2",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const { tensors, config } = await tinyClip();
    const L = 77, D = config.hidden_size;
    // no 927 (eos) in sequence 0: the legacy rule picks its first 926, the eos rule position 0;
    // sequence 1 has its largest id (927) at 9, after a first eos-free stretch
    const ids = new Int32Array(2 * L).fill(5);
    ids.set([3, 7, 926, 4, 926], 0);
    ids.set([926, 8, 9, 10, 11, 12, 13, 14, 15, 927, 927], L);
    const cases: [number, number[]][] = [[927, [0, 9]], [2, [2, 9]]];
    for (const [eos, positions] of cases) {
      const model = ClipTextModel.load(rt, {
        tensors,
        config: { ...config, eos_token_id: eos },
        dtype: "f32",
      });
      const out = model.forward(ids);
      const last = await out.lastHiddenState.read();
      const pooled = await out.pooled.read();
      positions.forEach((p, b) => {
        assert.deepEqual(rows(pooled, b, 1, D), rows(last, b * L + p, 1, D), `eos ${eos} seq ${b}`);
      });
      out.lastHiddenState.dispose();
      out.pooled.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "ClipTextModel: rejects bad ids, clip skip and activation with a clear error",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const { tensors, config } = await tinyClip();
    assert.throws(
      () =>
        ClipTextModel.load(rt, {
          tensors,
          config: { ...config, hidden_act: "swish" },
          dtype: "f32",
        }),
      /hidden_act "swish" is not supported: use "quick_gelu" \(SD 1\.x\) or "gelu" \(SD 2\.x\)/,
    );
    assert.throws(
      () =>
        ClipTextModel.load(rt, {
          tensors,
          config: { ...config, num_attention_heads: 5 },
          dtype: "f32",
        }),
      /hidden_size 32 is not divisible by num_attention_heads 5/,
    );
    const model = ClipTextModel.load(rt, { tensors, config, dtype: "f32" });
    const ids = new Int32Array(77);
    assert.throws(
      () => model.forward(ids.subarray(0, 76)),
      /takes 77 token ids per sequence, got 76/,
    );
    assert.throws(() => model.forward([]), /got 0/);
    const bad = ids.slice();
    bad[40] = 928;
    assert.throws(
      () => model.forward(bad),
      /token id 928 at position 40 is outside the vocabulary \[0, 928\)/,
    );
    assert.throws(
      () => model.forward(ids, { clipSkip: 0 }),
      /clipSkip 0 is out of range: use an integer from 1 \(last layer\) to 2/,
    );
    assert.throws(() => model.forward(ids, { clipSkip: 3 }), /clipSkip 3 is out of range/);
    assert.throws(() => model.forward(ids, { clipSkip: 1.5 }), /clipSkip 1\.5 is out of range/);
    model.dispose();
  },
});
