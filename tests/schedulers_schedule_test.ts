import assert from "node:assert/strict";
import { a1111Name, a1111ScheduleType, createScheduler, SAMPLERS } from "../src/schedulers/mod.ts";

const SD15 = {
  _class_name: "PNDMScheduler",
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  skip_prk_steps: true,
  steps_offset: 1,
};

/** The σ of each step (for two-call samplers, the first call of each step). */
function stepSigmas(name: string, options: { steps: number; schedule?: "karras" | "exponential" }) {
  const s = createScheduler(name, SD15, options);
  const per = s.order;
  const sig = s.sigmas!.slice(0, s.timesteps.length).filter((_, i) => i % per === 0);
  return { s, sig };
}

Deno.test("schedule exponential: σ evenly spaced in log σ over Karras' range, for every sigma sampler", () => {
  const sigmaSamplers = SAMPLERS.filter((r) => r.options.includes("karras")).map((r) => r.kind);
  assert.ok(sigmaSamplers.length >= 10, sigmaSamplers.join());
  for (const name of sigmaSamplers) {
    const steps = 10;
    const { s, sig } = stepSigmas(name, { steps, schedule: "exponential" });
    const karras = stepSigmas(name, { steps, schedule: "karras" }).sig;
    assert.equal(sig.length, steps, name);
    const [hi, lo] = [sig[0], sig[steps - 1]];
    assert.ok(
      Math.abs(hi / karras[0] - 1) < 1e-6 && Math.abs(lo / karras[steps - 1] - 1) < 1e-6,
      name,
    );
    for (let i = 0; i < steps; i++) {
      const want = Math.exp(Math.log(hi) + (i / (steps - 1)) * (Math.log(lo) - Math.log(hi)));
      assert.ok(Math.abs(sig[i] / want - 1) < 1e-6, `${name} σ[${i}] ${sig[i]} vs ${want}`);
    }
    assert.equal(s.config.use_exponential_sigmas, true);
    assert.equal(a1111Name(s), SAMPLERS.find((r) => r.kind === name)!.a1111, name);
    assert.equal(a1111ScheduleType(s), "Exponential");
    const starts = s.timesteps.filter((_, i) => i % s.order === 0); // each step's first call
    for (let i = 1; i < starts.length; i++) {
      assert.ok(starts[i] <= starts[i - 1], `${name} timesteps descend`);
    }
  }
  // the DPM-Solver family truncates timesteps to integers (newer diffusers' astype(int64))
  assert.ok(
    stepSigmas("dpm++2m", { steps: 10, schedule: "exponential" }).s.timesteps.every(
      Number.isInteger,
    ),
  );
  assert.ok(
    !stepSigmas("euler", { steps: 10, schedule: "exponential" }).s.timesteps.every(
      Number.isInteger,
    ),
  );
});

Deno.test("schedule: the config's use_exponential_sigmas works as in diffusers; conflicts are refused", () => {
  const viaConfig = createScheduler("EulerDiscreteScheduler", {
    ...SD15,
    use_exponential_sigmas: true,
  }, {
    steps: 6,
  });
  const viaOption = createScheduler("euler", SD15, { steps: 6, schedule: "exponential" });
  assert.deepEqual(viaConfig.sigmas, viaOption.sigmas);
  assert.deepEqual(
    createScheduler("euler", SD15, { steps: 6, schedule: "karras" }).sigmas,
    createScheduler("Euler Karras", SD15, { steps: 6 }).sigmas,
  );
  assert.deepEqual(
    createScheduler("euler", SD15, { steps: 6, schedule: "discrete" }).sigmas,
    createScheduler("euler", SD15, { steps: 6 }).sigmas,
  );
  assert.throws(
    () =>
      createScheduler("euler", { ...SD15, use_exponential_sigmas: true, use_karras_sigmas: true }, {
        steps: 4,
      }),
    /use_karras_sigmas and use_exponential_sigmas are both true/,
  );
  assert.throws(
    () => createScheduler("DPM++ 2M Karras", SD15, { steps: 4, schedule: "discrete" }),
    /asks for Karras sigmas but the schedule is discrete/,
  );
  assert.throws(
    () => createScheduler("ddim", SD15, { steps: 4, schedule: "exponential" }),
    /the exponential schedule applies to the sigma samplers \(euler, .*\), not ddim/,
  );
  // discrete is every sampler's own grid, so it is accepted everywhere
  assert.equal(createScheduler("ddim", SD15, { steps: 4, schedule: "discrete" }).kind, "ddim");
});

Deno.test("sampler names: sd.cpp methods without a row say so and name the closest", () => {
  assert.throws(
    () => createScheduler("dpm++2mv2", SD15, { steps: 4 }),
    /^RangeError: stable-diffusion\.cpp's "dpm\+\+2mv2" has no equivalent here yet; dpm\+\+2m is the closest/,
  );
  for (const n of ["dpm++2s_a", "ipndm", "ipndm_v", "TCD"]) {
    assert.throws(
      () => createScheduler(n, SD15, { steps: 4 }),
      /has no equivalent here yet; .* closest/,
    );
  }
});
