import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import {
  batchConcat,
  batchSlice,
  concatChannels,
  nchwToTokens,
  tokensToNchw,
  upsampleNearest2x,
} from "../../src/ops/layout.ts";
import {
  concatChannelsRef,
  transposeRef,
  upsampleNearest2xRef,
} from "../../src/reference/layout.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { assertClose, randomArray } from "../util.ts";

/** Pure data movement is exact; the fused residual add rounds once. */
const EXACT = { atol: 0, rtol: 0 };
const ADD_TOL = { f32: { atol: 1e-6, rtol: 1e-6 }, f16: { atol: 1e-3, rtol: 1e-3 } };

const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

Deno.test({
  name: "layout: nchwToTokens and tokensToNchw (tiled and naive) on odd shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["layout"]);
    const shapes = [[2, 33, 7, 11], [1, 77, 257], [3, 1, 1, 7], [2, 3, 1, 1], [1, 64, 8, 4], [
      2,
      320,
      7,
      11,
    ]];
    let seed = 1;
    for (const dtype of testDTypes(rt)) {
      for (const shape of shapes) {
        const [b, c] = shape;
        const l = numel(shape) / (b * c);
        const [h, w] = shape.length === 4 ? [shape[2], shape[3]] : [l, 1];
        const host = asDType(randomArray(numel(shape), seed++), dtype);
        const res = asDType(randomArray(numel(shape), seed++), dtype);
        const x = rt.upload(host, shape, { dtype });
        const r = rt.upload(res, [b, c, h, w], { dtype });
        const toTokens = transposeRef(host, { batch: b, rows: c, cols: l });
        const tokensHost = Float32Array.from(toTokens);
        const tokens = rt.upload(tokensHost, [b, l, c], { dtype });
        for (const variant of ["tiled", "naive"] as const) {
          const label = `${dtype} [${shape}] ${variant}`;
          const t = nchwToTokens(x, { variant });
          assert.deepEqual(t.shape, [b, l, c]);
          assertClose(await t.read(), toTokens, { ...EXACT, label: `nchwToTokens ${label}` });
          const back = tokensToNchw(tokens, { height: h, width: w, variant });
          assert.deepEqual(back.shape, [b, c, h, w]);
          assertClose(await back.read(), host, { ...EXACT, label: `tokensToNchw ${label}` });
          const withRes = tokensToNchw(tokens, { height: h, width: w, residual: r, variant });
          const ref = transposeRef(tokensHost, { batch: b, rows: l, cols: c }, res);
          assertClose(await withRes.read(), ref, {
            ...ADD_TOL[dtype],
            label: `tokensToNchw+residual ${label}`,
          });
          for (const y of [t, back, withRes]) y.dispose();
        }
        for (const y of [x, r, tokens]) y.dispose();
      }
    }
  },
});

Deno.test({
  name: "layout: concatChannels (vec4 and scalar) and upsampleNearest2x (even and odd widths)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["layout"]);
    let seed = 50;
    for (const dtype of testDTypes(rt)) {
      const pairs = [[[2, 3, 7, 11], [2, 5, 7, 11]], [[2, 8, 4, 4], [2, 4, 4, 4]], [[1, 1, 1, 1], [
        1,
        2,
        1,
        1,
      ]], [[3, 7, 77], [3, 1, 77]]];
      for (const [sa, sb] of pairs) {
        const a = asDType(randomArray(numel(sa), seed++), dtype);
        const b = asDType(randomArray(numel(sb), seed++), dtype);
        const ta = rt.upload(a, sa, { dtype });
        const tb = rt.upload(b, sb, { dtype });
        const y = concatChannels(ta, tb);
        assert.deepEqual(y.shape, [sa[0], sa[1] + sb[1], ...sa.slice(2)]);
        assertClose(await y.read(), concatChannelsRef(a, b, sa[0]), {
          ...EXACT,
          label: `concatChannels ${dtype} [${sa}] + [${sb}]`,
        });
      }
      for (const shape of [[2, 3, 7, 11], [1, 2, 4, 6], [1, 1, 1, 1], [2, 5, 3, 8]]) {
        const host = asDType(randomArray(numel(shape), seed++), dtype);
        const [b, c, h, w] = shape;
        const y = upsampleNearest2x(rt.upload(host, shape, { dtype }));
        assert.deepEqual(y.shape, [b, c, 2 * h, 2 * w]);
        assertClose(
          await y.read(),
          upsampleNearest2xRef(host, { planes: b * c, height: h, width: w }),
          {
            ...EXACT,
            label: `upsampleNearest2x ${dtype} [${shape}]`,
          },
        );
      }
    }
  },
});

Deno.test({
  name: "layout: batchSlice and batchConcat (aligned buffer copies and the odd-f16 kernel path)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["layout"]);
    for (const dtype of testDTypes(rt)) {
      for (const rest of [[4, 3, 5], [77, 8], [1]]) {
        const row = numel(rest);
        const host = asDType(randomArray(5 * row, row), dtype);
        const x = rt.upload(host, [5, ...rest], { dtype });
        for (const [start, count] of [[0, 1], [1, 1], [2, 3], [0, 5]]) {
          const s = batchSlice(x, { start, count });
          assert.deepEqual(s.shape, [count, ...rest]);
          assertClose(await s.read(), host.subarray(start * row, (start + count) * row), {
            ...EXACT,
            label: `batchSlice ${dtype} [5,${rest}] ${start}+${count}`,
          });
        }
        const parts = [
          batchSlice(x, { start: 3, count: 2 }),
          batchSlice(x, { start: 0, count: 1 }),
        ];
        parts.push(batchSlice(x, { start: 2, count: 1 }));
        const y = batchConcat(parts);
        assert.deepEqual(y.shape, [4, ...rest]);
        const want = [...host.subarray(3 * row, 5 * row), ...host.subarray(0, row)];
        want.push(...host.subarray(2 * row, 3 * row));
        assertClose(await y.read(), want, { ...EXACT, label: `batchConcat ${dtype} [${rest}]` });
      }
    }
  },
});

Deno.test({
  name: "layout: clear errors on bad shapes",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["layout"]);
    assert.throws(() => nchwToTokens(rt.empty([4, 8])), /\[B, C, H, W\] or \[B, C, L\]/);
    assert.throws(
      () => tokensToNchw(rt.empty([2, 60, 8]), { height: 8, width: 8 }),
      /H·W = 8·8, got \[2,60,8\]/,
    );
    assert.throws(
      () => tokensToNchw(rt.empty([2, 64, 8]), { height: 8, width: 8, residual: rt.empty([2, 8]) }),
      /residual is \[2,8\] f32, needs \[2,8,8,8\]/,
    );
    assert.throws(
      () => concatChannels(rt.empty([2, 3, 4, 4]), rt.empty([2, 3, 4, 5])),
      /equal B and spatial dims/,
    );
    assert.throws(() => upsampleNearest2x(rt.empty([2, 3, 4])), /\[B, C, H, W\]/);
    assert.throws(() => batchSlice(rt.empty([2, 3]), { start: 1, count: 2 }), /start \+ count ≤ 2/);
    assert.throws(() => batchConcat([rt.empty([1, 3]), rt.empty([1, 4])]), /equal rest/);
    assert.throws(() => batchConcat([]), /got none/);
    const x = rt.empty([1, 2, 3, 3]);
    assert.throws(() => nchwToTokens(x, { out: x }), /out must be a separate/);
  },
});
