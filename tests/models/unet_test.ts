import assert from "node:assert/strict";
import { readNpy } from "../../src/io/npy.ts";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { sizeClass } from "../../src/gpu/pool.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { timestepEmbedding } from "../../src/models/embeddings.ts";
import { UNET_FUSIONS } from "../../src/models/transformer_2d.ts";
import { UNet2DConditionModel } from "../../src/models/unet.ts";
import { StrictImportError } from "../../src/weights/strict.ts";
import {
  closeModelSource,
  type ModelSource,
  openModelSource,
  readComponent,
} from "../../src/weights/source.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import {
  assertCloseToScale,
  errorStats,
  fixture,
  randomArray,
  SHARED,
  sharedAvailable,
} from "../util.ts";
import { modelDir, singleFile } from "../weights/fixtures.ts";

const KERNELS = ["gemm", "conv2d", "norm", "attention", "layout", "geglu"];
const RUNS = { "tiny-sd15": "tiny-sd15__pndm", "tiny-sd2": "tiny-sd2__ddim_v" } as const;
type Model = keyof typeof RUNS;
const BLOCKS = [
  "time_proj",
  "time_embedding",
  "conv_in",
  ...[0, 1, 2, 3].map((i) => `down_blocks.${i}`),
  "mid_block",
  ...[0, 1, 2, 3].map((i) => `up_blocks.${i}`),
  "conv_norm_out",
  "conv_act",
  "conv_out",
];
/** Bounds on the max error as a fraction of the reference's max |value|, and on the NMSE. */
const TOL: Record<DType, { scale: number; nmse: number }> = {
  f32: { scale: 1e-4, nmse: 1e-8 },
  f16: { scale: 1e-2, nmse: 1e-4 },
};

type Npy = { shape: number[]; data: Float32Array };

async function openSource(model: Model, layout: "folder" | "single"): Promise<ModelSource | null> {
  const folder = await openModelSource(modelDir(model));
  if (layout === "folder") return folder;
  const path = singleFile(model);
  return path === undefined ? null : await openModelSource(path, { configs: folder.configs });
}

async function loadUnet(rt: Runtime, source: ModelSource, dtype: DType) {
  const tensors = await readComponent(source, "unet");
  return UNet2DConditionModel.load(rt, { tensors, config: source.configs.unet, dtype });
}

/** `n` copies of `a` along a new leading batch axis. */
function repeat(a: Npy, n: number): Float32Array {
  const out = new Float32Array(a.data.length * n);
  for (let i = 0; i < n; i++) out.set(a.data, i * a.data.length);
  return out;
}

function upload(rt: Runtime, data: Float32Array, shape: number[], dtype: DType): Tensor {
  return rt.upload(data, shape, { dtype });
}

/** One row of the per-block error table. */
function row(name: string, got: ArrayLike<number>, ref: ArrayLike<number>, dtype: DType) {
  const s = errorStats(got, ref);
  const rel = s.maxAbs / Math.max(s.scale, 1e-12);
  const ok = rel <= TOL[dtype].scale && s.nmse <= TOL[dtype].nmse;
  const line = `  ${ok ? "  " : "✗ "}${name.padEnd(15)} max|Δ| ${s.maxAbs.toExponential(2)} ` +
    `scale ${s.scale.toExponential(2)} (${rel.toExponential(2)}) nmse ${s.nmse.toExponential(2)}`;
  return { ok, line };
}

/** Checks every tensor, then fails with the whole table when any is out of tolerance. */
function assertTable(title: string, rows: { ok: boolean; line: string }[]): void {
  if (rows.every((r) => r.ok)) return;
  throw new Error(
    `${title}: some tensors are out of tolerance\n${rows.map((r) => r.line).join("\n")}`,
  );
}

