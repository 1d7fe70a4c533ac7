import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import {
  chooseGemmVariant,
  GEMM_VARIANTS,
  type GemmActivation,
  linear,
  matmul,
} from "../../src/ops/gemm.ts";
import { gegluRef } from "../../src/reference/geglu.ts";
import { linearRef, matmulRef } from "../../src/reference/gemm.ts";
import { transposeRef } from "../../src/reference/layout.ts";
import { layerNormRef } from "../../src/reference/norm.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

const ACTS: GemmActivation[] = ["none", "gelu", "gelu_tanh", "quick_gelu", "silu"];

/** f32: the sum's rounding grows like √K; f16: one rounding of the f32 result. */
const tol = (dtype: DType, k: number) =>
  dtype === "f32" ? { atol: 1e-6 * Math.sqrt(k), rtol: 1e-5 } : { atol: 2e-3, rtol: 1e-2 };

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/** Odd shapes [M, N, K] from {1, 3, 7, 65, 77, 257}, plus K % 4 == 0 ones for the vec4 loads. */
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [3, 7, 77],
  [77, 65, 257],
  [257, 3, 65],
  [7, 257, 1],
  [65, 77, 7],
  [1, 257, 257],
  [257, 77, 3],
  [77, 65, 64],
  [65, 7, 68],
  [3, 257, 4],
  [130, 129, 36],
];

interface Case {
  m: number;
  n: number;
  k: number;
  act: GemmActivation;
  bias: boolean;
  residual: boolean;
  lead?: number[];
}

async function checkLinear(
  rt: Runtime,
  dtype: DType,
  c: Case,
  variant: (typeof GEMM_VARIANTS)[number] | "auto",
  seed: number,
): Promise<void> {
  const { m, n, k } = c;
  const lead = c.lead ?? [m];
  const x = asDType(randomArray(m * k, seed), dtype);
  const w = asDType(randomArray(n * k, seed + 1), dtype);
  const b = c.bias ? asDType(randomArray(n, seed + 2), dtype) : undefined;
  const r = c.residual ? asDType(randomArray(m * n, seed + 3), dtype) : undefined;
  const tx = rt.upload(x, [...lead, k], { dtype });
  const tw = rt.upload(w, [n, k], { dtype });
  const tb = b && rt.upload(b, [n], { dtype });
  const tr = r && rt.upload(r, [...lead, n], { dtype });
  const y = linear(tx, tw, { bias: tb, residual: tr, activation: c.act, variant });
  assert.deepEqual(y.shape, [...lead, n]);
  assert.equal(y.dtype, dtype);
  const ref = linearRef(x, w, { m, n, k, bias: b, residual: r, activation: c.act });
  const label = `linear ${variant} ${dtype} M=${m} N=${n} K=${k} ${c.act}` +
    `${c.bias ? " +bias" : ""}${c.residual ? " +residual" : ""}`;
  assertClose(await y.read(), ref, { ...tol(dtype, k), label });
  for (const t of [tx, tw, tb, tr, y]) t?.dispose();
}

Deno.test("gemm references match hand-computed products", () => {
  // x [2, 2], w [3, 2]: x·wᵀ = [[1, 2, 3], [3, 4, 7]]
  const x = [1, 2, 3, 4], w = [1, 0, 0, 1, 1, 1];
  assert.deepEqual(
    Array.from(
      linearRef(x, w, { m: 2, n: 3, k: 2, bias: [1, -2, 0], residual: [0, 0, 0, 1, 1, 1] }),
    ),
    [2, 0, 3, 5, 3, 8],
  );
  const relu = linearRef(x, w, { m: 2, n: 3, k: 2, bias: [-2, -2, -2], activation: "silu" });
  assertClose(relu, [
    -1 / (1 + Math.E),
    0,
    1 / (1 + Math.exp(-1)),
    1 / (1 + Math.exp(-1)),
    2 / (1 + Math.exp(-2)),
    5 / (1 + Math.exp(-5)),
  ], { atol: 1e-15, rtol: 1e-15 });
  assert.deepEqual(Array.from(linearRef(x, w, { m: 2, n: 3, k: 2, rows: [1] })), [3, 4, 7]);
  // two batches of [1, 2]·[2, 2]; then b shared, transposed, scaled
  const a = [1, 2, 3, 4], b = [1, 2, 3, 4, 0, 1, 1, 0];
  assert.deepEqual(Array.from(matmulRef(a, b, { batch: 2, m: 1, n: 2, k: 2 })), [7, 10, 4, 3]);
  assert.deepEqual(
    Array.from(
      matmulRef(a, b, { batch: 2, m: 1, n: 2, k: 2 }, { transB: true, alpha: 2, bBatch: 1 }),
    ),
    [10, 22, 22, 50],
  );
  assert.throws(
    () => linearRef(x, w, { m: 2, n: 3, k: 2, activation: "tanh" }),
    /unknown activation/,
  );
});

