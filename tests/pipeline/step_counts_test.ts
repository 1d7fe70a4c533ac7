import assert from "node:assert/strict";
import { readNpy } from "../../src/io/npy.ts";
import { stepCounts } from "../../src/pipeline/sample.ts";
import { createScheduler } from "../../src/schedulers/mod.ts";
import { dumpDir } from "../util.ts";

const SD15 = {
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  skip_prk_steps: true,
  steps_offset: 1,
};

Deno.test("step counts: what the user asked for, as diffusers' progress bar and A1111 count", () => {
  const count = (name: string, steps: number) => {
    const s = createScheduler(name, SD15, { steps });
    return stepCounts(s.timesteps.length, steps, s.order);
  };
  assert.deepEqual(count("pndm", 4), [0, 1, 2, 3, 4], "PLMS --steps 4: 5 calls, 4 steps");
  assert.deepEqual(count("euler_a", 4), [1, 2, 3, 4]);
  assert.deepEqual(count("heun", 4), [0, 1, 1, 2, 2, 3, 4], "two calls per step, the last one");
  assert.deepEqual(count("pndm", 1), [1], "one step is one call");
});

Deno.test("step counts: a step ends where diffusers' two-call samplers finish one (step_first_order)", async () => {
  for (const run of ["tiny-sd15__heun_64", "tiny-sd15__kdpm2_a_64"]) {
    const dir = dumpDir(run);
    if (!dir) continue;
    const first = (await readNpy(new URL("step_first_order.npy", dir))).data as Int32Array;
    const counts = stepCounts(first.length, 4, 2);
    for (let i = 0; i < first.length; i++) {
      const finished = counts[i] - (i > 0 ? counts[i - 1] : 0);
      const want = first[i] === 0 || i === first.length - 1 ? 1 : 0;
      assert.equal(finished, want, `${run} call ${i}`);
    }
  }
});
