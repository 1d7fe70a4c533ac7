import assert from "node:assert/strict";
import { getGpu, NO_ADAPTER_HELP } from "../../src/gpu/device.ts";
import { keyString, registerTemplate, renderKernel } from "../../src/gpu/kernel.ts";
import { sizeClass } from "../../src/gpu/pool.ts";
import { Profiler } from "../../src/gpu/profiler.ts";
import { grid1d } from "../../src/gpu/runtime.ts";
import { lincomb, unary } from "../../src/ops/elementwise.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";

Deno.test({
  name: "device: limits are raised to the adapter's and optional features are on",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await getGpu();
    const adapter = await navigator.gpu.requestAdapter();
    assert.ok(adapter);
    assert.equal(
      gpu.limits.maxStorageBufferBindingSize,
      adapter.limits.maxStorageBufferBindingSize,
    );
    assert.equal(gpu.limits.maxBufferSize, adapter.limits.maxBufferSize);
    assert.equal(
      gpu.limits.maxComputeWorkgroupStorageSize,
      adapter.limits.maxComputeWorkgroupStorageSize,
    );
    assert.equal(gpu.hasF16, adapter.features.has("shader-f16"));
    assert.equal(gpu.hasTimestamps, adapter.features.has("timestamp-query"));
    assert.ok(gpu.adapterName.length > 0);
    assert.equal(await getGpu(), gpu, "one shared device per process");
    const noF16 = await getGpu({ disableF16: true });
    assert.equal(noF16.hasF16, false);
    noF16.device.destroy();
  },
});

Deno.test("device: the no-adapter message says what to install and how to check", () => {
  assert.match(NO_ADAPTER_HELP, /mesa-vulkan-drivers/);
  assert.match(NO_ADAPTER_HELP, /deno eval/);
});

Deno.test("pool: size classes", () => {
  assert.equal(sizeClass(1), 256);
  assert.equal(sizeClass(4096), 4096);
  assert.equal(sizeClass(4097), 5120);
  assert.equal(sizeClass(1 << 20), 1 << 20);
  for (const n of [5000, 123457, 9_999_999]) {
    assert.ok(sizeClass(n) >= n && sizeClass(n) <= n * 1.25 + 256);
  }
});

Deno.test("grid1d splits large counts over two dimensions", () => {
  assert.deepEqual(grid1d(10), [10, 1, 1]);
  const [x, y] = grid1d(200_000);
  assert.ok(x <= 65535 && x * y >= 200_000);
});

Deno.test({
  name: "tensor: f32, f16 and bf16 round trips, reshape, dispose",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const data = new Float32Array([1, -2.5, 3.25, 1e-3, 65504, -0, 7]);
    assert.deepEqual(await rt.upload(data, [7]).read(), data);
    if (rt.gpu.hasF16) {
      const h = rt.upload(data, [7], { dtype: "f16" });
      assert.equal(h.dtype, "f16");
      assert.deepEqual(await h.read(), Float32Array.from(Float16Array.from(data)));
      const bits = new Uint16Array(Float16Array.from(data).buffer);
      assert.deepEqual(
        await rt.upload(bits, [7]).read(),
        Float32Array.from(Float16Array.from(data)),
      );
    }
    // bf16 bits: the high half of the f32 bits
    const bf = new Uint16Array([0x3f80, 0xc020, 0x4049]); // 1, -2.5, 3.140625
    assert.deepEqual(
      await rt.upload(bf, [3], { srcDType: "bf16" }).read(),
      new Float32Array([1, -2.5, 3.140625]),
    );
    const t = rt.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const r = t.reshape([3, 2]);
    assert.deepEqual(r.shape, [3, 2]);
    assert.deepEqual(await r.read(), new Float32Array([1, 2, 3, 4, 5, 6]));
    assert.throws(() => t.reshape([4]), /cannot reshape/);
    t.dispose();
    assert.throws(() => r.buffer, /used after dispose/);
    assert.throws(() => rt.upload(data, [8]), /upload of 7 values/);
  },
});