Deno.test("gemm: auto picks skinny for few rows, 128×64 tiles only when they fill the GPU", () => {
  const s = (m: number, n: number, k: number, batch = 1, transB = true) => ({
    m,
    n,
    k,
    batch,
    transB,
  });
  assert.equal(chooseGemmVariant(s(2, 1280, 320)), "skinny");
  assert.equal(chooseGemmVariant(s(2, 1280, 320, 1, false)), "tiled_vec");
  assert.equal(chooseGemmVariant(s(8192, 320, 320)), "tiled_128");
  assert.equal(chooseGemmVariant(s(2048, 640, 640)), "tiled_vec");
  assert.equal(chooseGemmVariant(s(154, 320, 768)), "tiled_vec");
  assert.equal(chooseGemmVariant(s(4096, 4096, 40, 16)), "tiled_128");
});

Deno.test({
  name: "linear: every variant on odd shapes (edge tiles, K tails, vec4 and scalar loads)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    for (const dtype of testDTypes(rt)) {
      for (const variant of GEMM_VARIANTS) {
        for (const [i, [m, n, k]] of SHAPES.entries()) {
          const c = { m, n, k, act: ACTS[i % 5], bias: i % 2 === 0, residual: i % 3 === 1 };
          await checkLinear(rt, dtype, c, variant, 10 * i);
        }
      }
    }
  },
});

Deno.test({
  name: "linear: every epilogue with and without bias and residual",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    for (const dtype of testDTypes(rt)) {
      for (const [m, n, k] of [[3, 65, 20], [77, 65, 7]]) {
        for (const act of ACTS) {
          for (const bias of [false, true]) {
            for (const residual of [false, true]) {
              await checkLinear(rt, dtype, { m, n, k, act, bias, residual }, "auto", m + k);
            }
          }
        }
      }
    }
  },
});

Deno.test({
  name: "linear: the GEGLU epilogue and the NCHW store match float64 on odd shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    const tiled = ["auto", "tiled", "tiled_vec", "tiled_128"] as const;
    for (const dtype of testDTypes(rt)) {
      // GEGLU: x [M, K], w [2·F, K] = [h; gate], bias [2·F] → [M, F]
      for (const [i, [m, f, k]] of [[1, 1, 3], [7, 33, 64], [130, 70, 5], [3, 257, 68]].entries()) {
        const x = asDType(randomArray(m * k, 50 + i), dtype);
        const w = asDType(randomArray(2 * f * k, 60 + i), dtype);
        const b = asDType(randomArray(2 * f, 70 + i), dtype);
        const ref = gegluRef(linearRef(x, w, { m, n: 2 * f, k, bias: b }), f);
        using tx = rt.upload(x, [m, k], { dtype });
        using tw = rt.upload(w, [2 * f, k], { dtype });
        using tb = rt.upload(b, [2 * f], { dtype });
        for (const variant of tiled) {
          using y = linear(tx, tw, { bias: i % 2 ? undefined : tb, geglu: true, variant });
          assert.deepEqual(y.shape, [m, f]);
          const want = i % 2 ? gegluRef(linearRef(x, w, { m, n: 2 * f, k }), f) : ref;
          assertClose(await y.read(), want, {
            ...tol(dtype, k),
            label: `geglu ${variant} ${dtype} M=${m} F=${f} K=${k}`,
          });
        }
      }
      // NCHW: tokens [B, H·W, K] → [B, N, H, W] + residual
      for (
        const [i, [bt, h, w, n, k]] of [[1, 1, 1, 1, 3], [2, 3, 5, 33, 64], [2, 9, 7, 70, 5]]
          .entries()
      ) {
        const l = h * w;
        const x = asDType(randomArray(bt * l * k, 80 + i), dtype);
        const wt = asDType(randomArray(n * k, 90 + i), dtype);
        const b = asDType(randomArray(n, 95 + i), dtype);
        const r = asDType(randomArray(bt * n * l, 99 + i), dtype);
        const tokens = linearRef(x, wt, { m: bt * l, n, k, bias: b });
        const ref = transposeRef(tokens, { batch: bt, rows: l, cols: n }, r);
        using tx = rt.upload(x, [bt, l, k], { dtype });
        using tw = rt.upload(wt, [n, k], { dtype });
        using tb = rt.upload(b, [n], { dtype });
        using tr = rt.upload(r, [bt, n, h, w], { dtype });
        for (const variant of ["naive", ...tiled] as const) {
          using y = linear(tx, tw, {
            bias: tb,
            residual: tr,
            nchw: { height: h, width: w },
            variant,
          });
          assert.deepEqual(y.shape, [bt, n, h, w]);
          assertClose(await y.read(), ref, {
            ...tol(dtype, k),
            label: `nchw ${variant} ${dtype} [${bt},${l},${k}]→${n}`,
          });
        }
      }
    }
    using x = rt.empty([4, 8]);
    assert.throws(() => linear(x, rt.empty([5, 8]), { geglu: true }), /even number of weight rows/);
    assert.throws(
      () => linear(x, rt.empty([6, 8]), { geglu: true, variant: "skinny" }),
      /GEGLU epilogue needs a tiled/,
    );
    assert.throws(
      () => linear(x.reshape([1, 4, 8]), rt.empty([6, 8]), { nchw: { height: 3, width: 1 } }),
      /nchw needs x as tokens \[B, 3·1, K\]/,
    );
  },
});

