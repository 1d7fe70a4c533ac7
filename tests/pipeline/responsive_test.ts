import assert from "node:assert/strict";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { loadPipeline, type Pipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { modelDir } from "../util.ts";

const MODEL = modelDir("tiny-sd15");

let pipe: Promise<Pipeline> | undefined;
function tinyPipe(): Promise<Pipeline> {
  pipe ??= testRuntime().then((runtime) => loadPipeline(MODEL!, { dtype: "f32", runtime }));
  return pipe;
}

/** Runs `steps` steps, returning when each step was yielded (ms) and the ticks seen by then. */
async function run(
  p: Pipeline,
  options: { steps: number; signal?: AbortSignal; ticks?: () => number },
): Promise<{ at: number[]; ticks: number[]; end: number }> {
  const embeds = await encodePrompt(p, "a red apple");
  const at: number[] = [];
  const ticks: number[] = [];
  for await (
    const _ of sampleLatents(p, embeds, { steps: options.steps, seed: 1, signal: options.signal })
  ) {
    at.push(performance.now());
    ticks.push(options.ticks?.() ?? 0);
  }
  const end = performance.now();
  embeds.dispose();
  return { at, ticks, end };
}

Deno.test({
  name: "sampling: an interval ticks during every step after the first",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tinyPipe();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      const r = await run(p, { steps: 4, ticks: () => ticks });
      await p.rt.sync();
      const per = r.ticks.map((t, i) => (i === 0 ? t : t - r.ticks[i - 1]));
      const stepMs = r.at.slice(1).map((t, i) => t - r.at[i]);
      // only a step long enough to tick in says anything (a fast GPU may finish in < 5 ms)
      for (let i = 2; i < per.length; i++) {
        if (stepMs[i - 1] < 50) continue;
        assert.ok(per[i] > 0, `no timer ran during step ${i} (${stepMs[i - 1].toFixed(0)} ms)`);
      }
    } finally {
      clearInterval(timer);
    }
  },
});

Deno.test({
  name: "sampling: AbortSignal.timeout stops a long run within one step",
  ignore: MODEL === undefined,
  ...GPU_TEST,
  fn: async () => {
    const p = await tinyPipe();
    const warm = await run(p, { steps: 2 }); // compiles, and tells how long a step takes
    await p.rt.sync();
    const step = Math.max(...warm.at.slice(1).map((t, i) => t - warm.at[i]), 20);
    const signal = AbortSignal.timeout(Math.round(2.5 * step));
    let abortedAt = 0;
    let submitsAtAbort = 0;
    signal.addEventListener("abort", () => {
      abortedAt = performance.now();
      submitsAtAbort = p.rt.stats().submits;
    });
    const r = await run(p, { steps: 200, signal });
    const submitsAfter = p.rt.stats().submits;
    const t0 = performance.now();
    await p.rt.sync();
    const drainMs = performance.now() - t0;
    assert.ok(abortedAt > 0, "the timeout fired");
    assert.ok(r.at.length < 200, `the run stopped early (${r.at.length} steps)`);
    assert.ok(r.at.every((t) => t <= abortedAt), "no step was yielded after the abort");
    assert.equal(submitsAfter, submitsAtAbort, "no U-Net call was submitted after the abort");
    const slack = 300;
    assert.ok(
      r.end - abortedAt < step + slack,
      `the loop ended ${(r.end - abortedAt).toFixed(0)} ms after the abort (a step: ` +
        `${step.toFixed(0)} ms)`,
    );
    assert.ok(
      drainMs < step + slack,
      `the GPU was busy ${drainMs.toFixed(0)} ms after the loop ended (a step: ${
        step.toFixed(0)
      } ms)`,
    );
  },
});
