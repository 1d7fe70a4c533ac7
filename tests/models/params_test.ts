import assert from "node:assert/strict";
import { ParamStore } from "../../src/models/params.ts";
import type { LoadedTensor } from "../../src/weights/source.ts";
import { StrictImportError } from "../../src/weights/strict.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";

function f32(shape: number[], start: number): LoadedTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, dtype: "F32", data: new Float32Array(n).map((_, i) => start + i) };
}

Deno.test({
  name: "ParamStore.join: parts in one buffer, each still a parameter under its key",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const rows = rt.gpu.limits.minStorageBufferOffsetAlignment / 4 / 8; // f32 rows of 8
    const shape = [rows, 8];
    const n = rows * 8;
    const tensors = new Map([
      ["a.weight", f32(shape, 0)],
      ["b.weight", f32(shape, 1000)],
      ["c.weight", f32([rows, 8], 2000)],
      ["odd.weight", f32([3, 8], 0)],
      ["odd2.weight", f32([3, 8], 0)],
    ]);
    const store = new ParamStore(rt, tensors, { dtype: "f32", component: "test" });
    const joined = store.join(["a.weight", "b.weight", "c.weight"], [shape, shape, shape])!;
    assert.deepEqual(joined.shape, [3 * rows, 8]);
    const b = store.take("b.weight", shape);
    assert.equal(b.buffer, joined.buffer, "take() hands out the view");
    assert.equal(b.byteOffset, n * 4);
    assert.equal(store.params.get("b.weight"), b);
    assert.deepEqual((await b.read()).slice(0, 2), new Float32Array([1000, 1001]));
    const all = await joined.read();
    assert.equal(all[2 * n], 2000);
    // the rows of consecutive parts (a GEMM over some modules of a model-wide join)
    const bc = store.joinedRows(["b.weight", "c.weight"])!;
    assert.equal(bc.whole, joined);
    assert.equal(bc.row, rows);
    assert.deepEqual(bc.rows.shape, [2 * rows, 8]);
    assert.equal(bc.rows.byteOffset, n * 4);
    assert.equal(store.joinedRows(["a.weight", "c.weight"]), undefined, "not consecutive");
    assert.equal(store.joinedRows(["odd.weight"]), undefined, "never joined");
    // parts that would start off the alignment are not joined (and are taken one by one)
    assert.equal(store.join(["odd.weight", "odd2.weight"], [[3, 8], [3, 8]]), undefined);
    assert.notEqual(
      store.take("odd.weight", [3, 8]).buffer,
      store.take("odd2.weight", [3, 8]).buffer,
    );
    store.take("a.weight", shape);
    store.take("c.weight", shape);
    assert.deepEqual(store.finish(), []);
    store.dispose();
    // a missing part: no join, and the usual strict error names it
    const partial = new ParamStore(rt, new Map([["a.weight", f32(shape, 0)]]), {
      dtype: "f32",
      component: "test",
    });
    assert.equal(partial.join(["a.weight", "b.weight"], [shape, shape]), undefined);
    partial.take("a.weight", shape);
    partial.take("b.weight", shape);
    assert.throws(() => partial.finish(), (e: Error) => {
      assert.ok(e instanceof StrictImportError);
      assert.match(e.message, /b\.weight/);
      return true;
    });
  },
});
