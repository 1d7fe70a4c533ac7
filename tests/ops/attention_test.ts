import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import {
  attention,
  attentionLoopIterations,
  attentionQkv,
  type AttentionVariant,
  SOFTWARE_LOOP_LIMIT,
  tiledWorkgroupBytes,
} from "../../src/ops/attention.ts";
import { attentionRef } from "../../src/reference/attention.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

const TOL = { f32: { atol: 1e-5, rtol: 1e-5 }, f16: { atol: 2e-3, rtol: 1e-2 } };
const VARIANTS: AttentionVariant[] = ["naive", "tiled"];

/** Rounds the inputs the way the GPU sees them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/** Random [B, L, C] token data in `dtype`'s precision and its upload. */
function tokens(rt: Runtime, shape: number[], seed: number, dtype: DType, range = 2) {
  const host = asDType(randomArray(shape[0] * shape[1] * shape[2], seed, -range, range), dtype);
  return { host, t: rt.upload(host, shape, { dtype }) };
}

Deno.test("reference attention: a hand-computed case, probabilities sum to one", () => {
  // B=1, Lq=2, Lk=2, one head, d=2, scale 1
  const { out, probs } = attentionRef(
    { q: [1, 0, 0, 0], k: [1, 0, 0, 1], v: [1, 2, 3, 4] },
    { batch: 1, heads: 1, lq: 2, lk: 2, headDim: 2, scale: 1 },
  );
  const p = Math.E / (1 + Math.E);
  assertClose(out, [p + 3 * (1 - p), 2 * p + 4 * (1 - p), 2, 3], { atol: 1e-15, rtol: 0 });
  assertClose(probs, [p, 1 - p, 0.5, 0.5], { atol: 1e-15, rtol: 0 });
  const causal = attentionRef(
    { q: [1, 0, 0, 0], k: [1, 0, 0, 1], v: [1, 2, 3, 4] },
    { batch: 1, heads: 1, lq: 2, lk: 2, headDim: 2, scale: 1, causal: true },
  );
  assertClose(causal.out, [1, 2, 2, 3], { atol: 1e-15, rtol: 0 });
});

// [B, heads, d, Lq, Lk]: odd lengths that are not multiples of any tile size
const CASES: [number, number, number, number, number][] = [
  [1, 1, 4, 1, 1],
  [2, 3, 8, 7, 77],
  [1, 2, 40, 77, 77],
  [2, 1, 64, 257, 7],
  [1, 3, 80, 7, 257],
  [2, 2, 8, 77, 1],
  [1, 1, 512, 7, 33],
  [1, 2, 160, 33, 40],
  [1, 2, 7, 9, 40], // a head dim no tile divides
  [1, 1, 64, 5, 1100], // Lk·d > 65535, llvmpipe's per-loop iteration limit
];

Deno.test({
  name: "attention: odd shapes, both variants and dtypes, causal and not, vs float64",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["attention"]);
    for (const dtype of testDTypes(rt)) {
      for (const [batch, heads, d, lq, lk] of CASES) {
        const q = tokens(rt, [batch, lq, heads * d], 1, dtype);
        const k = tokens(rt, [batch, lk, heads * d], 2, dtype);
        const v = tokens(rt, [batch, lk, heads * d], 3, dtype, 1);
        for (const causal of [false, true]) {
          const ref = attentionRef({ q: q.host, k: k.host, v: v.host }, {
            batch,
            heads,
            lq,
            lk,
            headDim: d,
            causal,
          });
          for (const variant of VARIANTS) {
            const got = await attention(q.t, { k: k.t, v: v.t, heads, causal, variant }).read();
            assertClose(got, ref.out, {
              ...TOL[dtype],
              label:
                `${variant} ${dtype} B=${batch} h=${heads} d=${d} Lq=${lq} Lk=${lk} causal=${causal}`,
            });
          }
        }
        q.t.dispose();
        k.t.dispose();
        v.t.dispose();
      }
    }
  },
});

