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
import { karrasSigmas, MAX_TERMS, sigmaToT, torchLinspaceF32 } from "../src/schedulers/common.ts";
import { assertClose, dumpDir, errorStats, fixture, randomArray } from "./util.ts";

const RUNS = [
  "tiny-sd15__ddim",
  "tiny-sd15__pndm",
  "tiny-sd15__euler",
  "tiny-sd15__euler_a",
  "tiny-sd15__dpmpp2m",
  "tiny-sd15__lcm",
  "tiny-sd2__ddim_v",
];

/** The 64×64 runs of the newer samplers, each for SD 1.5 (ε) and SD 2 (v), from ../shared. */
const NEW_RUNS = [
  "heun",
  "kdpm2",
  "kdpm2_a",
  "lms",
  "dpmpp2m_sde",
  "dpmpp2m_sde_karras",
  "unipc",
  "ddpm",
  "deis",
  "euler_karras",
  "dpmpp_2s",
].flatMap((k) => [`tiny-sd15__${k}_64`, `tiny-sd2__${k}_64`]);

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

for (const run of [...RUNS, ...NEW_RUNS]) {
  const base = dumpDir(run);
  Deno.test({
    name: `schedulers: ${run} replays the diffusers run`,
    ignore: base === undefined,
    fn: () => replay(run, base!),
  });
}

