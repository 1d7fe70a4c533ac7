import assert from "node:assert/strict";
import { paramShapes, unetLayers } from "../bench/flops.ts";
import { benchPipeline, TINY_MODEL } from "../bench/pipeline.ts";
import { initFor, randomNormal, randomTensor, RandomWeights } from "../bench/random_weights.ts";
import { HOST_FEATURES } from "../bench/unet_host.ts";
import { archConfig, benchUnetStep } from "../bench/unet_step.ts";
import { compareReports, formatReport } from "../bench/unet_step_report.ts";
import { decodePng } from "../src/io/png.ts";
import { UNet2DConditionModel } from "../src/models/unet.ts";
import { GPU_TEST, testRuntime } from "./gpu_util.ts";

const KERNELS = ["gemm", "conv2d", "norm", "attention", "layout", "geglu"];

function f16Values(t: { data: Uint8Array | Float32Array }): Float32Array {
  const d = t.data as Uint8Array;
  return Float32Array.from(new Float16Array(d.buffer, d.byteOffset, d.byteLength / 2));
}

Deno.test("random weights are deterministic per key and seed, scaled by fan-in", () => {
  const shape = [64, 32, 3, 3];
  const a = randomTensor("down_blocks.0.resnets.0.conv1.weight", shape, { seed: 3, dtype: "f32" });
  const b = randomTensor("down_blocks.0.resnets.0.conv1.weight", shape, { seed: 3, dtype: "f32" });
  const c = randomTensor("down_blocks.0.resnets.0.conv1.weight", shape, { seed: 4, dtype: "f32" });
  const d = randomTensor("down_blocks.0.resnets.0.conv2.weight", shape, { seed: 3, dtype: "f32" });
  assert.deepEqual(a.data, b.data);
  assert.notDeepEqual(a.data, c.data);
  assert.notDeepEqual(a.data, d.data);
  const v = a.data as Float32Array;
  const mean = v.reduce((s, x) => s + x, 0) / v.length;
  const variance = v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length;
  const want = 1 / (32 * 9);
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance / want - 1) < 0.05, `variance ${variance}, want ${want}`);
  const h = randomTensor("down_blocks.0.resnets.0.conv1.weight", shape, { seed: 3, dtype: "f16" });
  assert.equal(h.dtype, "F16");
  const hv = f16Values(h);
  const worst = hv.reduce((m, x, i) => Math.max(m, Math.abs(x - v[i])), 0);
  assert.ok(worst < 1e-3, `f16 values differ from f32 by up to ${worst}`);
  assert.deepEqual(initFor("mid_block.resnets.0.norm1.weight", [1280]), { kind: "one" });
  assert.deepEqual(initFor("conv_in.bias", [320]), { kind: "uniform", bound: 0.01 });
  const norm = randomTensor("norm.weight", [5], { seed: 0, dtype: "f32" });
  assert.deepEqual([...(norm.data as Float32Array)], [1, 1, 1, 1, 1]);
  const z = randomNormal(20001, 7);
  const zm = z.reduce((s, x) => s + x, 0) / z.length;
  const zv = z.reduce((s, x) => s + (x - zm) ** 2, 0) / z.length;
  assert.ok(Math.abs(zm) < 0.03 && Math.abs(zv - 1) < 0.05, `N(0,1)? mean ${zm}, var ${zv}`);
});

Deno.test({
  name: "random weights for the tiny config load strictly into the U-Net",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const config = await archConfig("tiny");
    const shapes = paramShapes(unetLayers(config, { height: 8, width: 8 }));
    const weights = new RandomWeights(shapes, { seed: 0, dtype: "f32" });
    assert.equal(weights.size, shapes.size);
    assert.equal([...weights.keys()].length, shapes.size);
    const unet = UNet2DConditionModel.load(rt, { tensors: weights, config, dtype: "f32" });
    assert.deepEqual(unet.unused, []);
    unet.dispose();
    await assert.rejects(() => archConfig("sd15", { base: 512 }), /--base applies to --arch sd21/);
    assert.equal((await archConfig("sd21", { base: 512 })).sample_size, 64);
    assert.equal((await archConfig("sd21")).sample_size, 96);
  },
});

