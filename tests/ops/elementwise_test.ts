import assert from "node:assert/strict";
import { ACTIVATIONS, binaryRef, erf } from "../../src/reference/elementwise.ts";
import { binary, cast, lincomb, unary, type UnaryOp } from "../../src/ops/elementwise.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

const SIZES = [1, 3, 7, 77, 257, 1000];
const TOL = { f32: { atol: 1e-6, rtol: 1e-5 }, f16: { atol: 2e-3, rtol: 1e-2 } };

/** Rounds the inputs the way the GPU sees them in `dtype`. */
const asDType = (x: Float32Array, dtype: string) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

Deno.test("reference erf matches known values", () => {
  assertClose([erf(0), erf(0.5), erf(1), erf(2), erf(3), erf(-1.5)], [
    0,
    0.5204998778130465,
    0.8427007929497149,
    0.9953222650189527,
    0.9999779095030014,
    -0.9661051464753108,
  ], { atol: 1e-15, rtol: 1e-14 });
});

Deno.test({
  name: "elementwise: activations match float64 on odd sizes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    for (const dtype of testDTypes(rt)) {
      for (const n of SIZES) {
        const host = asDType(randomArray(n, n, -6, 6), dtype);
        const x = rt.upload(host, [n], { dtype });
        for (const op of ["silu", "gelu", "gelu_tanh", "quick_gelu", "relu"] as UnaryOp[]) {
          const got = await unary(x, op).read();
          const ref = Array.from(host, ACTIVATIONS[op]);
          assertClose(got, ref, { ...TOL[dtype], label: `${op} ${dtype} n=${n}` });
        }
        const s = await unary(x, "scale", { alpha: 0.5, beta: 2 }).read();
        assertClose(s, Array.from(host, (v) => v * 0.5 + 2), { ...TOL[dtype], label: "scale" });
        const c = await unary(x, "clamp", { alpha: -1.5, beta: 2.25 }).read();
        const clamped = Array.from(host, (v) => Math.min(2.25, Math.max(-1.5, v)));
        assertClose(c, clamped, { atol: 0, rtol: 0, label: `clamp ${dtype}` });
        x.dispose();
      }
    }
  },
});

Deno.test({
  name: "elementwise: broadcast add/sub/mul over an axis",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    for (const dtype of testDTypes(rt)) {
      const cases: [number[], number][] = [[[2, 3, 7], 1], [[5, 77], 1], [[3, 1, 9], 0], [
        [257],
        0,
      ]];
      for (const [shape, axis] of cases) {
        const n = shape.reduce((a, b) => a * b, 1);
        const a = asDType(randomArray(n, 1), dtype);
        const b = asDType(randomArray(shape[axis], 2), dtype);
        let inner = 1;
        for (let i = axis + 1; i < shape.length; i++) inner *= shape[i];
        const ta = rt.upload(a, shape, { dtype });
        const tb = rt.upload(b, [shape[axis]], { dtype });
        for (const op of ["add", "sub", "mul"] as const) {
          const got = await binary(ta, tb, { op, axis }).read();
          assertClose(got, binaryRef(a, b, op, inner), {
            ...TOL[dtype],
            label: `${op} [${shape}]`,
          });
        }
        const same = await binary(ta, ta, { op: "mul" }).read();
        assertClose(same, binaryRef(a, a, "mul", 1), { ...TOL[dtype], label: "mul same shape" });
      }
    }
    const rt2 = await testRuntime();
    assert.throws(
      () => binary(rt2.empty([2, 3]), rt2.empty([4]), { op: "add" }),
      /cannot broadcast \[4\] over axis 1 of \[2,3\]/,
    );
  },
});

Deno.test({
  name: "elementwise: lincomb of up to four tensors and casts",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    for (const dtype of testDTypes(rt)) {
      const n = 257;
      const xs = [1, 2, 3, 4].map((s) => asDType(randomArray(n, s), dtype));
      const ts = xs.map((x) => rt.upload(x, [n], { dtype }));
      const coefs = [0.5, -1.25, 2, 0.125];
      for (let k = 1; k <= 4; k++) {
        const got = await lincomb(ts.slice(0, k), coefs.slice(0, k)).read();
        const ref = new Float64Array(n);
        for (let j = 0; j < k; j++) for (let i = 0; i < n; i++) ref[i] += coefs[j] * xs[j][i];
        assertClose(got, ref, { ...TOL[dtype], label: `lincomb ${k} ${dtype}` });
      }
    }
    if (rt.gpu.hasF16) {
      const x = randomArray(77, 9, -100, 100);
      const h = cast(rt.upload(x, [77]), "f16");
      assert.equal(h.dtype, "f16");
      assert.deepEqual(await h.read(), Float32Array.from(Float16Array.from(x)));
      assert.deepEqual(await cast(h, "f32").read(), Float32Array.from(Float16Array.from(x)));
      // mixed dtypes: an f32 sample with the two f16 halves of a CFG batch, in f32
      const n = 131;
      const [s, u, c] = [5, 6, 7].map((k, i) => asDType(randomArray(n, k), i ? "f16" : "f32"));
      const got = await lincomb(
        [
          rt.upload(s, [n]),
          rt.upload(u, [n], { dtype: "f16" }),
          rt.upload(c, [n], { dtype: "f16" }),
        ],
        [1, -0.65, 0.75],
        { out: rt.empty([n], "f32") },
      ).read();
      const ref = s.map((v, i) => v - 0.65 * u[i] + 0.75 * c[i]);
      assertClose(got, ref, { atol: 1e-6, rtol: 1e-6, label: "lincomb f32, f16, f16" });
    }
    assert.throws(() => lincomb([], []), /1–4 tensors/);
  },
});

Deno.test({
  name: "elementwise: a tensor larger than 65535 workgroups uses the 2-D grid",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const n = 65535 * 256 + 300;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = (i % 1000) - 500;
    const got = await unary(rt.upload(x, [n]), "relu").read();
    let bad = 0;
    for (let i = 0; i < n; i++) if (got[i] !== Math.max(x[i], 0)) bad++;
    assert.equal(bad, 0);
  },
});
