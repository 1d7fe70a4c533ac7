import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import {
  conv2d,
  type Conv2dOptions,
  conv2dShape,
  type ConvActivation,
  type ConvTile,
  planConv2d,
} from "../../src/ops/conv2d.ts";
import { conv2dRef, type Conv2dRefOptions } from "../../src/reference/conv2d.ts";
import { groupNormRef } from "../../src/reference/norm.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

/** One test case: input [B, Cx, H, W], Cout, kernel size, and the fused extras. */
interface Case {
  x: number[];
  cout: number;
  k: number;
  stride?: number;
  skipC?: number;
  bias?: boolean;
  upsample?: boolean | [number, number];
  residual?: boolean;
  activation?: ConvActivation;
  softClamp?: number;
  /** A per-sample channel shift read from [B, width] at `column` (+ its bias). */
  temb?: { width: number; column: number; bias: boolean };
}

const CASES: Case[] = [
  { x: [1, 1, 1, 1], cout: 1, k: 3, bias: true },
  { x: [2, 3, 9, 7], cout: 7, k: 3, activation: "gelu" },
  { x: [1, 33, 17, 9], cout: 65, k: 3, bias: true, activation: "silu" },
  { x: [2, 7, 9, 9], cout: 33, k: 3, stride: 2, bias: true },
  { x: [1, 65, 17, 17], cout: 4, k: 3, stride: 2, activation: "gelu_tanh" },
  { x: [2, 65, 7, 3], cout: 33, k: 1, bias: true },
  { x: [1, 4, 7, 9], cout: 7, k: 3, skipC: 33, bias: true, residual: true },
  { x: [2, 33, 3, 7], cout: 65, k: 1, skipC: 65, activation: "relu" },
  { x: [1, 7, 3, 7], cout: 33, k: 3, upsample: true, bias: true },
  { x: [2, 4, 3, 1], cout: 65, k: 3, upsample: true, skipC: 3, residual: true, activation: "relu" },
  { x: [1, 4, 7, 9], cout: 3, k: 3, softClamp: 3, bias: true, activation: "relu" },
  { x: [1, 65, 9, 7], cout: 7, k: 3, skipC: 65, bias: true, activation: "silu", residual: true },
  { x: [2, 3, 17, 17], cout: 1, k: 1, upsample: true, stride: 2, activation: "quick_gelu" },
  // upsampling to a skip's size (the U-Net at sizes that are not multiples of 2^levels)
  { x: [1, 5, 9, 5], cout: 7, k: 3, upsample: [17, 9], skipC: 3, bias: true },
  { x: [2, 4, 3, 3], cout: 33, k: 3, upsample: [5, 6], residual: true },
  { x: [2, 5, 7, 9], cout: 33, k: 3, bias: true, temb: { width: 71, column: 37, bias: true } },
  { x: [3, 9, 5, 3], cout: 7, k: 3, temb: { width: 7, column: 0, bias: false }, residual: true },
  { x: [2, 65, 3, 3], cout: 17, k: 3, bias: true, temb: { width: 40, column: 3, bias: true } },
];

/** Forced igemm configurations, one per case in turn, so every tile and split-K path runs. */
const FORCED: { tile: ConvTile; splitK?: number }[] = [
  { tile: "128x128" },
  { tile: "64x64" },
  { tile: "16x256" },
  { tile: "128x128", splitK: 3 },
  { tile: "64x64", splitK: 2 },
  { tile: "16x256", splitK: 5 },
];

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/** f32: ~1e-5 relative plus an absolute term growing with the reduction length K = Cin·k². */
const tolerance = (dtype: DType, k: number) =>
  dtype === "f32" ? { atol: 2e-7 * k, rtol: 1e-5 } : { atol: 2e-3, rtol: 1e-2 };

function caseLabel(c: Case): string {
  const extras = [
    c.stride === 2 ? "s2" : "",
    c.skipC ? `skip ${c.skipC}` : "",
    c.bias ? "bias" : "",
    c.upsample === true ? "up" : c.upsample ? `up→${c.upsample.join("×")}` : "",
    c.residual ? "residual" : "",
    c.activation ?? "",
    c.softClamp ? "softclamp" : "",
    c.temb ? `temb ${c.temb.width}@${c.temb.column}${c.temb.bias ? "+bias" : ""}` : "",
  ].filter((s) => s);
  return `[${c.x}]→${c.cout} ${c.k}×${c.k} ${extras.join(" ")}`;
}