Deno.test({
  name: "pool: freed buffers are reused and counters follow",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const before = rt.pool.stats();
    const a = rt.empty([1000]);
    const buf = a.buffer;
    assert.equal(rt.pool.stats().inUseBytes, before.inUseBytes + sizeClass(4000));
    a.dispose();
    const b = rt.empty([999]);
    assert.equal(b.buffer, buf, "same size class → same buffer");
    assert.ok(rt.pool.stats().peakBytes >= rt.pool.stats().inUseBytes);
    b.dispose();
    // of the free buffers of a size class the oldest goes out first, whatever the freeing order
    const [c, d, e] = [rt.empty([1000]), rt.empty([1000]), rt.empty([1000])];
    const order = [c.buffer, d.buffer, e.buffer];
    e.dispose();
    c.dispose();
    d.dispose();
    const again = [rt.empty([1000]), rt.empty([1000]), rt.empty([1000])];
    assert.deepEqual(again.map((t) => t.buffer), order);
    for (const t of again) t.dispose();
    rt.trim();
    assert.equal(rt.pool.stats().pooledBytes, 0);
  },
});

Deno.test("templates: keys are canonical and rendering uses the params", () => {
  assert.equal(
    keyString({ kernel: "k", params: { b: 1, a: "f16" } }),
    keyString({ kernel: "k", params: { a: "f16", b: 1 } }),
  );
  registerTemplate("t_render", "{% if enable_f16 %}enable f16;{% endif %} wg={{ wg }} {{ dtype }}");
  assert.equal(
    renderKernel({ kernel: "t_render", params: { wg: 64, dtype: "f16" } }),
    "enable f16; wg=64 f16",
  );
  assert.equal(renderKernel({ kernel: "t_render", params: { wg: 8, dtype: "f32" } }), " wg=8 f32");
  assert.throws(() => renderKernel({ kernel: "nope", params: {} }), /not loaded/);
});

Deno.test({
  name: "pipeline cache: one pipeline per key",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const key = {
      kernel: "elementwise",
      params: { mode: "unary", op: "relu", dtype: "f32", out_dtype: "f32", terms: 1, wg: 256 },
    };
    const a = rt.cache.get(key);
    const n = rt.cache.size;
    assert.equal(rt.cache.get({ ...key, params: { ...key.params } }), a);
    assert.equal(rt.cache.size, n);
    assert.equal(await a.check, undefined);
  },
});

Deno.test({
  name: "a WGSL compile error names the template and the line",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    registerTemplate(
      "t_broken",
      [
        "@group(0) @binding(1) var<storage, read_write> y: array<f32>;",
        "@compute @workgroup_size({{ wg }})",
        "fn main(@builtin(global_invocation_id) i: vec3<u32>) {",
        "  y[i.x] = undefined_thing + 1.0;",
        "}",
      ].join("\n"),
    );
    const y = rt.empty([4]);
    rt.dispatch({ key: { kernel: "t_broken", params: { wg: 4 } }, bindings: [y], grid: [1] });
    await assert.rejects(() => rt.flush(), (e: Error) => {
      assert.match(e.message, /kernels\/t_broken\.wgsl\.jinja/);
      assert.match(e.message, /t_broken\{wg=4\}/);
      assert.match(e.message, /line 4:/);
      assert.match(e.message, /undefined_thing/);
      return true;
    });
    y.dispose();
    const ok = unary(rt.upload(new Float32Array([1]), [1]), "relu");
    assert.deepEqual(await ok.read(), new Float32Array([1]), "the runtime works after the error");
  },
});

Deno.test({
  name: "profiler: per-dispatch times with labels, table and JSON",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const p = new Profiler();
    rt.profiler = p;
    try {
      const x = rt.upload(new Float32Array(1000).fill(1), [10, 100]);
      unary(unary(x, "silu"), "relu");
      await rt.flush("step");
    } finally {
      rt.profiler = null;
    }
    if (rt.gpu.hasTimestamps) {
      assert.equal(p.mode, "gpu");
      assert.deepEqual(p.entries.map((e) => e.label), ["silu [10,100]", "relu [10,100]"]);
    } else {
      assert.equal(p.mode, "wall");
      assert.equal(p.entries[0].label, "step");
    }
    assert.ok(p.entries.every((e) => e.ms >= 0 && Number.isFinite(e.ms)));
    assert.match(p.table(), /silu \[10,100\]|step/);
    assert.equal(JSON.parse(JSON.stringify(p)).rows.length, p.rows().length);
  },
});