async function probe(rt: Runtime, unet: UNet2DConditionModel, model: Model, dtype: DType) {
  const run = RUNS[model];
  const sample = await fixture(`dumps/${run}/unet_probe_sample.npy`);
  const steps = Array.from((await fixture(`dumps/${run}/unet_probe_timesteps.npy`)).data);
  const text = await fixture(`dumps/${run}/text_embeds_cond.npy`);
  const want = await fixture(`dumps/${run}/unet_probe_out.npy`);
  const n = steps.length;
  const [, c, h, w] = sample.shape;
  const x = upload(rt, repeat(sample, n), [n, c, h, w], dtype);
  const ctx = upload(rt, repeat(text, n), [n, ...text.shape.slice(1)], dtype);
  const kept = new Map<string, Tensor>();
  const out = unet.forward(x, {
    timestep: steps,
    encoderHiddenStates: ctx,
    capture: (name, t) => {
      const copy = rt.empty(t.shape, t.dtype);
      rt.copy(t, copy);
      kept.set(name, copy);
    },
  });
  assert.deepEqual(out.shape, [n, c, h, w]);
  const got = await out.read();
  const rows = [row("unet_probe_out", got, want.data, dtype)];
  const internals = `fixtures/dumps/${run}/internals/`;
  if (sharedAvailable(internals)) {
    assert.deepEqual([...kept.keys()], BLOCKS);
    for (const name of BLOCKS) {
      const ref = await readNpy(new URL(`${internals}unet_t999.${name}.npy`, SHARED));
      const t = kept.get(name)!;
      assert.deepEqual(t.shape, [n, ...ref.shape.slice(1)], name);
      const first = (await t.read()).subarray(0, ref.data.length);
      rows.push(row(name, first, ref.data as Float32Array, dtype));
    }
  }
  for (const t of [x, ctx, out, ...kept.values()]) t.dispose();
  assertTable(`${model} ${dtype} probes (t = ${steps})`, rows);
}

async function step0(rt: Runtime, unet: UNet2DConditionModel, model: Model, dtype: DType) {
  const run = RUNS[model];
  const sample = await fixture(`dumps/${run}/unet_step0_in.npy`);
  const want = await fixture(`dumps/${run}/unet_step0_out.npy`);
  const t0 = (await fixture(`dumps/${run}/sched_timesteps.npy`)).data[0];
  const uncond = await fixture(`dumps/${run}/text_embeds_uncond.npy`);
  const cond = await fixture(`dumps/${run}/text_embeds_cond.npy`);
  const text = new Float32Array([...uncond.data, ...cond.data]);
  const x = upload(rt, sample.data, sample.shape, dtype);
  const ctx = upload(rt, text, [2, ...cond.shape.slice(1)], dtype);
  const before = rt.pool.stats().inUseBytes;
  const out = unet.forward(x, { timestep: t0, encoderHiddenStates: ctx });
  const kept = rt.pool.stats().inUseBytes - before;
  assert.equal(kept, sizeClass(out.byteSize), "forward must free every intermediate");
  const got = await out.read();
  for (const t of [x, ctx, out]) t.dispose();
  assertTable(`${model} ${dtype} step 0 (t = ${t0})`, [
    row("unet_step0_out", got, want.data, dtype),
  ]);
}

for (const model of Object.keys(RUNS) as Model[]) {
  for (const layout of ["folder", "single"] as const) {
    Deno.test({
      name: `unet: ${model} (${layout}) matches diffusers per block, on probes and step 0`,
      ...GPU_TEST,
      fn: async (t) => {
        const source = await openSource(model, layout);
        if (!source) return;
        const rt = await testRuntime(KERNELS);
        try {
          for (const dtype of testDTypes(rt)) {
            await t.step(dtype, async () => {
              const unet = await loadUnet(rt, source, dtype);
              try {
                assert.deepEqual(unet.unused, []);
                await probe(rt, unet, model, dtype);
                await step0(rt, unet, model, dtype);
              } finally {
                unet.dispose();
              }
            });
          }
        } finally {
          closeModelSource(source);
        }
      },
    });
  }
}

