import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { groupNorm, type GroupNormVariant, layerNorm } from "../../src/ops/norm.ts";
import { concatChannelsRef, transposeRef } from "../../src/reference/layout.ts";
import { groupNormRef, layerNormRef } from "../../src/reference/norm.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

const TOL = { f32: { atol: 2e-5, rtol: 1e-5 }, f16: { atol: 1e-2, rtol: 1e-2 } };

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

interface GnCase {
  shape: number[];
  groups: number;
  silu?: boolean;
  eps?: number;
  variant?: GroupNormVariant;
  /** Offset added to the inputs (a mean far from zero stresses the variance). */
  offset?: number;
}

async function checkGroupNorm(rt: Runtime, dtype: DType, c: GnCase, seed: number): Promise<void> {
  const n = c.shape.reduce((a, b) => a * b, 1);
  const channels = c.shape[1];
  const host = asDType(randomArray(n, seed, -2, 2).map((v) => v + (c.offset ?? 0)), dtype);
  const w = asDType(randomArray(channels, seed + 1, 0.5, 1.5), dtype);
  const b = asDType(randomArray(channels, seed + 2, -0.5, 0.5), dtype);
  const x = rt.upload(host, c.shape, { dtype });
  const tw = rt.upload(w, [channels], { dtype });
  const tb = rt.upload(b, [channels], { dtype });
  const eps = c.eps ?? 1e-5;
  const y = groupNorm(x, tw, tb, { groups: c.groups, eps, silu: c.silu, variant: c.variant });
  assert.deepEqual(y.shape, c.shape);
  const got = await y.read();
  const ref = groupNormRef(host, w, b, {
    batch: c.shape[0],
    channels,
    groups: c.groups,
    eps,
    silu: c.silu,
  });
  assertClose(got, ref, {
    ...TOL[dtype],
    label: `groupNorm ${dtype} [${c.shape}] g=${c.groups} silu=${!!c.silu} ${c.variant ?? "auto"}`,
  });
  for (const t of [x, tw, tb, y]) t.dispose();
}

Deno.test({
  name: "groupNorm: 32 groups over C ∈ {32, 64, 96, 320} and odd spatial sizes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    let seed = 1;
    for (const dtype of testDTypes(rt)) {
      const cases: [number, number[]][] = [[32, [1, 1]], [64, [1, 7]], [96, [7, 11]], [320, [257]]];
      for (const [channels, hw] of cases) {
        for (const silu of [false, true]) {
          const shape = [2, channels, ...hw];
          await checkGroupNorm(rt, dtype, { shape, groups: 32, silu, eps: 1e-6 }, seed++);
        }
      }
    }
  },
});

Deno.test({
  name: "groupNorm fused with a channel concat and a token-layout store, both variants",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    let seed = 300;
    // [B, Cx, H, W] + [B, Cs, H, W]; groups that straddle x and skip; vec4 and scalar spatial
    const cases: { x: number[]; cs: number; groups: number; silu: boolean }[] = [
      { x: [2, 3, 5, 3], cs: 5, groups: 4, silu: true },
      { x: [1, 6, 4, 4], cs: 2, groups: 2, silu: false },
      { x: [2, 40, 3, 3], cs: 20, groups: 6, silu: true },
      { x: [1, 8, 64, 65], cs: 8, groups: 4, silu: false }, // groups above the one-workgroup size
    ];
    for (const dtype of testDTypes(rt)) {
      for (const c of cases) {
        const [b, cx, h, w] = c.x;
        const s = h * w;
        const ch = cx + c.cs;
        const xh = asDType(randomArray(b * cx * s, seed++, -2, 2), dtype);
        const sh = asDType(randomArray(b * c.cs * s, seed++, -1, 3), dtype);
        const wh = asDType(randomArray(ch, seed++, 0.5, 1.5), dtype);
        const bh = asDType(randomArray(ch, seed++, -0.5, 0.5), dtype);
        const cat = concatChannelsRef(xh, sh, b);
        const ref = groupNormRef(cat, wh, bh, {
          batch: b,
          channels: ch,
          groups: c.groups,
          eps: 1e-5,
          silu: c.silu,
        });
        using x = rt.upload(xh, c.x, { dtype });
        using skip = rt.upload(sh, [b, c.cs, h, w], { dtype });
        using tw = rt.upload(wh, [ch], { dtype });
        using tb = rt.upload(bh, [ch], { dtype });
        for (const variant of ["fused", "split"] as const) {
          for (const tokens of [false, true]) {
            const opts = { groups: c.groups, silu: c.silu, variant, tokens };
            using y = groupNorm(x, tw, tb, { ...opts, skip: c.cs ? skip : undefined });
            assert.deepEqual(y.shape, tokens ? [b, s, ch] : [b, ch, h, w]);
            const want = tokens ? transposeRef(ref, { batch: b, rows: ch, cols: s }) : ref;
            assertClose(await y.read(), want, {
              ...TOL[dtype],
              label: `groupNorm cat ${dtype} [${c.x}]+${c.cs} g=${c.groups} ${variant}` +
                `${tokens ? " tokens" : ""}`,
            });
          }
        }
        // tokens without a skip
        const plain = groupNormRef(xh, wh.slice(0, cx), bh.slice(0, cx), {
          batch: b,
          channels: cx,
          groups: cx % c.groups === 0 ? c.groups : 1,
          eps: 1e-5,
        });
        using tw2 = rt.upload(wh.slice(0, cx), [cx], { dtype });
        using tb2 = rt.upload(bh.slice(0, cx), [cx], { dtype });
        const g = cx % c.groups === 0 ? c.groups : 1;
        using y2 = groupNorm(x, tw2, tb2, { groups: g, tokens: true });
        assertClose(await y2.read(), transposeRef(plain, { batch: b, rows: cx, cols: s }), {
          ...TOL[dtype],
          label: `groupNorm tokens ${dtype} [${c.x}] g=${g}`,
        });
      }
    }
    using x = rt.empty([2, 4, 3, 3]);
    using w8 = rt.empty([8]);
    assert.throws(
      () => groupNorm(x, w8, w8, { groups: 2, skip: rt.empty([2, 4, 3, 4]) }),
      /skip \[2,4,3,4\] .* cannot follow x/,
    );
  },
});