Deno.test({
  name: "linear: the LayerNorm prologue matches float64 layerNorm → linear on odd shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    const cases: [number, number, number, boolean][] = [
      [1, 5, 3, false],
      [7, 66, 64, true],
      [130, 33, 68, false],
      [65, 6, 257, true],
    ];
    for (const dtype of testDTypes(rt)) {
      for (const [i, [m, n, k, geglu]] of cases.entries()) {
        // a mean far from zero (+5) checks the two-pass variance
        const x = asDType(randomArray(m * k, 200 + i, -2, 2).map((v) => v + 5), dtype);
        const g = asDType(randomArray(k, 210 + i, 0.5, 1.5), dtype);
        const be = asDType(randomArray(k, 220 + i, -0.5, 0.5), dtype);
        const w = asDType(randomArray(n * k, 230 + i), dtype);
        const b = asDType(randomArray(n, 240 + i), dtype);
        const normed = layerNormRef(x, g, be, { eps: 1e-5 });
        const lin = linearRef(normed, w, { m, n, k, bias: b });
        const ref = geglu ? gegluRef(lin, n / 2) : lin;
        using tx = rt.upload(x, [m, k], { dtype });
        using tg = rt.upload(g, [k], { dtype });
        using tbe = rt.upload(be, [k], { dtype });
        using tw = rt.upload(w, [n, k], { dtype });
        using tb = rt.upload(b, [n], { dtype });
        for (const variant of ["auto", "tiled", "tiled_vec", "tiled_128"] as const) {
          using y = linear(tx, tw, {
            bias: tb,
            geglu,
            layerNorm: { weight: tg, bias: tbe, eps: 1e-5 },
            variant,
          });
          assert.deepEqual(y.shape, [m, geglu ? n / 2 : n]);
          assertClose(await y.read(), ref, {
            ...(dtype === "f32" ? { atol: 5e-6 * Math.sqrt(k), rtol: 2e-5 } : tol(dtype, k)),
            label: `layerNorm→linear ${variant} ${dtype} M=${m} N=${n} K=${k}${
              geglu ? " geglu" : ""
            }`,
          });
        }
      }
    }
    using x = rt.empty([4, 8]);
    using w = rt.empty([6, 8]);
    using ln = rt.empty([7]);
    assert.throws(
      () => linear(x, w, { layerNorm: { weight: ln, bias: ln, eps: 1e-5 } }),
      /layerNorm weight and bias must be \[8\]/,
    );
  },
});

Deno.test({
  name: "linear: leading dims are flattened into rows; 1-D x gives [N]; out is written",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    for (const dtype of testDTypes(rt)) {
      await checkLinear(
        rt,
        dtype,
        { m: 42, n: 33, k: 12, act: "gelu", bias: true, residual: true, lead: [2, 3, 7] },
        "auto",
        5,
      );
      await checkLinear(
        rt,
        dtype,
        { m: 1, n: 9, k: 5, act: "none", bias: true, residual: false, lead: [] },
        "auto",
        6,
      );
    }
    const x = randomArray(6 * 8, 1), w = randomArray(5 * 8, 2);
    const out = rt.empty([2, 3, 5]);
    const y = linear(rt.upload(x, [2, 3, 8]), rt.upload(w, [5, 8]), { out });
    assert.equal(y, out);
    assertClose(await out.read(), linearRef(x, w, { m: 6, n: 5, k: 8 }), {
      ...tol("f32", 8),
      label: "out",
    });
  },
});