Deno.test({
  name: "unet: a 154-token context (two A1111 chunks) attends like its single chunk",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const source = (await openSource("tiny-sd2", "folder"))!;
    const unet = await loadUnet(rt, source, "f32");
    const run = RUNS["tiny-sd2"];
    const sample = await fixture(`dumps/${run}/unet_probe_sample.npy`);
    const cond = await fixture(`dumps/${run}/text_embeds_cond.npy`);
    const want = await fixture(`dumps/${run}/unet_probe_out.npy`);
    const x = upload(rt, sample.data, sample.shape, "f32");
    // Keys and values repeated twice leave every softmax-weighted average unchanged.
    const ctx = upload(rt, repeat(cond, 2), [1, 154, cond.shape[2]], "f32");
    const out = unet.forward(x, { timestep: 999, encoderHiddenStates: ctx });
    const got = await out.read();
    for (const t of [x, ctx, out]) t.dispose();
    unet.dispose();
    assertCloseToScale(got, want.data.subarray(0, got.length), 1e-4, "unet_probe_out[0], Lctx 154");
  },
});

Deno.test({
  name: "unet: strict import names the missing key and the wrong shape",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const source = (await openSource("tiny-sd15", "folder"))!;
    const tensors = await readComponent(source, "unet");
    const missing = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    tensors.delete(missing);
    const bias = tensors.get("conv_in.bias")!;
    tensors.set("conv_in.bias", { ...bias, shape: [16], data: bias.data.subarray(0, 32) });
    tensors.set("extra.weight", bias);
    assert.throws(
      () => UNet2DConditionModel.load(rt, { tensors, config: source.configs.unet, dtype: "f32" }),
      (e: unknown) => {
        assert.ok(e instanceof StrictImportError);
        assert.deepEqual(e.missing, [missing]);
        assert.deepEqual(e.mismatched, [{ key: "conv_in.bias", expected: [32], found: [16] }]);
        assert.deepEqual(e.unused, ["extra.weight"]);
        assert.match(e.message, /missing: mid_block\.attentions\.0\.transformer_blocks\.0\.attn2/);
        assert.match(e.message, /shape mismatch: conv_in\.bias: expected \[32\], found \[16\]/);
        return true;
      },
    );
    const bad = { ...source.configs.unet, attention_head_dim: [2, 2, 4] };
    const fresh = await readComponent(source, "unet");
    assert.throws(
      () => UNet2DConditionModel.load(rt, { tensors: fresh, config: bad }),
      /attention_head_dim = \[2,2,4\] must be a positive integer or a list of 4/,
    );
  },
});

Deno.test({
  name: "unet: bad inputs get clear errors (channels, timesteps, context, dtype)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const source = (await openSource("tiny-sd15", "folder"))!;
    const unet = await loadUnet(rt, source, "f32");
    const ctx = rt.empty([1, 77, 32], "f32");
    // any latent size runs (odd sides are cut back on the up path); the channels must match
    const three = rt.empty([1, 3, 12, 16], "f32");
    assert.throws(
      () => unet.forward(three, { timestep: 999, encoderHiddenStates: ctx }),
      /unet sample must be \[B, 4, h, w\], got \[1,3,12,16\]/,
    );
    const x = rt.empty([1, 4, 16, 16], "f32");
    assert.throws(
      () => unet.forward(x, { timestep: [999, 1], encoderHiddenStates: ctx }),
      /got 2 timesteps for a batch of 1/,
    );
    const wide = rt.empty([1, 77, 64], "f32");
    assert.throws(
      () => unet.forward(x, { timestep: 999, encoderHiddenStates: wide }),
      /encoderHiddenStates must be \[1, L, 32\]/,
    );
    if (rt.gpu.hasF16) {
      const half = rt.empty([1, 4, 16, 16], "f16");
      assert.throws(
        () => unet.forward(half, { timestep: 999, encoderHiddenStates: ctx }),
        /sample is f16 but the model runs in f32/,
      );
      half.dispose();
    }
    for (const t of [ctx, three, x, wide]) t.dispose();
    unet.dispose();
  },
});