Deno.test({
  name: "groupNorm: groups 1 and 3, vec4 and scalar spatial paths, both variants",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    let seed = 100;
    for (const dtype of testDTypes(rt)) {
      const cases: GnCase[] = [
        { shape: [1, 3, 77], groups: 1 },
        { shape: [2, 9, 7, 11], groups: 3, silu: true },
        { shape: [3, 6, 4, 4], groups: 3 },
        { shape: [2, 6, 8, 8], groups: 1, silu: true },
        // several partials per group: 2·45·77 = 6930 and 2·45·64 = 5760 elements per group
        { shape: [2, 90, 7, 11], groups: 2, variant: "split", offset: 3 },
        { shape: [1, 90, 8, 8], groups: 2, variant: "split", silu: true },
        { shape: [2, 96, 257], groups: 32, variant: "split" },
        { shape: [2, 64, 16, 16], groups: 32, variant: "fused" },
      ];
      for (const c of cases) await checkGroupNorm(rt, dtype, c, seed++);
    }
  },
});

Deno.test({
  name: "groupNorm: a 300k-element group is split over many workgroups (f32 statistics)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    for (const dtype of testDTypes(rt)) {
      // 312,000 elements in one group (vec4 path) and 303,303 (scalar path), mean far from 0
      await checkGroupNorm(rt, dtype, { shape: [1, 4, 300, 260], groups: 1, offset: 3 }, 7);
      await checkGroupNorm(
        rt,
        dtype,
        { shape: [1, 3, 101, 1001], groups: 1, offset: -3, silu: true, eps: 1e-6 },
        8,
      );
    }
  },
});

Deno.test({
  name: "norm: results go into options.out when given",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    const host = randomArray(2 * 6 * 5, 3);
    const ones = new Float32Array(6).fill(1);
    const x = rt.upload(host, [2, 6, 5]);
    const w = rt.upload(ones, [6]);
    const b = rt.upload(new Float32Array(6), [6]);
    const out = rt.empty([2, 6, 5]);
    assert.equal(groupNorm(x, w, b, { groups: 3, out }), out);
    const gn = groupNormRef(host, ones, new Float32Array(6), {
      batch: 2,
      channels: 6,
      groups: 3,
      eps: 1e-5,
    });
    assertClose(await out.read(), gn, { ...TOL.f32, label: "groupNorm into out" });
    const rows = x.reshape([10, 6]);
    assert.equal(layerNorm(rows, w, b, { out }), out);
    const ln = layerNormRef(host, ones, new Float32Array(6), { eps: 1e-5 });
    assertClose(await out.read(), ln, { ...TOL.f32, label: "layerNorm into out" });
  },
});

Deno.test({
  name: "layerNorm: D ∈ {1, 7, 32, 77, 1280} over several leading shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    let seed = 200;
    for (const dtype of testDTypes(rt)) {
      for (const d of [1, 7, 32, 77, 1280]) {
        for (const lead of [[1], [2, 3], [77]]) {
          const shape = [...lead, d];
          const n = shape.reduce((a, b) => a * b, 1);
          const host = asDType(randomArray(n, seed++, -3, 3).map((v) => v + 1), dtype);
          const w = asDType(randomArray(d, seed++, 0.5, 1.5), dtype);
          const b = asDType(randomArray(d, seed++, -0.5, 0.5), dtype);
          const x = rt.upload(host, shape, { dtype });
          const tw = rt.upload(w, [d], { dtype });
          const tb = rt.upload(b, [d], { dtype });
          const y = layerNorm(x, tw, tb, { eps: 1e-5 });
          assert.deepEqual(y.shape, shape);
          assertClose(await y.read(), layerNormRef(host, w, b, { eps: 1e-5 }), {
            ...TOL[dtype],
            label: `layerNorm ${dtype} [${shape}]`,
          });
          for (const t of [x, tw, tb, y]) t.dispose();
        }
      }
    }
  },
});

Deno.test({
  name: "norm: clear errors on bad shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["norm"]);
    const w = rt.empty([64]);
    assert.throws(() => groupNorm(rt.empty([64, 8]), w, w), /\[B, C, H, W\] or \[B, C, L\]/);
    assert.throws(
      () => groupNorm(rt.empty([1, 64, 2, 2]), w, w, { groups: 3 }),
      /64 channels cannot be split into 3 groups/,
    );
    assert.throws(
      () => groupNorm(rt.empty([1, 32, 2, 2]), w, w),
      /weight has shape \[64\], needs \[32\]/,
    );
    const x = rt.empty([1, 64, 2, 2]);
    assert.throws(() => groupNorm(x, w, w, { out: x }), /out must be a separate/);
    assert.throws(
      () => layerNorm(rt.empty([2, 32]), w, w),
      /weight has shape \[64\], needs \[32\]/,
    );
    assert.throws(() => layerNorm(rt.empty([0, 64]), w, w), /non-empty/);
  },
});
