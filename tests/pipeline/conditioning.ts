/**
 * Checking a sampling run past an ill-conditioned U-Net call. On the random tiny U-Nets a few calls
 * amplify their input: an f32-rounding-sized change moves the guided output by ~1e-2, so no f32
 * engine follows the reference to 1e-4 past them. What is checked instead, from call `c` (the
 * ill-conditioned one) on:
 *
 * - the U-Net: ours on the fixture's exact input of every call ≥ c matches the fixture's output to
 *   1e-4 of scale, and at call c within how far the fixture's input moved by our observed input
 *   error moves that output (the measured conditioning);
 * - the sampler: our GPU latents after every call ≥ c match, to 1e-4 of scale, the CPU replay of
 *   the scheduler fed the fixture's outputs before c and our pipeline's own U-Net outputs from c;
 * - the distance to the fixture: within 2e-4 of scale plus the bound the conditioning gives: how
 *   far the fixture's trajectory moves when its U-Net outputs from c on move by the measured
 *   response of the U-Net to our input errors (two CPU replays, so a scheduler bug is not
 *   absorbed into the bound).
 *
 * @module
 */
import type { Tensor } from "../../src/gpu/tensor.ts";
import type { Pipeline } from "../../src/pipeline/load.ts";
import { schedulerFor } from "../../src/pipeline/sample.ts";
import { assertClose, errorStats, fixture } from "../util.ts";
import { type Manifest, replayCpu, replayRng, row, runOptions } from "./sample_fixture.ts";

/** The guided output `(1 − g)·u + g·c` of a `[2, …]` U-Net batch ordered (uncond, cond). */
export function guide(batch: Float32Array, g: number): Float32Array {
  const n = batch.length / 2;
  return Float32Array.from({ length: n }, (_, i) => (1 - g) * batch[i] + g * batch[n + i]);
}

/** What {@link checkPastIllConditioned} needs of the run. */
export interface IllConditionedRun {
  pipe: Pipeline;
  /** The pipeline's text context `[2, L, D]` (uncond, cond). */
  context: Tensor;
  base: URL;
  manifest: Manifest;
  /** The ill-conditioned call (≥ 1). */
  call: number;
  /** Our latents after every call. */
  latents: Float32Array[];
  /** Our guided U-Net output of every call from `call` on (indexed by call). */
  outputs: Float32Array[];
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => errorStats(a, b).maxAbs;

/**
 * Runs the checks of the module doc from `run.call` on; returns the report lines (printed by the
 * caller, and part of every failure message) and the fixture's final latents moved by the
 * response to the measured output changes (what the conditioning bound of the image decodes).
 */
export async function checkPastIllConditioned(
  run: IllConditionedRun,
): Promise<{ lines: string[]; moved: Float32Array }> {
  const { pipe, base, manifest, call: c, latents } = run;
  const g = manifest.args.guidance;
  const read = (file: string) => fixture(file, base);
  const [modelIn, pred, fixOut] = await Promise.all(
    ["step_model_input.npy", "step_noise_pred.npy", "step_latents_out.npy"].map(read),
  );
  const shape = modelIn.shape.slice(1);
  const calls = manifest.timesteps.length;
  const scheduler = schedulerFor(pipe, runOptions(manifest, (await replayRng(base)).rng));
  const unet = async (x: Float32Array, t: number) => {
    const batch = new Float32Array(x.length * 2);
    batch.set(x);
    batch.set(x, x.length);
    using input = pipe.rt.upload(batch, [2, ...shape.slice(1)], { dtype: pipe.dtype });
    using out = pipe.unet.forward(input, { timestep: t, encoderHiddenStates: run.context });
    return guide(await out.read(), g);
  };
  const lines: string[] = [];
  const fail = (e: unknown) => new Error(`${(e as Error).message}\n${lines.join("\n")}`);
  const rel = (d: number, scale: number) => (d / scale).toExponential(2);

  // 1. the U-Net along the fixture's trajectory, and its conditioning at call c
  const onRef: Float32Array[] = [];
  for (let k = c; k < calls; k++) {
    const t = manifest.timesteps[k];
    const xRef = row(modelIn, k);
    onRef[k] = await unet(xRef, t);
    const scale = errorStats(onRef[k], row(pred, k)).scale;
    let tol = 1e-4 * scale;
    if (k === c) {
      const s = scheduler.scaleModelInput(k);
      const xOurs = latents[k - 1].map((v) => v * s); // the fixture's input + our f32 error
      const moved = maxAbs(await unet(xOurs, t), onRef[k]);
      const dIn = maxAbs(xOurs, xRef);
      lines.push(
        `call ${c}: our input error ${rel(dIn, errorStats(xOurs, xRef).scale)} of scale moves ` +
          `the fixture's guided output by ${rel(moved, scale)} of scale (gain ${
            (moved / dIn).toFixed(0)
          }); our output on the fixture's exact input is off by ` +
          `${rel(maxAbs(onRef[k], row(pred, k)), scale)}`,
      );
      tol = Math.max(tol, moved);
    }
    try {
      assertClose(onRef[k], row(pred, k), { atol: tol, rtol: 0, label: `U-Net at call ${k}` });
    } catch (e) {
      throw fail(e);
    }
  }

  // 2. CPU replays: the fixture's outputs before c, then ours / the fixture's moved by the response
  const replay = (output: (k: number) => Float32Array) =>
    replayCpu(pipe, base, manifest, (k) => k < c ? row(pred, k) : output(k));
  const ours = await replay((k) => run.outputs[k]);
  // the response of the trajectory to the measured output changes, on the fixture's trajectory (a
  // bug of our scheduler moves both replays alike, so it cannot widen the bound)
  const fixed = await replay((k) => row(pred, k));
  const moved = await replay((k) =>
    row(pred, k).map((v, i) => v + run.outputs[k][i] - onRef[k][i])
  );
  const response = (k: number) => moved[k].map((v, i) => v - fixed[k][i]);

  // 3. every call from c: the sampler against the replay, the distance to the fixture in bound
  for (let k = c; k < calls; k++) {
    const ref = row(fixOut, k);
    const scale = errorStats(latents[k], ref).scale;
    const bound = maxAbs(response(k), new Float32Array(ref.length));
    lines.push(
      `call ${k}: |ours − fixture| ${rel(maxAbs(latents[k], ref), scale)} of scale, the ` +
        `conditioning bound ${rel(bound, scale)}; |ours − replay| ${
          rel(maxAbs(latents[k], ours[k]), scale)
        }`,
    );
    try {
      assertClose(latents[k], ours[k], {
        atol: 1e-4 * scale,
        rtol: 0,
        label: `call ${k}: GPU latents against the CPU replay fed our U-Net outputs`,
      });
      assertClose(latents[k], ref, {
        atol: 2e-4 * scale + bound,
        rtol: 0,
        label: `call ${k}: GPU latents against the fixture, within the conditioning bound`,
      });
    } catch (e) {
      throw fail(e);
    }
  }
  const final = (await read("latents_final.npy")).data;
  const last = response(calls - 1);
  return { lines, moved: final.map((v, i) => v + last[i]) };
}
