import assert from "node:assert/strict";
import { lincomb } from "../../src/ops/elementwise.ts";
import { encodePrompt } from "../../src/pipeline/encode.ts";
import { loadPipeline } from "../../src/pipeline/load.ts";
import { sampleLatents } from "../../src/pipeline/sample.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { assertClose, errorStats, modelDir, randomArray } from "../util.ts";

Deno.test({
  name: "SD-Turbo style: trailing Euler, 1 step, guidance 0 runs the cond batch once: x − σ·ε",
  ignore: modelDir("tiny-sd15") === undefined,
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime();
    const base = await loadPipeline(modelDir("tiny-sd15")!, { dtype: "f32", runtime: rt });
    // SD-Turbo's scheduler config: EulerDiscreteScheduler with trailing spacing
    const pipe = {
      ...base,
      schedulerConfig: {
        ...base.schedulerConfig,
        _class_name: "EulerDiscreteScheduler",
        timestep_spacing: "trailing",
        steps_offset: 0,
      },
    };
    try {
      const embeds = await encodePrompt(pipe, "a cat");
      const start = randomArray(4 * 16 * 16, 3, -1, 1);
      const steps = [];
      for await (
        const s of sampleLatents(pipe, embeds, { steps: 1, guidance: 0, latents: start })
      ) {
        steps.push({ t: s.timestep, latents: await s.latents.read() });
        s.latents.dispose();
      }
      assert.equal(steps.length, 1);
      assert.equal(steps[0].t, 999);
      // the reference: one cond-only U-Net call on x / √(σ² + 1), then x − σ·ε
      const sigma = 14.614640235900879; // σ at t = 999 of the SD schedule (float32)
      const x = rt.upload(start, [1, 4, 16, 16]);
      const input = lincomb([x], [1 / Math.sqrt(sigma * sigma + 1)]);
      const eps = base.unet.forward(input, { timestep: 999, encoderHiddenStates: embeds.cond });
      const ref = await lincomb([x, eps], [1, -sigma]).read();
      const st = errorStats(steps[0].latents, ref);
      assertClose(steps[0].latents, ref, { atol: 1e-4 * st.scale, rtol: 0, label: "turbo step" });
      for (const t of [x, input, eps]) t.dispose();
      embeds.dispose();
    } finally {
      base.dispose();
    }
  },
});