Deno.test({
  name: "unet_step on the tiny U-Net: step times, per-block GPU times, report and compare",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const r = await benchUnetStep(rt, { arch: "tiny", res: 64, steps: 2, warmup: 1, top: 5 });
    assert.equal(r.latent, 8);
    assert.equal(r.step.times.length, 2);
    assert.ok(r.step.medianMs > 0 && r.step.p90Ms >= r.step.medianMs);
    assert.ok(Math.abs(r.tflops - r.flops.total / (r.step.medianMs * 1e9)) < 1e-12);
    assert.equal(r.output?.nonFinite, 0);
    assert.ok(r.output!.maxAbs > 0);
    assert.ok(r.memory.weightsBytes > 0 && r.memory.peakBytes > r.memory.weightsBytes);
    assert.ok(rt.gpu.hasTimestamps, "the test adapter should have timestamp-query");
    const p = r.profile!;
    assert.deepEqual(p.blocks.map((b) => b.block), [
      "down_blocks.0",
      "down_blocks.1",
      "down_blocks.2",
      "down_blocks.3",
      "mid_block",
      "up_blocks.0",
      "up_blocks.1",
      "up_blocks.2",
      "up_blocks.3",
      "other",
    ]);
    const sum = p.blocks.reduce((s, b) => s + b.ms, 0);
    assert.ok(Math.abs(sum - p.gpuMs) < 1e-6 * Math.max(1, p.gpuMs), `${sum} vs ${p.gpuMs}`);
    const block = (name: string) => p.blocks.find((b) => b.block === name)!;
    // DownBlock2D / UpBlock2D have no transformers; only the first three levels downsample.
    assert.equal(block("down_blocks.3").parts.attention, 0);
    assert.equal(block("up_blocks.0").parts.attention, 0);
    assert.equal(block("down_blocks.3").parts.sampler, 0);
    assert.equal(block("up_blocks.3").parts.sampler, 0);
    assert.ok(block("down_blocks.0").parts.attention > 0 && block("mid_block").parts.resnet > 0);
    assert.ok(block("up_blocks.0").parts.sampler > 0 && block("other").parts.other > 0);
    assert.equal(p.kernels.length, 5);
    assert.ok(p.families.some((f) => f.kernel === "attention"));
    const text = formatReport(r);
    assert.match(text, /effective: .* TFLOP\/s/);
    assert.match(text, /up_blocks\.3/);
    const slower = structuredClone(r);
    slower.step.medianMs *= 2;
    slower.dtype = "f32";
    const cmp = compareReports(r, slower);
    assert.match(cmp, /step median ms .* -50\.0%/);
    assert.match(cmp, /dtype differs: f32 → f16/);
    assert.equal(r.host.variants.length, 1);
    assert.ok(r.counters && r.counters.dispatches === r.host.variants[0].dispatches);
    assert.equal(r.counters.submits, 1, "one submit per step");
    assert.match(text, /host side of one call/);
    // the host-side ladder: plain, then one more change each; the cache removes bind groups and
    // the fusions remove dispatches, ending at what the timed steps record
    const h = await benchUnetStep(rt, {
      arch: "tiny",
      res: 64,
      steps: 0,
      compare: "ladder",
      rounds: 2,
    });
    const names = h.host.variants.map((v) => v.name);
    assert.deepEqual(names, ["plain", ...HOST_FEATURES.map((f) => `+${f.name}`)]);
    const [plain, , cached] = h.host.variants;
    const all = h.host.variants.at(-1)!;
    assert.equal(plain.bindGroups, plain.dispatches);
    assert.ok(cached.bindGroups < plain.dispatches / 10, `${cached.bindGroups} groups per call`);
    assert.equal(cached.dispatches, plain.dispatches, "the recorder's caches change no dispatch");
    assert.equal(all.dispatches, r.counters.dispatches);
    assert.ok(all.dispatches < 0.75 * plain.dispatches, `${all.dispatches} of ${plain.dispatches}`);
    assert.ok(h.host.variants.every((v) => v.recordMs.length === 2 && v.medianMs > 0));
    assert.equal(h.counters, null);
    assert.equal(h.output, null, "--steps 0 runs nothing on the GPU");
    await assert.rejects(() => benchUnetStep(rt, { arch: "tiny", compare: "nope" }), /unknown/);
    await assert.rejects(() => benchUnetStep(rt, { arch: "tiny", res: 96 }), /multiple of 64/);
    await assert.rejects(() => benchUnetStep(rt, { arch: "tiny", batch: 3 }), /--batch/);
    await assert.rejects(
      () => benchUnetStep(rt, { arch: "tiny", checkpoint: TINY_MODEL }),
      /not both/,
    );
  },
});

Deno.test({
  name: "unet_step loads a checkpoint folder instead of random weights",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const r = await benchUnetStep(rt, {
      checkpoint: TINY_MODEL,
      res: 64,
      batch: 1,
      dtype: "f32",
      steps: 1,
      warmup: 0,
    });
    assert.equal(r.model, TINY_MODEL);
    assert.equal(r.weights, "checkpoint");
    assert.equal(r.batch, 1);
    assert.equal(r.memory.paramBytes, 4 * 2_446_788);
    assert.equal(r.output?.nonFinite, 0);
  },
});

Deno.test({
  name: "pipeline bench on tiny-sd15 times every stage and writes the PNG",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    const out = await Deno.makeTempFile({ suffix: ".png" });
    try {
      const r = await benchPipeline({ steps: 2, runs: 1, res: 64, out, dtype: "f32" });
      assert.equal(rt.gpu.adapterName, r.adapter);
      assert.equal(r.runs.length, 1);
      const run = r.runs[0];
      assert.equal(run.stepMs.length, run.calls);
      assert.ok(run.calls >= 2, `${run.calls} U-Net calls for 2 steps`);
      for (const k of ["encodeMs", "denoiseMs", "decodeMs", "pngMs"] as const) {
        assert.ok(run[k] > 0, `${k} = ${run[k]}`);
      }
      assert.ok(run.totalMs >= run.encodeMs + run.denoiseMs + run.decodeMs + run.pngMs - 1e-6);
      assert.ok(r.flops.step > 0 && r.flops.decode > 0);
      const png = decodePng(await Deno.readFile(out));
      assert.equal(png.width, 64);
      assert.equal(png.height, 64);
    } finally {
      await Deno.remove(out);
    }
  },
});
