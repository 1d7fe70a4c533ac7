import assert from "node:assert/strict";
import {
  a1111Name,
  createScheduler,
  resolveSchedulerName,
  SAMPLERS,
  SCHEDULER_NAMES,
} from "../src/schedulers/mod.ts";
import { runPlanCpu, sampleCpu } from "../src/schedulers/cpu.ts";
import type { Scheduler, SchedulerConfig } from "../src/schedulers/common.ts";
import { karrasSigmas, sigmaToT, torchLinspaceF32 } from "../src/schedulers/common.ts";
import { assertClose, errorStats, fixture, FIXTURES, randomArray } from "./util.ts";

const RUNS = [
  "tiny-sd15__ddim",
  "tiny-sd15__pndm",
  "tiny-sd15__euler",
  "tiny-sd15__euler_a",
  "tiny-sd15__dpmpp2m",
  "tiny-sd15__lcm",
  "tiny-sd2__ddim_v",
];

/** The SD 1.5 `scheduler_config.json` (PNDM). */
const SD15: SchedulerConfig = {
  _class_name: "PNDMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  trained_betas: null,
  skip_prk_steps: true,
  set_alpha_to_one: false,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 1,
  clip_sample: false,
};

/** SD-Turbo's `scheduler_config.json`. */
const SD_TURBO: SchedulerConfig = {
  ...SD15,
  _class_name: "EulerDiscreteScheduler",
  interpolation_type: "linear",
  timestep_spacing: "trailing",
  use_karras_sigmas: false,
};

interface Manifest {
  args: { steps: number; eta: number; karras: boolean };
  scheduler_class: string;
  scheduler_config: SchedulerConfig;
  init_noise_sigma: number;
}

/** Slice `k` of a stacked fixture. */
const at = (a: { shape: number[]; data: Float32Array }, k: number) => {
  const n = a.data.length / a.shape[0];
  return a.data.subarray(k * n, (k + 1) * n);
};

/** Asserts within `tol` of the reference's max |value|, labelled. */
function closeToScale(got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, label: string) {
  const { scale } = errorStats(got, ref);
  assertClose(got, ref, { atol: tol * scale, rtol: 0, label });
}