Deno.test({
  name: "matmul: batched a·b and a·bᵀ, alpha, a shared b, every variant",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    const cases: { batch: number; bBatch: number; m: number; n: number; k: number }[] = [
      { batch: 3, bBatch: 3, m: 7, n: 65, k: 77 },
      { batch: 2, bBatch: 2, m: 65, n: 68, k: 40 },
      { batch: 3, bBatch: 1, m: 77, n: 3, k: 8 },
      { batch: 1, bBatch: 1, m: 1, n: 257, k: 3 },
    ];
    for (const dtype of testDTypes(rt)) {
      for (const [i, c] of cases.entries()) {
        const a = asDType(randomArray(c.batch * c.m * c.k, 100 + i), dtype);
        const b = asDType(randomArray(c.bBatch * c.n * c.k, 200 + i), dtype);
        const ta = rt.upload(a, [c.batch, c.m, c.k], { dtype });
        for (const transB of [false, true]) {
          const bShape = transB ? [c.bBatch, c.n, c.k] : [c.bBatch, c.k, c.n];
          const tb = rt.upload(b, c.bBatch === 1 && i % 2 === 0 ? bShape.slice(1) : bShape, {
            dtype,
          });
          const alpha = transB ? 0.125 : 1;
          const ref = matmulRef(a, b, c, { transB, alpha, bBatch: c.bBatch });
          for (const variant of ["auto", ...GEMM_VARIANTS] as const) {
            if (variant === "skinny" && !transB) continue;
            const y = matmul(ta, tb, { transB, alpha, variant });
            assert.deepEqual(y.shape, [c.batch, c.m, c.n]);
            assertClose(await y.read(), ref, {
              ...tol(dtype, c.k),
              label: `matmul ${variant} ${dtype} ${JSON.stringify(c)} transB=${transB}`,
            });
            y.dispose();
          }
          tb.dispose();
        }
        ta.dispose();
      }
    }
    const y2 = matmul(
      rt.upload(new Float32Array([1, 2, 3, 4]), [2, 2]),
      rt.upload(new Float32Array([0, 1, 1, 0]), [2, 2]),
    );
    assert.deepEqual(y2.shape, [2, 2]);
    assert.deepEqual(Array.from(await y2.read()), [2, 1, 4, 3]);
  },
});

Deno.test({
  name: "gemm: mismatched shapes, dtypes and aliasing give clear errors",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["gemm"]);
    const x = rt.empty([2, 7, 16]);
    const w = rt.empty([32, 16]);
    assert.throws(() => linear(x, rt.empty([16, 32])), /weight must be \[out_features, 16\]/);
    assert.throws(() => linear(x, rt.empty([32, 16, 1])), /weight is \[32,16,1\]/);
    assert.throws(() => linear(x, w, { bias: rt.empty([16]) }), /bias is \[16\], needs \[32\]/);
    assert.throws(
      () => linear(x, w, { residual: rt.empty([14, 32]) }),
      /residual is \[14,32\], needs the output's shape \[2,7,32\]/,
    );
    assert.throws(
      () => linear(x, w, { out: rt.empty([2, 7, 31]) }),
      /out is \[2,7,31\] f32, needs \[2,7,32\] f32/,
    );
    const r = rt.empty([2, 7, 32]);
    assert.throws(
      () => linear(x, w, { residual: r, out: r.reshape([2, 7, 32]) }),
      /out shares storage/,
    );
    assert.throws(
      () => linear(x, w, { activation: "tanh" as GemmActivation }),
      /unknown activation "tanh"/,
    );
    assert.throws(
      () => linear(x, w, { variant: "fast" as "auto" }),
      /unknown gemm variant "fast"/,
    );
    if (rt.gpu.hasF16) {
      assert.throws(
        () => linear(x, rt.empty([32, 16], "f16")),
        /weight is f16 but the input is f32/,
      );
    }
    const a = rt.empty([3, 5, 8]);
    assert.throws(() => matmul(a, rt.empty([3, 9, 4])), /b must be \[3 or 1, 8, N\]/);
    assert.throws(() => matmul(a, rt.empty([2, 8, 4])), /b must be \[3 or 1, 8, N\]/);
    assert.throws(
      () => matmul(a, rt.empty([3, 8, 4]), { transB: true }),
      /\(transB\); b must be \[3 or 1, N, 8\]/,
    );
    assert.throws(() => matmul(rt.empty([8]), rt.empty([8, 2])), /\[Bt, M, K\] or \[M, K\]/);
    assert.throws(
      () => matmul(a, rt.empty([3, 8, 4]), { variant: "skinny" }),
      /needs b as \[N, K\]/,
    );
  },
});