async function checkCase(rt: Runtime, c: Case, dtype: DType, index: number): Promise<void> {
  const [b, cx, h, w] = c.x;
  const cin = cx + (c.skipC ?? 0);
  const seed = 100 * index + (dtype === "f16" ? 7 : 0);
  const host = (n: number, s: number, lo = -1, hi = 1) => asDType(randomArray(n, s, lo, hi), dtype);
  const amp = c.softClamp ? 6 : 1;
  const xh = host(b * cx * h * w, seed + 1, -amp, amp);
  const wh = host(c.cout * cin * c.k * c.k, seed + 2);
  const skipH = c.skipC ? host(b * c.skipC * h * w, seed + 3) : undefined;
  const biasH = c.bias ? host(c.cout, seed + 4) : undefined;
  const [hu, wu] = c.upsample === true ? [2 * h, 2 * w] : c.upsample ? c.upsample : [h, w];
  const stride = c.stride ?? 1;
  const pad = Math.floor(c.k / 2);
  const ho = Math.floor((hu + 2 * pad - c.k) / stride) + 1;
  const wo = Math.floor((wu + 2 * pad - c.k) / stride) + 1;
  const outShape = [b, c.cout, ho, wo];
  const resH = c.residual ? host(b * c.cout * ho * wo, seed + 5) : undefined;
  const tembH = c.temb ? host(b * c.temb.width, seed + 6) : undefined;
  const tembBiasH = c.temb?.bias ? host(c.cout, seed + 7) : undefined;
  const refOpts: Conv2dRefOptions = {
    bias: biasH,
    stride,
    skip: skipH ? { data: skipH, shape: [b, c.skipC!, h, w] } : undefined,
    upsample: c.upsample,
    softClamp: c.softClamp,
    activation: c.activation,
    residual: resH,
    temb: c.temb
      ? {
        values: { data: tembH!, shape: [b, c.temb.width] },
        column: c.temb.column,
        bias: tembBiasH,
      }
      : undefined,
  };
  const ref = conv2dRef({ data: xh, shape: c.x }, {
    data: wh,
    shape: [c.cout, cin, c.k, c.k],
  }, refOpts);
  assert.deepEqual(ref.shape, outShape);
  const up16 = (data: Float32Array | undefined, shape: number[]) =>
    data ? rt.upload(data, shape, { dtype }) : undefined;
  const x = up16(xh, c.x)!;
  const wt = up16(wh, [c.cout, cin, c.k, c.k])!;
  const opts: Conv2dOptions = {
    bias: up16(biasH, [c.cout]),
    stride,
    skip: up16(skipH, [b, c.skipC ?? 0, h, w]),
    upsample: c.upsample,
    softClamp: c.softClamp,
    activation: c.activation,
    residual: up16(resH, outShape),
    temb: c.temb
      ? {
        values: up16(tembH, [b, c.temb.width])!,
        column: c.temb.column,
        bias: up16(tembBiasH, [c.cout]),
      }
      : undefined,
  };
  const runs: [string, Conv2dOptions][] = [
    ["naive", { variant: "naive" }],
    ["igemm (planned)", {}],
    [`igemm ${JSON.stringify(FORCED[index % FORCED.length])}`, FORCED[index % FORCED.length]],
  ];
  const tol = tolerance(dtype, cin * c.k * c.k);
  for (const [name, variant] of runs) {
    const y = conv2d(x, wt, { ...opts, ...variant });
    assert.deepEqual(y.shape, outShape);
    assert.equal(y.dtype, dtype);
    assertClose(await y.read(), ref.data, { ...tol, label: `${caseLabel(c)} ${dtype} ${name}` });
    y.dispose();
  }
  for (
    const t of [x, wt, opts.bias, opts.skip, opts.residual, opts.temb?.values, opts.temb?.bias]
  ) {
    t?.dispose();
  }
}

Deno.test({
  name: "conv2d: naive and igemm variants match float64 on odd shapes with every fusion",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["conv2d"]);
    for (const dtype of testDTypes(rt)) {
      for (let i = 0; i < CASES.length; i++) await checkCase(rt, CASES[i], dtype, i);
    }
  },
});

