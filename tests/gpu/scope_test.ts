import assert from "node:assert/strict";
import type { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { isScoped } from "../../src/gpu/scope.ts";
import { unary } from "../../src/ops/elementwise.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";

const inUse = (rt: Runtime) => rt.pool.stats().inUseBytes;
const vec = (rt: Runtime, ...v: number[]) => rt.upload(new Float32Array(v), [v.length]);

Deno.test({
  name: "scope: `using` frees a tensor at the end of its block",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    const before = inUse(rt);
    let seen: Tensor;
    {
      using t = vec(rt, 1, 2, 3);
      seen = t;
      assert.ok(inUse(rt) > before);
    }
    assert.ok(seen.disposed);
    assert.equal(inUse(rt), before);
  },
});

Deno.test({
  name: "scope: frees what was allocated inside except the result; earlier tensors are untouched",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    using x = vec(rt, -1, 0.5, 2);
    const before = inUse(rt);
    let mid!: Tensor;
    const y = rt.scope(() => {
      mid = unary(x, "silu");
      return unary(mid, "relu");
    });
    assert.ok(mid.disposed, "the intermediate is freed");
    assert.ok(!x.disposed, "a tensor made before the scope is not freed");
    assert.ok(!y.disposed && !isScoped(y), "the result belongs to the caller");
    const silu = (v: number) => v / (1 + Math.exp(-v));
    const got = await y.read();
    [-1, 0.5, 2].forEach((v, i) => assert.ok(Math.abs(got[i] - Math.max(silu(v), 0)) < 1e-6));
    y.dispose();
    assert.equal(inUse(rt), before);
  },
});

Deno.test({
  name: "scope: nested scopes hand results outward; arrays, objects and Maps of tensors are kept",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    using x = vec(rt, 1, 2);
    const before = inUse(rt);
    let inner!: Tensor, dropped!: Tensor;
    const out = rt.scope(() => {
      inner = rt.scope(() => {
        dropped = unary(x, "silu");
        return unary(x, "gelu");
      });
      assert.ok(isScoped(inner), "an inner result belongs to the enclosing scope");
      const a = unary(x, "relu"), b = unary(x, "silu");
      unary(x, "gelu"); // dropped on the floor: freed with the scope
      return { list: [a], nested: { b }, map: new Map([["inner", inner]]) };
    });
    assert.ok(dropped.disposed);
    assert.ok(!inner.disposed && !out.list[0].disposed && !out.nested.b.disposed);
    for (const t of [out.list[0], out.nested.b, inner]) t.dispose();
    assert.equal(inUse(rt), before, "nothing leaked");
    let outer!: Tensor;
    rt.scope(() => {
      outer = unary(x, "silu");
      rt.scope(() => outer); // an inner scope returning an outer scope's tensor does not move it
    });
    assert.ok(outer.disposed, "the outer scope frees its own tensor");
    assert.equal(inUse(rt), before);
  },
});

Deno.test({
  name: "scope: a returned view keeps its storage alive; disposing the view frees it",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    using x = rt.upload(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const before = inUse(rt);
    const v = rt.scope(() => unary(x, "relu").reshape([4]));
    assert.ok(!v.disposed);
    assert.deepEqual([...await v.read()], [1, 2, 3, 4]);
    v.dispose();
    assert.equal(inUse(rt), before);
  },
});

Deno.test({
  name: "scope: a throwing scope frees everything it allocated; keep() opts a tensor out",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    using x = vec(rt, 1, 2);
    const before = inUse(rt);
    let a!: Tensor, kept!: Tensor;
    assert.throws(() =>
      rt.scope(() => {
        a = unary(x, "silu");
        kept = rt.keep(unary(x, "gelu"));
        throw new Error("boom");
      }), /boom/);
    assert.ok(a.disposed);
    assert.ok(!kept.disposed && !isScoped(kept));
    kept.dispose();
    assert.equal(inUse(rt), before);
  },
});

Deno.test({
  name: "scope: an async scope spans awaits, and concurrent work does not land in it",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(["elementwise"]);
    using x = vec(rt, 1, 2);
    const before = inUse(rt);
    let outsider!: Tensor, early!: Tensor, late!: Tensor;
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    const running = rt.scope(async () => {
      early = unary(x, "silu");
      await gate;
      late = unary(x, "relu");
      await late.read();
      return unary(x, "gelu");
    });
    outsider = unary(x, "relu"); // made while the async scope is open, but outside it
    release();
    const result = await running;
    assert.ok(early.disposed && late.disposed, "the scope freed what it allocated across awaits");
    assert.ok(!outsider.disposed, "work outside the scope is not freed by it");
    assert.ok(!result.disposed);
    outsider.dispose();
    result.dispose();
    assert.equal(inUse(rt), before);
    await assert.rejects(
      rt.scope(async () => {
        outsider = unary(x, "silu");
        await Promise.resolve();
        throw new Error("late failure");
      }),
      /late failure/,
    );
    assert.ok(outsider.disposed, "a rejected async scope frees its tensors");
  },
});
