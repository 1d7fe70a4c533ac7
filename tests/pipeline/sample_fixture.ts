/**
 * Replaying a diffusers txt2img dump through `sampleLatents`: the dump's manifest, an rng that
 * hands out the dump's own draws, and the sample options that reproduce the run.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Pipeline } from "../../src/pipeline/load.ts";
import { type SampleOptions, schedulerFor } from "../../src/pipeline/sample.ts";
import type { Rng } from "../../src/rng/torch_randn.ts";
import { sampleCpu, type SchedulerConfig } from "../../src/schedulers/mod.ts";
import { fixture } from "../util.ts";

/** What the tests read of a dump's `manifest.json`. */
export interface Manifest {
  args: {
    prompt: string;
    negative_prompt: string | null;
    steps: number;
    guidance: number;
    eta: number;
    karras: boolean;
  };
  scheduler_class: string;
  scheduler_config: SchedulerConfig;
  timesteps: number[];
  width: number;
  height: number;
}

/** The dump's manifest. */
export async function readManifest(base: URL): Promise<Manifest> {
  return JSON.parse(await Deno.readTextFile(new URL("manifest.json", base)));
}

/** Row `k` of a stacked fixture (leading axis = call). */
export function row(a: { shape: number[]; data: Float32Array }, k: number): Float32Array {
  const n = a.data.length / a.shape[0];
  return a.data.subarray(k * n, (k + 1) * n);
}

/** An rng that replays the dump's draws: the initial noise, then every in-step draw. */
export async function replayRng(base: URL): Promise<{ rng: Rng; left: () => number }> {
  const draws: Float32Array[] = [(await fixture("latents_init_noise.npy", base)).data];
  try {
    const steps = await fixture("step_noise.npy", base);
    for (let k = 0; k < steps.shape[0]; k++) draws.push(row(steps, k));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let next = 0;
  return {
    rng: {
      randn(shape: number[]) {
        const n = shape.reduce((a, b) => a * b, 1);
        const d = draws[next++];
        assert.ok(d, `the sampler drew more noise than the reference (draw ${next})`);
        assert.equal(d.length, n, `draw ${next} has ${n} values, the reference ${d.length}`);
        return d;
      },
    },
    left: () => draws.length - next,
  };
}

/** The `sampleLatents` options of the dump's run: its scheduler config as a diffusers object. */
export function runOptions(manifest: Manifest, rng: Rng): SampleOptions {
  const args = manifest.args;
  return {
    steps: args.steps,
    guidance: args.guidance,
    scheduler: { ...manifest.scheduler_config, _class_name: manifest.scheduler_class },
    eta: args.eta || undefined,
    karras: args.karras || undefined,
    width: manifest.width,
    height: manifest.height,
    rng,
  };
}

/**
 * The dump's run replayed on the CPU (our scheduler, the dump's draws) with `output(k)` as the
 * guided U-Net output of call k: the latents after every call.
 */
export async function replayCpu(
  pipe: Pick<Pipeline, "schedulerConfig">,
  base: URL,
  manifest: Manifest,
  output: (k: number) => Float32Array,
): Promise<Float32Array[]> {
  const scheduler = schedulerFor(pipe, runOptions(manifest, (await replayRng(base)).rng));
  const noise = await fixture("latents_init_noise.npy", base);
  let steps: { shape: number[]; data: Float32Array } | undefined;
  try {
    steps = await fixture("step_noise.npy", base);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let draw = 0;
  const out: Float32Array[] = [];
  sampleCpu(scheduler, noise.data, {
    model: (_x, _t, k) => output(k),
    randn: () => {
      assert.ok(steps && draw < steps.shape[0], "the replay drew more noise than the reference");
      return row(steps, draw++);
    },
    onStep: (k, x) => out[k] = x.slice(),
  });
  return out;
}