Deno.test({
  name: "conv2d → GroupNorm: the norm reads split-K partial sums in place of the reduce pass",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["conv2d", "norm"]);
    const cases = [
      { x: [2, 9, 4, 4], cout: 12, groups: 4, splitK: 3, temb: true, silu: true }, // vec4 spatial
      { x: [1, 17, 3, 5], cout: 8, groups: 2, splitK: 2, temb: false, silu: false }, // scalar
      { x: [2, 5, 6, 6], cout: 6, groups: 3, splitK: 1, temb: true, silu: true }, // no split
      { x: [2, 33, 2, 2], cout: 64, groups: 32, splitK: 5, temb: true, silu: true },
    ];
    let seed = 500;
    for (const dtype of testDTypes(rt)) {
      for (const c of cases) {
        const [b, cx, h, w] = c.x;
        const host = (n: number, lo = -1, hi = 1) => asDType(randomArray(n, seed++, lo, hi), dtype);
        const xh = host(b * cx * h * w), wh = host(c.cout * cx * 9), bh = host(c.cout);
        const th = host(b * (c.cout + 3)), tbh = host(c.cout);
        const gw = host(c.cout, 0.5, 1.5), gb = host(c.cout, -0.5, 0.5);
        const temb = { values: { data: th, shape: [b, c.cout + 3] }, column: 2, bias: tbh };
        const conv = conv2dRef({ data: xh, shape: c.x }, { data: wh, shape: [c.cout, cx, 3, 3] }, {
          bias: bh,
          temb: c.temb ? temb : undefined,
        });
        // the unfused path stores the conv's output in dtype before the norm reads it
        const stored = asDType(Float32Array.from(conv.data), dtype);
        const ref = groupNormRef(stored, gw, gb, {
          batch: b,
          channels: c.cout,
          groups: c.groups,
          eps: 1e-5,
          silu: c.silu,
        });
        using x = rt.upload(xh, c.x, { dtype });
        using wt = rt.upload(wh, [c.cout, cx, 3, 3], { dtype });
        using bias = rt.upload(bh, [c.cout], { dtype });
        using tv = rt.upload(th, [b, c.cout + 3], { dtype });
        using tb = rt.upload(tbh, [c.cout], { dtype });
        using tgw = rt.upload(gw, [c.cout], { dtype });
        using tgb = rt.upload(gb, [c.cout], { dtype });
        using y = conv2d(x, wt, {
          bias,
          temb: c.temb ? { values: tv, column: 2, bias: tb } : undefined,
          tile: "64x64",
          splitK: c.splitK,
          groupNorm: { weight: tgw, bias: tgb, groups: c.groups, eps: 1e-5, silu: c.silu },
        });
        assert.deepEqual(y.shape, [b, c.cout, h, w]);
        assertClose(await y.read(), ref, {
          ...(dtype === "f32" ? { atol: 3e-5, rtol: 1e-5 } : { atol: 2e-2, rtol: 2e-2 }),
          label: `conv→groupNorm ${dtype} [${c.x}]→${c.cout} split ${c.splitK}`,
        });
      }
    }
    using x = rt.empty([1, 4, 3, 3]);
    using w = rt.empty([4, 4, 3, 3]);
    using g = rt.empty([4]);
    const groupNormOpt = { weight: g, bias: g, groups: 2, eps: 1e-5 };
    assert.throws(
      () => conv2d(x, w, { groupNorm: groupNormOpt, activation: "silu" }),
      /groupNorm cannot follow a conv with out, residual or an activation/,
    );
  },
});

Deno.test({
  name: "conv2d: writes into `out`, and an output of more than 65535 column tiles uses the z grid",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["conv2d"]);
    const n = 2049 * 2049; // 65,553 tiles of 64 pixels
    const xh = randomArray(n, 5);
    const x = rt.upload(xh, [1, 1, 2049, 2049]);
    const w = rt.upload(new Float32Array([0.5]), [1, 1, 1, 1]);
    const bias = rt.upload(new Float32Array([0.25]), [1]);
    const out = rt.empty([1, 1, 2049, 2049]);
    const y = conv2d(x, w, { bias, out, tile: "64x64" });
    assert.equal(y, out);
    const got = await y.read();
    assertClose(got, Array.from(xh, (v) => v * 0.5 + 0.25), { label: "1×1 conv over 65553 tiles" });
    for (const t of [x, w, bias, out]) t.dispose();
  },
});

Deno.test("conv2d: the float64 reference on hand-computed values, and at chosen indices", () => {
  // 3×3 ones kernel, padding 1 over [[1, 2], [3, 4]]: every output sums the whole image, + bias
  const img = { data: [1, 2, 3, 4], shape: [1, 1, 2, 2] };
  const ones = { data: new Array(9).fill(1), shape: [1, 1, 3, 3] };
  assert.deepEqual([...conv2dRef(img, ones, { bias: [-10] }).data], [0, 0, 0, 0]);
  // upsampled 2× → [[1,1,2,2],…]; stride 2 with a 1×1 kernel picks the top-left of each block
  const picked = conv2dRef(img, { data: [2], shape: [1, 1, 1, 1] }, { upsample: true, stride: 2 });
  assert.deepEqual(picked.shape, [1, 1, 2, 2]);
  assert.deepEqual([...picked.data], [2, 4, 6, 8]);
  const x = { data: randomArray(2 * 5 * 7 * 6, 1), shape: [2, 5, 7, 6] };
  const w = { data: randomArray(3 * 9 * 9, 2), shape: [3, 9, 3, 3] };
  const skip = { data: randomArray(2 * 4 * 7 * 6, 3), shape: [2, 4, 7, 6] };
  const full = conv2dRef(x, w, { skip, stride: 2, activation: "silu" });
  const indices = [0, 17, 5, full.data.length - 1];
  const some = conv2dRef(x, w, { skip, stride: 2, activation: "silu", indices });
  assert.deepEqual([...some.data], indices.map((i) => full.data[i]));
});