/** Replays a txt2img dump on the CPU: timesteps, σ, every call's input, draws and output. */
async function replay(run: string, base: URL) {
  const read = (file: string) => fixture(file, base);
  {
    const m: Manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", base)));
    const s = createScheduler(m.scheduler_class, m.scheduler_config, {
      steps: m.args.steps,
      eta: m.args.eta,
      karras: m.args.karras,
    });
    const ts = await read("sched_timesteps.npy");
    assertClose(s.timesteps, ts.data, { atol: 0, rtol: 2e-7, label: `${run}: timesteps` });
    assertClose(s.alphasCumprod, (await read("sched_alphas_cumprod.npy")).data, {
      atol: 0,
      rtol: 0,
      label: `${run} alphas_cumprod`,
    });
    let sigmas: Float32Array | undefined;
    try {
      sigmas = (await read("sched_sigmas.npy")).data;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    assert.equal(s.sigmas !== undefined, sigmas !== undefined, `${run}: has sigmas`);
    if (sigmas) {
      // two-call schedules: diffusers keeps extra trailing entries (KDPM2's 0, 0, 0)
      const ref = sigmas.subarray(0, s.sigmas!.length);
      assertClose(s.sigmas!, ref, { atol: 0, rtol: 1e-6, label: `${run} sigmas` });
    }
    assertClose([s.initNoiseSigma], [m.init_noise_sigma], { atol: 0, rtol: 1e-7 });

    const latIn = await read("step_latents_in.npy");
    const modelIn = await read("step_model_input.npy");
    const pred = await read("step_noise_pred.npy");
    const latOut = await read("step_latents_out.npy");
    const counts = (await read("step_noise_count.npy")).data;
    const noise = counts.some((c) => c > 0) ? await read("step_noise.npy") : undefined;
    const init = await read("latents_init.npy");
    assert.equal(latIn.shape[0], s.timesteps.length);

    let draws = 0;
    const randn = (n: number) => {
      assert.ok(noise && draws < noise.shape[0], `${run}: more noise draws than diffusers made`);
      const z = at(noise, draws++);
      assert.equal(z.length, n);
      return z;
    };
    let drawsBefore = 0;
    const final = sampleCpu(s, (await read("latents_init_noise.npy")).data, {
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
    closeToScale(final, (await read("latents_final.npy")).data, 2e-6, `${run} final`);

    // scaleModelInput on the reference's own step inputs, and the initial latents
    for (let i = 0; i < s.timesteps.length; i++) {
      const x = at(latIn, i).map((v) => v * s.scaleModelInput(i));
      closeToScale(x, at(modelIn, i), 1e-6, `${run} scaleModelInput(${i})`);
    }
    const noise0 = (await read("latents_init_noise.npy")).data;
    closeToScale(noise0.map((v) => v * s.initNoiseSigma), init.data, 1e-7, `${run} latents_init`);
  }
}

/** Every lincomb has 1–8 terms and never reads its destination; writes stay in `buffers`. */
function checkPlanShape(s: Scheduler) {
  for (let i = 0; i < s.timesteps.length; i++) {
    const plan = s.step(i);
    assert.equal(plan.output, "prev_sample");
    for (const op of plan.ops) {
      assert.ok(s.buffers.includes(op.dst), `${s.kind}: ${op.dst} is not in buffers`);
      assert.notEqual(op.dst, "sample");
      if (op.op === "lincomb") {
        assert.ok(
          op.terms.length >= 1 && op.terms.length <= MAX_TERMS,
          `${s.kind}: ${op.terms.length} terms`,
        );
        assert.ok(op.terms.every((t) => t.src !== op.dst && Number.isFinite(t.coef)));
      }
    }
  }
}

Deno.test("schedulers: plans stay within 8-term, non-aliasing lincombs over listed buffers", () => {
  const order3 = { ...SD15, solver_order: 3 };
  const clip = { ...SD15, clip_sample: true };
  for (const name of SCHEDULER_NAMES.ours) {
    const row = resolveSchedulerName(name).info;
    for (const steps of [1, 2, 5, 20]) {
      checkPlanShape(createScheduler(name, SD15, { steps }));
      if (row.options.includes("karras")) {
        checkPlanShape(createScheduler(name, SD15, { steps, karras: true }));
      }
      if (["dpmpp_2m", "dpmpp_2s", "unipc", "deis"].includes(name)) {
        checkPlanShape(createScheduler(name, order3, { steps }));
      }
      if (["ddim", "ddpm", "heun", "lcm"].includes(name)) {
        checkPlanShape(createScheduler(name, clip, { steps }));
      }
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
  for (const name of ["euler", "euler_a", "heun", "dpm2", "dpm++2m", "lcm", "ddim_trailing"]) {
    assert.ok(SCHEDULER_NAMES.sdcpp.includes(name), `sd.cpp's ${name}`);
  }
});

Deno.test("schedulers: bad options and configs fail with the fix", () => {
  const fails = (f: () => unknown, text: string) =>
    assert.throws(f, (e: Error) => e.message.includes(text), text);
  fails(() => createScheduler("ddim", SD15, { steps: 4, karras: true }), "karras applies to euler");
  fails(() => createScheduler("euler", SD15, { steps: 4, eta: 0.5 }), "eta applies to ddim");
  fails(() => createScheduler("DPM++ 2M Karras", SD15, { steps: 4, karras: false }), "karras");
  fails(
    () => createScheduler("ddim", { ...SD15, thresholding: true }, { steps: 4 }),
    "thresholding",
  );
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
  const c = s.scaleModelInput(i);
  if (c !== 1) return [c, Math.sqrt(1 - c * c)]; // k-diffusion: the input is x/√(σ²+1)
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

Deno.test("schedulers: clip_sample clamps x̂₀ where diffusers does (DDIM, DDPM, Heun, LCM)", () => {
  const clip = { ...SD15, clip_sample: true, clip_sample_range: 0.5 };
  const x = randomArray(64, 21, -3, 3), eps = randomArray(64, 22, -2, 2), z = randomArray(64, 23);
  const c = (v: number) => Math.min(0.5, Math.max(-0.5, v));
  const run = (name: string) => {
    const s = createScheduler(name, clip, { steps: 4 });
    const buffers = new Map([["sample", x], ["model_output", eps]]);
    return { s, out: runPlanCpu(s.step(0), buffers, () => z) };
  };
  {
    const { s, out } = run("ddim");
    const at0 = s.alphasCumprod[s.timesteps[0]], ap = s.alphasCumprod[s.timesteps[1]];
    const ref = x.map((v, k) => {
      const x0 = c((v - Math.sqrt(1 - at0) * eps[k]) / Math.sqrt(at0));
      return Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * eps[k];
    });
    assertClose(out, ref, { atol: 1e-5, rtol: 1e-5, label: "ddim" });
  }
  {
    const { s, out } = run("ddpm");
    const at0 = s.alphasCumprod[s.timesteps[0]], ap = s.alphasCumprod[s.timesteps[1]];
    const beta = 1 - at0 / ap;
    const ref = x.map((v, k) => {
      const x0 = c((v - Math.sqrt(1 - at0) * eps[k]) / Math.sqrt(at0));
      const mean = (Math.sqrt(ap) * beta / (1 - at0)) * x0 +
        (Math.sqrt(at0 / ap) * (1 - ap) / (1 - at0)) * v;
      return mean + Math.sqrt(((1 - ap) / (1 - at0)) * beta) * z[k];
    });
    assertClose(out, ref, { atol: 1e-5, rtol: 1e-5, label: "ddpm" });
  }
  {
    const { s, out } = run("heun");
    const [s0, s1] = s.sigmas!;
    const ref = x.map((v, k) => v + ((v - c(v - s0 * eps[k])) / s0) * (s1 - s0));
    assertClose(out, ref, { atol: 1e-5, rtol: 1e-5, label: "heun" });
  }
  {
    const { s, out } = run("lcm");
    const t = s.timesteps[0], at0 = s.alphasCumprod[t], ap = s.alphasCumprod[s.timesteps[1]];
    const sc = t * 10, skip = 0.25 / (sc * sc + 0.25), cout = sc / Math.sqrt(sc * sc + 0.25);
    const ref = x.map((v, k) => {
      const den = cout * c((v - Math.sqrt(1 - at0) * eps[k]) / Math.sqrt(at0)) + skip * v;
      return Math.sqrt(ap) * den + Math.sqrt(1 - ap) * z[k];
    });
    assertClose(out, ref, { atol: 1e-5, rtol: 1e-5, label: "lcm" });
  }
});

Deno.test("schedulers: Karras σ for every sigma-based sampler, with each class's timesteps", async () => {
  const ac = (await fixture("dumps/tiny-sd15__euler/sched_alphas_cumprod.npy")).data;
  const table = Array.from(ac, (a) => Math.fround(Math.sqrt(Math.fround(Math.fround(1 - a) / a))));
  const logs = new Float64Array(table.map((v) => Math.fround(Math.log(v))));
  // k-diffusion classes span their spaced range; the DPM-Solver family the whole table
  const cases: [string, "spaced" | "table", "frac" | "round"][] = [
    ["euler", "spaced", "frac"],
    ["euler_a", "spaced", "frac"],
    ["heun", "spaced", "frac"],
    ["lms", "spaced", "frac"],
    ["dpm2", "spaced", "round"],
    ["dpm2_a", "spaced", "round"],
    ["dpmpp_2m", "table", "round"],
    ["dpmpp_2m_sde", "table", "round"],
    ["dpmpp_2s", "table", "round"],
    ["unipc", "table", "round"],
    ["deis", "table", "round"],
  ];
  const steps = 6;
  for (const [name, span, ts] of cases) {
    const s = createScheduler(name, SD15, { steps, karras: true });
    // leading spacing, 6 steps: 831, 665, …, 1
    const [lo, hi] = span === "spaced" ? [table[1], table[831]] : [table[0], table[999]];
    const want = karrasSigmas(lo, hi, steps).map(Math.fround);
    // two-call classes repeat each interior σ
    const firsts = s.order === 2
      ? [0, ...want.slice(1).map((_, k) => 2 * k + 1)]
      : want.map((_, k) => k);
    assertClose(firsts.map((i) => s.sigmas![i]), want, { atol: 0, rtol: 1e-6, label: name });
    const t0 = sigmaToT(want[1], logs);
    const got = s.timesteps[s.order === 2 ? 2 : 1];
    assertClose([got], [ts === "round" ? Math.round(t0) : t0], {
      atol: 1e-3,
      rtol: 0,
      label: name,
    });
    assert.equal(a1111Name(s).endsWith(" Karras"), true, name);
  }
});

Deno.test("schedulers: the README's sampler table lists every sampler with its A1111 and sd.cpp names", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const rows = readme.split("\n").filter((l) => l.startsWith("| `"));
  for (const s of SAMPLERS) {
    const row = rows.find((l) => l.startsWith(`| \`${s.kind}\` `));
    assert.ok(row, `README has no row for ${s.kind}`);
    assert.ok(row.includes(s.a1111), `${s.kind}: A1111 name ${s.a1111}`);
    assert.ok(row.includes(s.diffusers), `${s.kind}: ${s.diffusers}`);
    for (const n of s.sdcpp) assert.ok(row.includes(`\`${n}\``), `${s.kind}: sd.cpp ${n}`);
  }
});
