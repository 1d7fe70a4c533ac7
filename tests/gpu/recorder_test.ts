import assert from "node:assert/strict";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { lincomb, unary } from "../../src/ops/elementwise.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";

const HEAVY = {
  kernel: "t_heavy",
  text: [
    "@group(0) @binding(1) var<storage, read_write> y: array<f32>;",
    "@compute @workgroup_size(64)",
    "fn main(@builtin(global_invocation_id) g: vec3<u32>) {",
    "  var s = y[g.x];",
    "  for (var i = 0u; i < {{ n }}u; i++) { s = s + sin(f32(i + g.x)) * 1e-9; }",
    "  y[g.x] = s;",
    "}",
  ].join("\n"),
};

/** Runs `fn` with the runtime's recorder switches set, restoring them afterwards. */
async function withRecorder<T>(
  rt: Runtime,
  opts: Partial<Runtime["recorder"]>,
  fn: () => Promise<T>,
): Promise<T> {
  const saved = { ...rt.recorder };
  Object.assign(rt.recorder, opts);
  try {
    return await fn();
  } finally {
    Object.assign(rt.recorder, saved);
  }
}

Deno.test({
  name: "recorder: bind groups are created once per (pipeline, uniforms, buffers) and reused",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const x = rt.upload(new Float32Array([-1, 2, -3, 4]), [4]);
    const step = async () => {
      const y = unary(x, "relu");
      const z = unary(y, "scale", { alpha: 2, beta: 1 });
      const v = await z.read();
      y.dispose();
      z.dispose();
      return v;
    };
    assert.deepEqual(await step(), new Float32Array([1, 5, 1, 9]));
    const s0 = rt.stats();
    assert.deepEqual(await step(), new Float32Array([1, 5, 1, 9]));
    const s1 = rt.stats();
    assert.equal(s1.dispatches - s0.dispatches, 2);
    assert.equal(s1.bindGroups - s0.bindGroups, 0, "the same buffers and uniforms: no new group");
    assert.equal(s1.uniformBytes - s0.uniformBytes, 0, "unchanged uniforms are not rewritten");
    // different uniform contents on the same buffers: a new slot, a new group, right values
    const y = unary(x, "scale", { alpha: -1, beta: 0 });
    assert.deepEqual(await y.read(), new Float32Array([1, -2, 3, -4]));
    assert.ok(rt.stats().bindGroups > s1.bindGroups);
    y.dispose();
    // and the plain path gives the same values, creating a group per dispatch
    await withRecorder(rt, { cacheBindGroups: false, reuseUniforms: false }, async () => {
      const s2 = rt.stats();
      assert.deepEqual(await step(), new Float32Array([1, 5, 1, 9]));
      assert.equal(rt.stats().bindGroups - s2.bindGroups, 2);
    });
    x.dispose();
  },
});

Deno.test({
  name: "recorder: many distinct uniforms in one submit each keep their own values",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const x = rt.upload(new Float32Array([1, 2]), [2]);
    const outs = Array.from({ length: 700 }, (_, i) => lincomb([x], [i]));
    const last = await outs[699].read();
    assert.deepEqual(last, new Float32Array([699, 1398]));
    for (const i of [0, 1, 255, 256, 257, 511, 512]) {
      assert.deepEqual(await outs[i].read(), new Float32Array([i, 2 * i]), `lincomb ${i}`);
    }
    for (const o of outs) o.dispose();
    x.dispose();
  },
});

Deno.test({
  name: "recorder: an upload while recording is staged in stream order, without a submit",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    for (const stageUploads of [true, false]) {
      await withRecorder(rt, { stageUploads }, async () => {
        await rt.sync();
        const x = rt.upload(new Float32Array([1, -2, 3, -4]), [4]);
        const s0 = rt.stats();
        const y = unary(x, "relu"); // recorded, reads x's buffer
        const buf = x.buffer;
        x.dispose(); // stream-ordered: the buffer may be handed out again at once
        const z = rt.upload(new Float32Array([5, 6, 7, 8]), [4]);
        assert.equal(z.buffer, buf, "the test needs the freed buffer to be reused");
        const w = unary(z, "relu");
        const s1 = rt.stats();
        assert.equal(s1.submits - s0.submits, stageUploads ? 0 : 1);
        assert.equal(s1.stagedUploads - s0.stagedUploads, stageUploads ? 1 : 0);
        assert.deepEqual(await y.read(), new Float32Array([1, 0, 3, 0]));
        assert.deepEqual(await w.read(), new Float32Array([5, 6, 7, 8]));
        for (const t of [y, z, w]) t.dispose();
      });
    }
    // a large upload (its own staging buffer), odd byte length
    const n = 300_001;
    const big = new Float32Array(n).map((_, i) => i % 7);
    const a = rt.empty([1]);
    unary(a, "relu").dispose();
    const t = rt.upload(Float16Array.from(big), [n], { dtype: rt.gpu.hasF16 ? "f16" : "f32" });
    const back = await t.read();
    assert.equal(back[n - 1], big[n - 1]);
    assert.equal(back[12345], big[12345]);
    a.dispose();
    t.dispose();
  },
});

Deno.test({
  name: "recorder: discard() drops recorded work; nothing of it runs",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const x = rt.upload(new Float32Array([1, 2, 3]), [3]);
    const t = rt.upload(new Float32Array([7, 8, 9]), [3]);
    await rt.sync();
    lincomb([x], [5], { out: t }); // recorded, then dropped
    const staged = rt.upload(new Float32Array([9, 9, 9]), [3]);
    rt.discard();
    assert.deepEqual(await t.read(), new Float32Array([7, 8, 9]));
    const z = lincomb([x], [2]);
    assert.deepEqual(await z.read(), new Float32Array([2, 4, 6]));
    for (const u of [x, t, z, staged]) u.dispose();
  },
});

Deno.test({
  name: "idle(): timers fire while the GPU works, and only the first batch blocks for long",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const { registerTemplate } = await import("../../src/gpu/kernel.ts");
    registerTemplate(HEAVY.kernel, HEAVY.text);
    const y = rt.empty([64 * 64]);
    lincomb([y], [0], { out: rt.empty([64 * 64]) }).dispose();
    const heavy = () =>
      rt.dispatch({
        key: { kernel: HEAVY.kernel, params: { n: 20000 } },
        bindings: [y],
        grid: [64],
      });
    heavy();
    await rt.sync(); // compiled
    const blocked: number[] = [];
    const slept: number[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      for (let i = 0; i < 4; i++) {
        heavy();
        await rt.flush();
        await rt.idle("heavy test batch");
        blocked.push(rt.pacing.blockedMs);
        slept.push(rt.pacing.sleptMs);
      }
    } finally {
      clearInterval(timer);
    }
    y.dispose();
    const gpuMs = blocked[0];
    if (gpuMs < 20) return; // too fast an adapter to tell waiting from blocking
    assert.ok(ticks > 0, "an interval ticked during the batches");
    // once the pacer has measured a batch, most of each wait is spent asleep (event loop free)
    const sleptLater = slept[2] + slept[3], blockedLater = blocked[2] + blocked[3];
    assert.ok(
      sleptLater > blockedLater,
      `batches 2-3 slept ${sleptLater.toFixed(1)} ms and blocked ${blockedLater.toFixed(1)} ms; ` +
        `the first blocked ${gpuMs.toFixed(1)} ms`,
    );
  },
});