Deno.test("conv2d: planConv2d picks tiles and split-K by GEMM shape", () => {
  assert.deepEqual(planConv2d({ m: 320, n: 2 * 64 * 64, k: 320 * 9 }), {
    tile: "128x128",
    splits: 1,
  });
  assert.deepEqual(planConv2d({ m: 640, n: 2 * 32 * 32, k: 640 * 9 }), {
    tile: "64x64",
    splits: 1,
  });
  assert.deepEqual(planConv2d({ m: 1280, n: 2 * 8 * 8, k: 1280 * 9 }), {
    tile: "64x64",
    splits: 7,
  });
  assert.deepEqual(planConv2d({ m: 4, n: 2 * 64 * 64, k: 320 * 9 }), { tile: "16x256", splits: 9 });
  assert.deepEqual(planConv2d({ m: 64, n: 256, k: 36 }), { tile: "64x64", splits: 1 });
});

Deno.test({
  name: "conv2d: mismatched shapes and dtypes fail with a message naming the problem",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["conv2d"]);
    const t = (shape: number[], dtype: DType = "f32"): Tensor => rt.empty(shape, dtype);
    const x = t([2, 4, 9, 9]);
    const w = t([8, 4, 3, 3]);
    assert.deepEqual(conv2dShape(x, w, { stride: 2 }), [2, 8, 5, 5]);
    assert.deepEqual(conv2dShape(x, t([8, 7, 3, 3]), { skip: t([2, 3, 9, 9]), upsample: true }), [
      2,
      8,
      18,
      18,
    ]);
    const bad: [() => unknown, RegExp][] = [
      [() => conv2d(t([4, 9, 9]), w), /x must be NCHW/],
      [() => conv2d(x, t([8, 36])), /weight must be \[Cout, Cin, kh, kw\]/],
      [() => conv2d(x, t([8, 5, 3, 3])), /expects 5 input channels but x \[2,4,9,9\] has 4/],
      [() => conv2d(x, t([8, 6, 3, 3]), { skip: t([2, 3, 9, 9]) }), /give 7/],
      [() => conv2d(x, t([8, 6, 3, 3]), { skip: t([2, 2, 8, 9]) }), /skip \[2,2,8,9\] must be/],
      [() => conv2d(x, w, { bias: t([4]) }), /bias \[4\] must be \[8\]/],
      [() => conv2d(x, w, { residual: t([2, 8, 9, 8]) }), /residual .* must have the output's/],
      [() => conv2d(x, w, { out: t([2, 8, 5, 5]) }), /out \[2,8,5,5\] must have/],
      [() => conv2d(x, w, { stride: 0 }), /stride must be a positive integer/],
      [() => conv2d(t([1, 4, 1, 1]), w, { padding: 0 }), /does not fit the 1×1 input/],
      [() => conv2d(x, w, { softClamp: 0 }), /softClamp must be a positive number/],
      [() => conv2d(x, w, { splitK: 0 }), /splitK must be a positive integer/],
      [() => conv2d(x, w, { upsample: [20, 18] }), /upsample to 20×18 from 9×9: each side must/],
      [() => conv2d(x, w, { tile: "8x8" as ConvTile }), /unknown tile "8x8"/],
      [() => conv2d(x, w, { temb: { values: t([2, 12]), column: 5 } }), /temb values \[2,12\]/],
      [() => conv2d(x, w, { temb: { values: t([1, 8]) } }), /must be \[2, ≥ column \+ 8\]/],
      [() => conv2d(x, w, { temb: { values: t([2, 8]), bias: t([7]) } }), /temb bias \[7\]/],
    ];
    if (rt.gpu.hasF16) bad.push([() => conv2d(x, t([8, 4, 3, 3], "f16")), /share x's dtype f32/]);
    bad.push([() => conv2d(x, w, { variant: "fast" as "naive" }), /unknown variant "fast"/]);
    bad.push([
      () => conv2d(x, w, { activation: "tanh" as "relu" }),
      /unknown activation "tanh" \(use none, relu, silu/,
    ]);
    const out = t([2, 8, 9, 9]);
    bad.push([() => conv2d(x, w, { out, residual: out }), /out and residual are the same buffer/]);
    const same = t([2, 8, 9, 9]);
    bad.push([() => conv2d(same, t([8, 8, 3, 3]), { out: same }), /out and x are the same buffer/]);
    for (const [fn, re] of bad) assert.throws(fn, re);
  },
});