Deno.test({
  name: "attention: L = 1024 crosses many query and key tiles",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["attention"]);
    const [batch, heads, d, l] = [1, 2, 8, 1024];
    for (const dtype of testDTypes(rt)) {
      const q = tokens(rt, [batch, l, heads * d], 4, dtype, 3);
      const k = tokens(rt, [batch, l, heads * d], 5, dtype, 3);
      const v = tokens(rt, [batch, l, heads * d], 6, dtype, 1);
      for (const causal of [false, true]) {
        const ref = attentionRef({ q: q.host, k: k.host, v: v.host }, {
          batch,
          heads,
          lq: l,
          lk: l,
          headDim: d,
          causal,
        });
        const got = await attention(q.t, { k: k.t, v: v.t, heads, causal }).read();
        assertClose(got, ref.out, {
          ...TOL[dtype],
          label: `tiled ${dtype} L=${l} causal=${causal}`,
        });
      }
    }
  },
});

Deno.test({
  name: "attention: fused qkv and kv layouts are read in place, custom scale, out option",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["attention"]);
    const [batch, heads, d, l] = [2, 2, 40, 77];
    const hd = heads * d;
    for (const dtype of testDTypes(rt)) {
      const qkv = tokens(rt, [batch, l, 3 * hd], 7, dtype);
      for (const variant of VARIANTS) {
        for (const causal of [false, true]) {
          const ref = attentionRef({ q: qkv.host, k: qkv.host, v: qkv.host }, {
            batch,
            heads,
            lq: l,
            lk: l,
            headDim: d,
            causal,
            strides: [3 * hd, 3 * hd, 3 * hd],
            offsets: [0, hd, 2 * hd],
          });
          const got = await attentionQkv(qkv.t, { heads, causal, variant }).read();
          assertClose(got, ref.out, {
            ...TOL[dtype],
            label: `qkv ${variant} ${dtype} causal=${causal}`,
          });
        }
      }
      // cross-attention: q sits at column 5 of wider rows, k and v share one [B, Lk, 2·hd] tensor
      const lq = 7, lk = 13, scale = 0.3;
      const q = tokens(rt, [batch, lq, hd + 9], 8, dtype);
      const kv = tokens(rt, [batch, lk, 2 * hd], 9, dtype);
      const ref = attentionRef({ q: q.host, k: kv.host, v: kv.host }, {
        batch,
        heads,
        lq,
        lk,
        headDim: d,
        scale,
        strides: [hd + 9, 2 * hd, 2 * hd],
        offsets: [5, 0, hd],
      });
      const out = rt.empty([batch, lq, hd], dtype);
      for (const variant of VARIANTS) {
        const ret = attention(q.t, {
          k: kv.t,
          v: kv.t,
          heads,
          headDim: d,
          qOffset: 5,
          vOffset: hd,
          scale,
          out,
          variant,
        });
        assert.equal(ret, out);
        assertClose(await out.read(), ref.out, { ...TOL[dtype], label: `kv ${variant} ${dtype}` });
      }
    }
  },
});

Deno.test({
  name: "attention: the probs hook writes head-averaged softmax probabilities",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["attention"]);
    for (const dtype of testDTypes(rt)) {
      for (const [batch, heads, d, lq, lk] of [[2, 3, 8, 33, 77], [1, 1, 64, 257, 7]]) {
        const q = tokens(rt, [batch, lq, heads * d], 10, dtype, 3);
        const k = tokens(rt, [batch, lk, heads * d], 11, dtype, 3);
        const v = tokens(rt, [batch, lk, heads * d], 12, dtype, 1);
        for (const causal of [false, true]) {
          const ref = attentionRef({ q: q.host, k: k.host, v: v.host }, {
            batch,
            heads,
            lq,
            lk,
            headDim: d,
            causal,
          });
          const probs = rt.empty([batch, lq, lk], "f32");
          const out = attention(q.t, { k: k.t, v: v.t, heads, causal, probs });
          const label = `${dtype} B=${batch} h=${heads} Lq=${lq} Lk=${lk} causal=${causal}`;
          assertClose(await probs.read(), ref.probs, {
            atol: 1e-6,
            rtol: 1e-5,
            label: `probs ${label}`,
          });
          assertClose(await out.read(), ref.out, { ...TOL[dtype], label: `out ${label}` });
        }
      }
    }
  },
});