Deno.test({
  name: "profiler: dispatches recorded around an upload are all timed",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    if (!rt.gpu.hasTimestamps) return;
    const p = new Profiler();
    rt.profiler = p;
    try {
      const x = rt.upload(new Float32Array(64).fill(1), [64]);
      unary(x, "silu");
      const y = rt.upload(new Float32Array(64).fill(2), [64]); // staged between the dispatches
      unary(y, "relu");
      await rt.flush();
    } finally {
      rt.profiler = null;
    }
    assert.deepEqual(p.entries.map((e) => e.label), ["silu [64]", "relu [64]"]);
  },
});

Deno.test({
  name: "pool: exact buffers have just their size and are destroyed on release",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const before = rt.pool.stats();
    const t = rt.upload(new Float32Array(5000), [5000], { exact: true });
    assert.equal(t.buffer.size, 20000);
    assert.equal(rt.pool.stats().totalBytes, before.totalBytes + 20000);
    t.dispose();
    const after = rt.pool.stats();
    assert.equal(after.totalBytes, before.totalBytes);
    assert.equal(after.pooledBytes, before.pooledBytes);
    assert.equal(after.inUseBytes, before.inUseBytes);
  },
});

Deno.test({
  name: "a dispatch the GPU refuses makes flush() throw with the reason",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const x = rt.upload(new Float32Array(4), [4]);
    const y = rt.empty([4]);
    const limit = rt.gpu.limits.maxComputeWorkgroupsPerDimension;
    rt.dispatch({
      key: {
        kernel: "elementwise",
        params: { mode: "unary", op: "relu", dtype: "f32", out_dtype: "f32", terms: 1, wg: 256 },
      },
      bindings: [x, y],
      uniforms: new Uint32Array(8),
      grid: [limit + 1],
      label: "too many workgroups",
    });
    await assert.rejects(
      () => rt.flush("bad step"),
      /GPU refused the work submitted as "bad step"/,
    );
    const ok = unary(rt.upload(new Float32Array([-1, 2]), [2]), "relu");
    assert.deepEqual(await ok.read(), new Float32Array([0, 2]), "the runtime works afterwards");
  },
});

Deno.test({
  name: "tensor views: an offset view binds, copies, reads and writes its own elements",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const align = rt.gpu.limits.minStorageBufferOffsetAlignment / 4; // f32 elements
    using t = rt.upload(new Float32Array(3 * align).map((_, i) => i), [3, align]);
    const mid = t.view([align], align);
    assert.equal(mid.byteOffset, align * 4);
    assert.deepEqual(
      (await mid.read()).slice(0, 3),
      new Float32Array([align, align + 1, align + 2]),
    );
    using doubled = lincomb([mid], [2]); // the view bound at its offset
    assert.equal((await doubled.read())[1], 2 * (align + 1));
    rt.write(t.view([align], 2 * align), new Float32Array(align).fill(-1)); // writes the last row only
    const all = await t.read();
    assert.equal(all[align - 1], align - 1);
    assert.equal(all[2 * align - 1], 2 * align - 1);
    assert.equal(all[2 * align], -1);
    using c = rt.empty([align]);
    rt.copy(mid, c);
    assert.equal((await c.read())[0], align);
    assert.equal(mid.reshape([1, align]).byteOffset, mid.byteOffset, "a reshape keeps the offset");
    assert.throws(() => t.view([align + 1], 2 * align), /does not fit/);
    if (align > 1) {
      assert.throws(() => unary(t.view([4], 1), "relu"), /minStorageBufferOffsetAlignment/);
    }
  },
});