Deno.test("unet: the timestep embedding matches diffusers' time_proj to float32 rounding", async () => {
  const emb = timestepEmbedding([0, 3.5], 5);
  assert.deepEqual(Array.from(emb.subarray(0, 5)), [0, 0, 1, 1, 0]);
  const f = Math.fround;
  const freq1 = f(Math.exp(f(f(-Math.log(10000)) / 1)));
  assert.equal(emb[6], f(Math.sin(f(3.5 * freq1))));
  assert.equal(emb[9], 0);
  const rel = "fixtures/dumps/tiny-sd15__pndm/internals/unet_t999.time_proj.npy";
  if (!sharedAvailable(rel)) return;
  const ref = await readNpy(new URL(rel, SHARED));
  const got = timestepEmbedding([999], 32, { flipSinToCos: true, freqShift: 0 });
  // PyTorch's vectorised exp/sin/cos (SLEEF) are within 1 ulp, not correctly rounded: a 1-ulp
  // different frequency moves an argument near 18 by 2e-6.
  const s = errorStats(got, ref.data as Float32Array);
  assert.ok(s.maxAbs <= 1e-5, `time_proj max |Δ| ${s.maxAbs}`);
});

Deno.test({
  name: "unet: the attentionProbs hook gives each cross-attention layer's probabilities",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const dir = modelDir("tiny-sd15")!;
    const src = await openModelSource(dir);
    const unet = UNet2DConditionModel.load(rt, {
      tensors: await readComponent(src, "unet"),
      config: src.configs.unet,
      dtype: "f32",
    });
    const ctx = rt.upload(randomArray(2 * 77 * 32, 5), [2, 77, 32]);
    const sample = rt.upload(randomArray(2 * 4 * 16 * 16, 6), [2, 4, 16, 16]);
    const seen: { name: string; probs: Tensor }[] = [];
    const out = unet.forward(sample, {
      timestep: 500,
      encoderHiddenStates: ctx,
      attentionProbs: (name, probs) => seen.push({ name, probs }),
    });
    await rt.flush();
    // tiny-sd15: 3 cross-attn down blocks × 2 layers, 1 mid, 3 up blocks × 3 layers
    assert.equal(seen.length, 3 * 2 + 1 + 3 * 3);
    assert.equal(seen[0].name, "down_blocks.0.attentions.0.transformer_blocks.0.attn2");
    assert.ok(seen.some((s) => s.name === "mid_block.attentions.0.transformer_blocks.0.attn2"));
    for (const { name, probs } of seen) {
      assert.equal(probs.shape[0], 2);
      assert.equal(probs.shape[2], 77);
      const p = await probs.read();
      for (let row = 0; row < p.length / 77; row += 7) {
        let sum = 0;
        for (let j = 0; j < 77; j++) sum += p[row * 77 + j];
        assert.ok(Math.abs(sum - 1) < 1e-4, `${name} row ${row} sums to ${sum}`);
      }
      probs.dispose();
    }
    for (const t of [out, ctx, sample]) t.dispose();
    unet.dispose();
    closeModelSource(src);
  },
});

Deno.test({
  name: "unet: every dispatch fusion computes what the plain graph does, with fewer dispatches",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const source = await openSource("tiny-sd15", "folder");
    try {
      for (const dtype of testDTypes(rt)) {
        const unet = await loadUnet(rt, source!, dtype);
        try {
          const [b, c, h, w] = [2, 4, 16, 16];
          using x = rt.upload(randomArray(b * c * h * w, 3), [b, c, h, w], { dtype });
          using ctx = rt.upload(randomArray(b * 77 * 32, 4), [b, 77, 32], { dtype });
          const run = async (on: boolean) => {
            for (const f of UNET_FUSIONS) unet.fusions[f] = on;
            const before = rt.dispatchCount;
            using y = unet.forward(x, { timestep: [981, 1], encoderHiddenStates: ctx });
            const dispatches = rt.dispatchCount - before;
            return { values: await y.read(), dispatches };
          };
          const plain = await run(false);
          const fused = await run(true);
          assert.ok(
            fused.dispatches < plain.dispatches,
            `${fused.dispatches} dispatches fused, ${plain.dispatches} plain`,
          );
          const tol = dtype === "f32" ? 1e-5 : 5e-3;
          assertCloseToScale(fused.values, plain.values, tol, `fused vs plain ${dtype}`);
        } finally {
          unet.dispose();
        }
      }
    } finally {
      closeModelSource(source!);
    }
  },
});
