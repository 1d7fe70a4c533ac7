import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import { unary } from "../../src/ops/elementwise.ts";
import { geglu } from "../../src/ops/geglu.ts";
import { erf } from "../../src/reference/elementwise.ts";
import { gegluRef, geluExact } from "../../src/reference/geglu.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

const TOL = { f32: { atol: 1e-6, rtol: 1e-5 }, f16: { atol: 2e-3, rtol: 1e-2 } };

const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/** Gate values covering [-10, 10] densely, both erf branches and their boundaries included. */
function gateSweep(): Float32Array {
  const n = 40001;
  const v = Float32Array.from({ length: n }, (_, i) => -10 + (20 * i) / (n - 1));
  const edges = [0.75, 4].flatMap((a) => [a * Math.SQRT2, -a * Math.SQRT2]);
  return Float32Array.from([...v, ...edges, 0, 1e-30, -1e-30]); // 40008 values (F % 4 == 0)
}

Deno.test("reference erf is float64-accurate on both sides of its branch point", () => {
  // erfc(2.5) = 4.069520174449590e-4, erfc(3.5) = 7.430983723414128e-7
  assertClose(
    [erf(0.1), erf(2.5), erf(3.5), erf(-6), 1 - erf(2.5), 1 - erf(3.5)],
    [
      0.1124629160182849,
      0.999593047982555,
      0.9999992569016276,
      -1,
      4.06952017444959e-4,
      7.430983723414128e-7,
    ],
    { atol: 1e-15, rtol: 1e-9, label: "erf" },
  );
  // the Taylor branch (below 2.5) meets the continued fraction with the right slope
  const h = 1e-6, slope = (2 / Math.sqrt(Math.PI)) * Math.exp(-6.25);
  const taylor = erf(2.5) - h * slope * (1 + 2.5 * h); // up to the h² term
  assertClose([erf(2.5 - h)], [taylor], { atol: 1e-14, rtol: 0, label: "erf at 2.5" });
  assert.equal(geluExact(0), 0);
});

Deno.test({
  name: "geglu: the kernel's exact GELU is accurate to ~1e-7 in f32",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["geglu"]);
    const gates = gateSweep();
    const n = gates.length;
    const x = new Float32Array(2 * n).fill(1);
    x.set(gates, n);
    for (const variant of ["scalar", "vec4"] as const) {
      const tx = rt.upload(x, [1, 2 * n]);
      const got = await geglu(tx, { variant }).read();
      assertClose(got, Array.from(gates, geluExact), {
        atol: 2e-7,
        rtol: 2e-7,
        label: `gelu inside geglu (${variant})`,
      });
      tx.dispose();
    }
  },
});

Deno.test({
  name: "elementwise gelu matches the erf-exact GELU to 1e-6",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const gates = gateSweep();
    const got = await unary(rt.upload(gates, [gates.length]), "gelu").read();
    assertClose(got, Array.from(gates, geluExact), {
      atol: 1e-6,
      rtol: 1e-6,
      label: "elementwise gelu",
    });
  },
});

Deno.test({
  name: "geglu: F ∈ {1, 7, 32, 77, 1280}, scalar and vec4 kernels, both dtypes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["geglu"]);
    let seed = 1;
    for (const dtype of testDTypes(rt)) {
      for (const f of [1, 7, 32, 77, 1280]) {
        for (const lead of [[1], [2, 3], [77]]) {
          const shape = [...lead, 2 * f];
          const n = shape.reduce((a, b) => a * b, 1);
          const host = asDType(randomArray(n, seed++, -5, 5), dtype);
          const x = rt.upload(host, shape, { dtype });
          const ref = gegluRef(host, f);
          const variants = f % 4 === 0 ? ["scalar", "vec4"] as const : ["auto"] as const;
          for (const variant of variants) {
            const y = geglu(x, { variant });
            assert.deepEqual(y.shape, [...lead, f]);
            assertClose(await y.read(), ref, {
              ...TOL[dtype],
              label: `geglu ${dtype} [${shape}] ${variant}`,
            });
            y.dispose();
          }
          x.dispose();
        }
      }
    }
  },
});

Deno.test({
  name: "geglu: clear errors on bad shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["geglu"]);
    assert.throws(() => geglu(rt.empty([2, 7])), /\[\.\.\., 2F\].*got \[2,7\]/);
    assert.throws(() => geglu(rt.empty([2, 14]), { variant: "vec4" }), /F % 4 == 0, got F = 7/);
    assert.throws(
      () => geglu(rt.empty([2, 8]), { out: rt.empty([2, 8]) }),
      /out must be a separate f32 tensor of shape \[2,4\]/,
    );
  },
});