for (const run of RUNS) {
  Deno.test(`schedulers: ${run} replays the diffusers run`, async () => {
    const dir = `dumps/${run}/`;
    const m: Manifest = JSON.parse(
      await Deno.readTextFile(new URL(dir + "manifest.json", FIXTURES)),
    );
    const s = createScheduler(m.scheduler_class, m.scheduler_config, {
      steps: m.args.steps,
      eta: m.args.eta,
      karras: m.args.karras,
    });
    const ts = await fixture(dir + "sched_timesteps.npy");
    assert.deepEqual(s.timesteps, Array.from(ts.data), `${run}: timesteps`);
    assertClose(s.alphasCumprod, (await fixture(dir + "sched_alphas_cumprod.npy")).data, {
      atol: 0,
      rtol: 0,
      label: `${run} alphas_cumprod`,
    });
    let sigmas: Float32Array | undefined;
    try {
      sigmas = (await fixture(dir + "sched_sigmas.npy")).data;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    assert.equal(s.sigmas !== undefined, sigmas !== undefined, `${run}: has sigmas`);
    if (sigmas) assertClose(s.sigmas!, sigmas, { atol: 0, rtol: 1e-7, label: `${run} sigmas` });
    assertClose([s.initNoiseSigma], [m.init_noise_sigma], { atol: 0, rtol: 1e-7 });

    const latIn = await fixture(dir + "step_latents_in.npy");
    const modelIn = await fixture(dir + "step_model_input.npy");
    const pred = await fixture(dir + "step_noise_pred.npy");
    const latOut = await fixture(dir + "step_latents_out.npy");
    const counts = (await fixture(dir + "step_noise_count.npy")).data;
    const noise = counts.some((c) => c > 0) ? await fixture(dir + "step_noise.npy") : undefined;
    const init = await fixture(dir + "latents_init.npy");
    assert.equal(latIn.shape[0], s.timesteps.length);

    let draws = 0;
    const randn = (n: number) => {
      assert.ok(noise && draws < noise.shape[0], `${run}: more noise draws than diffusers made`);
      const z = at(noise, draws++);
      assert.equal(z.length, n);
      return z;
    };
    let drawsBefore = 0;
    const final = sampleCpu(s, (await fixture(dir + "latents_init_noise.npy")).data, {
      model: (x, t, i) => {
        assert.equal(t, s.timesteps[i]);
        closeToScale(x, at(modelIn, i), 1e-6, `${run} model input ${i}`);
        return at(pred, i);
      },
      randn,
      onStep: (i, latents) => {
        assert.equal(draws - drawsBefore, counts[i], `${run}: noise draws at step ${i}`);
        drawsBefore = draws;
        closeToScale(latents, at(latOut, i), 2e-6, `${run} latents after step ${i}`);
      },
    });
    assert.equal(draws, noise?.shape[0] ?? 0);
    closeToScale(final, (await fixture(dir + "latents_final.npy")).data, 2e-6, `${run} final`);

    // scaleModelInput on the reference's own step inputs, and the initial latents
    for (let i = 0; i < s.timesteps.length; i++) {
      const x = at(latIn, i).map((v) => v * s.scaleModelInput(i));
      closeToScale(x, at(modelIn, i), 1e-6, `${run} scaleModelInput(${i})`);
    }
    const noise0 = (await fixture(dir + "latents_init_noise.npy")).data;
    closeToScale(noise0.map((v) => v * s.initNoiseSigma), init.data, 1e-7, `${run} latents_init`);
  });
}

/** Every lincomb has 1–4 terms and never reads its destination; writes stay in `buffers`. */
function checkPlanShape(s: Scheduler) {
  for (let i = 0; i < s.timesteps.length; i++) {
    const plan = s.step(i);
    assert.equal(plan.output, "prev_sample");
    for (const op of plan.ops) {
      assert.ok(s.buffers.includes(op.dst), `${s.kind}: ${op.dst} is not in buffers`);
      assert.notEqual(op.dst, "sample");
      if (op.op === "lincomb") {
        assert.ok(
          op.terms.length >= 1 && op.terms.length <= 4,
          `${s.kind}: ${op.terms.length} terms`,
        );
        assert.ok(op.terms.every((t) => t.src !== op.dst && Number.isFinite(t.coef)));
      }
    }
  }
}

Deno.test("schedulers: plans stay within 4-term, non-aliasing lincombs over listed buffers", () => {
  for (const name of SCHEDULER_NAMES.ours) {
    for (const steps of [1, 2, 5, 20]) {
      checkPlanShape(createScheduler(name, SD15, { steps }));
      const order3 = { ...SD15, solver_order: 3 };
      if (name === "dpmpp_2m") checkPlanShape(createScheduler(name, order3, { steps }));
    }
  }
  checkPlanShape(createScheduler("DDIM", SD15, { steps: 10, eta: 1 }));
});

Deno.test("schedulers: factory resolves our, A1111 and diffusers names in any case", () => {
  const cases: [string, string, boolean][] = [
    ["ddim", "ddim", false],
    ["PLMS", "pndm", false],
    ["euler", "euler", false],
    ["Euler a", "euler_a", false],
    ["EULER  A", "euler_a", false],
    ["dpm++ 2m", "dpmpp_2m", false],
    ["DPM++ 2M Karras", "dpmpp_2m", true],
    ["LCM", "lcm", false],
    ["DDIMScheduler", "ddim", false],
    ["PNDMScheduler", "pndm", false],
    ["EulerDiscreteScheduler", "euler", false],
    ["eulerancestraldiscretescheduler", "euler_a", false],
    ["DPMSolverMultistepScheduler", "dpmpp_2m", false],
    ["LCMScheduler", "lcm", false],
  ];
  for (const [name, kind, karras] of cases) {
    assert.equal(resolveSchedulerName(name).kind, kind, name);
    const s = createScheduler(name, SD15, { steps: 8 });
    assert.equal(s.kind, kind, name);
    assert.equal(s.config.use_karras_sigmas ?? false, karras, name);
  }
  assert.throws(
    () => createScheduler("DPM fast", SD15, { steps: 4 }),
    (e: Error) =>
      e.message.includes('unknown scheduler "DPM fast"') && e.message.includes("Euler a") &&
      e.message.includes("DPMSolverMultistepScheduler") && e.message.includes("dpmpp_2m") &&
      e.message.includes("dpm++2m"),
  );
});

Deno.test("schedulers: every registry row resolves by each of its names and builds", () => {
  const kinds = new Set<string>();
  for (const row of SAMPLERS) {
    assert.ok(!kinds.has(row.kind), `${row.kind} is listed twice`);
    kinds.add(row.kind);
    for (const name of [row.kind, ...row.sdcpp, ...(row.aliases ?? [])]) {
      assert.equal(resolveSchedulerName(name).kind, row.kind, name);
    }
    const byA1111 = resolveSchedulerName(row.a1111);
    assert.equal(byA1111.info.a1111, row.a1111);
    const s = createScheduler(row.kind, SD15, { steps: 6 });
    assert.ok(s.timesteps.length >= 6, row.kind);
    // the instance knows its row (ddim_trailing builds a DDIM with trailing spacing)
    assert.equal(a1111Name(s), row.a1111);
    for (const [key, value] of Object.entries(row.preset ?? {})) {
      assert.deepEqual(s.config[key], value, `${row.kind} presets ${key}`);
    }
    if (row.options.includes("karras")) {
      const k = createScheduler(`${row.a1111} Karras`, SD15, { steps: 6 });
      assert.equal(k.config.use_karras_sigmas, true, `${row.a1111} Karras`);
      assert.equal(a1111Name(k), `${row.a1111} Karras`);
      assert.equal(resolveSchedulerName(`${row.kind}_karras`).karras, true);
    } else {
      assert.throws(() => createScheduler(row.kind, SD15, { steps: 6, karras: true }), /karras/);
    }
  }
  assert.deepEqual(createScheduler("ddim_trailing", SD15, { steps: 4 }).timesteps, [
    999,
    749,
    499,
    249,
  ]);
  // a diffusers class name keeps the config as given (no preset)
  const lead = createScheduler("DDIMScheduler", SD15, { steps: 4 });
  assert.deepEqual(lead.timesteps, [751, 501, 251, 1]);
  assert.deepEqual(SCHEDULER_NAMES.sdcpp.slice(0, 3), ["euler", "euler_a", "dpm++2m"]);
});

Deno.test("schedulers: bad options and configs fail with the fix", () => {
  const fails = (f: () => unknown, text: string) =>
    assert.throws(f, (e: Error) => e.message.includes(text), text);
  fails(() => createScheduler("ddim", SD15, { steps: 4, karras: true }), "karras applies to euler");
  fails(() => createScheduler("euler", SD15, { steps: 4, eta: 0.5 }), "eta applies to ddim");
  fails(() => createScheduler("DPM++ 2M Karras", SD15, { steps: 4, karras: false }), "karras");
  fails(() => createScheduler("ddim", { ...SD15, clip_sample: true }, { steps: 4 }), "clip_sample");
  fails(
    () => createScheduler("PNDMScheduler", { ...SD15, skip_prk_steps: false }, { steps: 4 }),
    "skip_prk",
  );
  fails(
    () => createScheduler("euler", { ...SD15, prediction_type: "sample" }, { steps: 4 }),
    "epsilon",
  );
  fails(
    () => createScheduler("euler", { ...SD15, timestep_spacing: "even" }, { steps: 4 }),
    "trailing",
  );
  fails(
    () => createScheduler("euler", { ...SD15, beta_schedule: "cosine" }, { steps: 4 }),
    "beta_sche",
  );
  fails(
    () => createScheduler("ddim", { ...SD15, beta_start: "x" as unknown as number }, { steps: 4 }),
    '"beta_start"',
  );
  fails(() => createScheduler("euler", SD15, { steps: 0 }), "steps must be");
  fails(() => createScheduler("ddim", SD15, { steps: 1000 }), "timestep 1000");
  fails(() => createScheduler("lcm", SD15, { steps: 60 }), "original_inference_steps (50)");
  fails(() => createScheduler("dpmpp_2m", { ...SD15, solver_order: 4 }, { steps: 4 }), "1, 2 or 3");
  fails(
    () => createScheduler("euler", { ...SD15, rescale_betas_zero_snr: true }, { steps: 4 }),
    "rescale_betas_zero_snr",
  );
  const s = createScheduler("dpmpp_2m", SD15, { steps: 4 });
  s.step(0);
  fails(() => s.step(2), "1 is next");
  fails(() => createScheduler("euler", SD15, { steps: 2 }).step(2), "only 2 calls");
  s.reset();
  assert.equal(s.step(0).ops.length, 2);
});

Deno.test("schedulers: timestep grids for each spacing match NumPy's (round half to even)", () => {
  const grid = (name: string, spacing: string, steps: number, extra: SchedulerConfig = {}) =>
    createScheduler(name, { ...SD15, timestep_spacing: spacing, ...extra }, { steps }).timesteps;
  assert.deepEqual(grid("ddim", "linspace", 7), [999, 832, 666, 500, 333, 166, 0]);
  assert.deepEqual(
    grid("ddim", "trailing", 16),
    [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61],
  );
  assert.deepEqual(grid("dpmpp_2m", "linspace", 4), [999, 749, 500, 250]);
  assert.deepEqual(grid("dpmpp_2m", "trailing", 3), [999, 666, 332]);
  assert.deepEqual(grid("pndm", "trailing", 4), [999, 749, 749, 499, 249]);
  assert.deepEqual(grid("pndm", "leading", 1), [1]);
  assert.deepEqual(grid("euler", "linspace", 7), [999, 832.5, 666, 499.5, 333, 166.5, 0]);
  assert.deepEqual(grid("euler_a", "linspace", 4), [999, 666, 333, 0]);
  assert.deepEqual(grid("lcm", "leading", 8), [999, 879, 759, 639, 499, 379, 259, 139]);
  assert.deepEqual(grid("lcm", "trailing", 1), [999]);
});

Deno.test("schedulers: SD-Turbo (Euler, trailing) for 1–4 steps", async () => {
  const ac = (await fixture("dumps/tiny-sd15__euler/sched_alphas_cumprod.npy")).data;
  const sigmaAt = (t: number) =>
    Math.fround(Math.sqrt(Math.fround(Math.fround(1 - ac[t]) / ac[t])));
  const expected = [[999], [999, 499], [999, 666, 332], [999, 749, 499, 249]];
  for (let steps = 1; steps <= 4; steps++) {
    const s = createScheduler(SD_TURBO._class_name!, SD_TURBO, { steps });
    assert.deepEqual(s.timesteps, expected[steps - 1]);
    assert.deepEqual(s.sigmas, [...expected[steps - 1].map(sigmaAt), 0]);
    assert.equal(s.initNoiseSigma, sigmaAt(999)); // trailing: σ_max itself, ≈ 14.6146
    assertClose([s.initNoiseSigma], [14.614641], { atol: 0, rtol: 1e-6 });
  }
  // one step lands on x̂₀ = x − σ·ε
  const s = createScheduler("euler", SD_TURBO, { steps: 1 });
  const x = randomArray(64, 1, -15, 15), eps = randomArray(64, 2);
  const buffers = new Map([["sample", x], ["model_output", eps]]);
  const out = runPlanCpu(s.step(0), buffers, (n) => randomArray(n, 3));
  assertClose(out, x.map((v, i) => v - sigmaAt(999) * eps[i]), { atol: 1e-5, rtol: 1e-6 });
});

Deno.test("schedulers: Karras sigmas for DPM++ 2M and Euler", async () => {
  const ac = (await fixture("dumps/tiny-sd15__euler/sched_alphas_cumprod.npy")).data;
  const table = Array.from(ac, (a) => Math.fround(Math.sqrt(Math.fround(Math.fround(1 - a) / a))));
  const rho = (lo: number, hi: number, n: number) =>
    Array.from({ length: n }, (_, i) => {
      const r = n === 1 ? 0 : i / (n - 1);
      return Math.fround((hi ** (1 / 7) + r * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7);
    });
  const dpm = createScheduler("DPM++ 2M Karras", SD15, { steps: 20 });
  assertClose(dpm.sigmas!, [...rho(table[0], table[999], 20), 0], { atol: 0, rtol: 1e-6 });
  assert.equal(dpm.timesteps[0], 999);
  for (let i = 0; i < 20; i++) {
    // the integer timestep brackets its sigma in the training table
    const t = dpm.timesteps[i], sg = dpm.sigmas![i];
    assert.ok(t === 0 || table[t - 1] <= sg * (1 + 1e-6), `t ${t} σ ${sg}`);
    assert.ok(t === 999 || table[t + 1] >= sg * (1 - 1e-6), `t ${t} σ ${sg}`);
    if (i > 0) assert.ok(t <= dpm.timesteps[i - 1]);
  }
  // Euler's Karras range is that of its spaced timesteps (leading: 951 … 1 for 20 steps)
  const eu = createScheduler("euler", SD15, { steps: 20, karras: true });
  assertClose(eu.sigmas!, [...rho(table[1], table[951], 20), 0], { atol: 0, rtol: 1e-6 });
  assertClose([eu.timesteps[0], eu.timesteps[19]], [951, 1], { atol: 1e-3, rtol: 0 });
  // σ → t inverts the table at integer steps
  const logs = new Float64Array(table.map((v) => Math.fround(Math.log(v))));
  assertClose([sigmaToT(table[500], logs), sigmaToT(table[10], logs)], [500, 10], {
    atol: 1e-3,
    rtol: 0,
  });
  assertClose(karrasSigmas(0.5, 8, 2), [8, 0.5], { atol: 0, rtol: 1e-14 });
});

Deno.test("schedulers: torch.linspace float32 emulation matches alphas_cumprod of the fixtures", async () => {
  // betas from linspace(√0.00085, √0.012)² give ᾱ exactly; endpoints are the float32 inputs
  const lin = torchLinspaceF32(0.00085 ** 0.5, 0.012 ** 0.5, 1000);
  assert.equal(lin[0], Math.fround(0.00085 ** 0.5));
  assert.equal(lin[999], Math.fround(0.012 ** 0.5));
  const ac = (await fixture("dumps/tiny-sd15__ddim/sched_alphas_cumprod.npy")).data;
  let acc = 1;
  const got = Array.from(lin, (b) => Math.fround(acc *= Math.fround(1 - Math.fround(b * b))));
  assertClose(got, ac, { atol: 0, rtol: 0, label: "ᾱ from emulated linspace" });
});

/** VP pair (√ᾱ, √(1−ᾱ)) the U-Net input of call `i` sits at. */
function vpAt(s: Scheduler, i: number): [number, number] {
  if (s.sigmas) {
    const sg = s.sigmas[i];
    return [1 / Math.sqrt(sg * sg + 1), sg / Math.sqrt(sg * sg + 1)];
  }
  const a = s.alphasCumprod[s.timesteps[i]];
  return [Math.sqrt(a), Math.sqrt(1 - a)];
}

Deno.test("schedulers: v_prediction gives the same steps as the equivalent ε", () => {
  const n = 64;
  for (const name of SCHEDULER_NAMES.ours) {
    for (const steps of [1, 3, 6]) {
      const epsS = createScheduler(name, SD15, { steps });
      const vS = createScheduler(name, { ...SD15, prediction_type: "v_prediction" }, { steps });
      const bufE = new Map([["sample", randomArray(n, 7, -3, 3)]]);
      const bufV = new Map([["sample", bufE.get("sample")!.slice()]]);
      // PLMS mixes outputs from several timesteps before converting: only its first call matches
      const calls = name === "pndm" ? 1 : epsS.timesteps.length;
      for (let i = 0; i < calls; i++) {
        const x = bufE.get("sample")!;
        const eps = randomArray(n, 100 + i);
        const [a, b] = vpAt(epsS, i);
        const c = epsS.scaleModelInput(i); // VP input = c·x
        const v = eps.map((e, k) => {
          const x0 = (c * x[k] - b * e) / a;
          return a * e - b * x0;
        });
        bufE.set("model_output", eps);
        bufV.set("model_output", v);
        let dE = 0, dV = 0;
        const outE = runPlanCpu(epsS.step(i), bufE, (m) => randomArray(m, 1000 + dE++));
        const outV = runPlanCpu(vS.step(i), bufV, (m) => randomArray(m, 1000 + dV++));
        closeToScale(outV, outE, 2e-6, `${name} ${steps} steps, call ${i}`);
        bufE.set("sample", outE.slice());
        bufV.set("sample", outE.slice());
      }
    }
  }
});

Deno.test("schedulers: DDIM with eta draws noise of the DDIM σ_t", () => {
  const s = createScheduler("ddim", SD15, { steps: 10, eta: 1 });
  const x = randomArray(32, 11, -2, 2), eps = randomArray(32, 12), z = randomArray(32, 13);
  const buffers = new Map([["sample", x], ["model_output", eps]]);
  const out = runPlanCpu(s.step(0), buffers, () => z);
  const at0 = s.alphasCumprod[s.timesteps[0]], ap = s.alphasCumprod[s.timesteps[1]];
  const std = Math.sqrt((1 - ap) / (1 - at0) * (1 - at0 / ap));
  const ref = x.map((v, k) => {
    const x0 = (v - Math.sqrt(1 - at0) * eps[k]) / Math.sqrt(at0);
    return Math.sqrt(ap) * x0 + Math.sqrt(1 - ap - std * std) * eps[k] + std * z[k];
  });
  assertClose(out, ref, { atol: 1e-5, rtol: 1e-6 });
});
