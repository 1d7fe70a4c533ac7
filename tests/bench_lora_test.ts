import assert from "node:assert/strict";
import { benchLora } from "../bench/lora.ts";
import { GPU_TEST, testRuntime } from "./gpu_util.ts";
import { modelDir } from "./util.ts";

Deno.test({
  name: "bench lora: merge and on-the-fly timings on the tiny model (shapes of a real LoRA run)",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const report = await benchLora(rt, {
      model: modelDir("tiny-sd15"),
      res: 64,
      rank: 4,
      repeats: 1,
      locon: true,
      dtype: "f32",
    });
    assert.ok(report.layers > 50, `${report.layers} adapted layers`);
    assert.ok(report.onTheFly.layers > 0 && report.onTheFly.convLayersNotTimed > 0);
    assert.equal(report.onTheFly.extraDispatchesPerCall, 2 * report.onTheFly.layers);
    for (const ms of [report.loadMs, report.firstMergeMs, report.switchMs, report.removeMs]) {
      assert.ok(Number.isFinite(ms) && ms > 0);
    }
    assert.ok(report.mergeGflop > 0 && report.onTheFly.extraGflopPerCall > 0);
    assert.ok(Number.isFinite(report.breakEvenCalls));
  },
});