Deno.test({
  name: "attention: bad shapes, dtypes and options give clear errors",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["attention"]);
    const q = rt.empty([2, 7, 16]), k = rt.empty([2, 5, 16]), v = rt.empty([2, 5, 16]);
    assert.throws(() => attention(rt.empty([7, 16]), { k: k, v: v, heads: 2 }), /token layout/);
    assert.throws(
      () => attention(q, { k: rt.empty([1, 5, 16]), v: v, heads: 2 }),
      /batch sizes differ/,
    );
    assert.throws(() => attention(q, { k: k, v: rt.empty([2, 6, 16]), heads: 2 }), /same length/);
    assert.throws(
      () => attention(q, { k: k, v: v, heads: 3 }),
      /not a multiple of heads = 3; pass headDim/,
    );
    assert.throws(() => attention(q, { k: k, v: v, heads: 0 }), /heads must be an integer ≥ 1/);
    assert.throws(
      () => attention(q, { k: k, v: v, heads: 2, kOffset: 4 }),
      /kOffset 4 \+ heads 2 × headDim 8 = 20/,
    );
    assert.throws(
      () => attention(q, { k: rt.empty([2, 5, 16], "f16"), v: v, heads: 2 }),
      /dtypes differ \(f32, f16, f32\)/,
    );
    assert.throws(
      () => attention(q, { k: k, v: v, heads: 2, out: rt.empty([2, 7, 8]) }),
      /out is \[2,7,8\] f32, needs \[2,7,16\] f32/,
    );
    assert.throws(() => attention(q, { k: k, v: v, heads: 2, out: q }), /must not share storage/);
    assert.throws(
      () => attention(q, { k: k, v: v, heads: 2, probs: rt.empty([2, 7, 5], "f16") }),
      /probs is \[2,7,5\] f16, needs \[2, 7, 5\] f32/,
    );
    assert.throws(() => attentionQkv(q, { heads: 2 }), /needs \[B, L, 3·heads·d\]/);
    const wide = rt.empty([1, 1, 2048]);
    assert.throws(
      () => attention(wide, { k: wide, v: wide, heads: 1, variant: "tiled" }),
      /does not fit head dim 2048 .*use variant "naive"/,
    );
    assert.ok(tiledWorkgroupBytes(512) <= 32768 && tiledWorkgroupBytes(160) <= 32768);
  },
});

Deno.test({
  name: "attention: shader loops stay within the software adapter's loop limit, else a clear error",
  ...GPU_TEST,
  fn: async () => {
    // the SD shapes the tiled kernel must run on llvmpipe too (self-attention at 64², VAE at 512²)
    assert.equal(attentionLoopIterations("tiled", { d: 40, lk: 4096, heads: 8 }), 5120);
    assert.ok(
      attentionLoopIterations("tiled", { d: 512, lk: 4096, heads: 1 }) <= SOFTWARE_LOOP_LIMIT,
    );
    assert.ok(attentionLoopIterations("probs", { d: 40, lk: 77, heads: 8 }) <= SOFTWARE_LOOP_LIMIT);
    assert.equal(attentionLoopIterations("naive", { d: 512, lk: 3000, heads: 1 }), 3000 * 32);
    const rt = await testRuntime(["attention"]);
    const q = rt.empty([1, 1, 512]), k = rt.empty([1, 3000, 512]);
    if (rt.gpu.isFallback) {
      assert.throws(
        () => attention(q, { k: k, v: k, heads: 1, variant: "naive" }),
        /would run a shader loop 96000 times, .* stops loops after 65535 iterations; use variant "tiled"/,
      );
    } else {
      assert.equal(
        attention(q, { k: k, v: k, heads: 1, variant: "naive" }).shape.join(),
        "1,1,512",
      );
    }
  },
});
