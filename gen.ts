/**
 * `deno run -A gen.ts "a prompt" [--model PATH]`: text to image from the command line, with the
 * bundled emoji model `models/denoise-emoji` unless `--model` or `DENOISE_MODEL` names another.
 * `--help` lists every flag, with the spellings of stable-diffusion.cpp and AUTOMATIC1111 beside
 * ours. The flags are one table (`src/cli/options.ts`); everything a flag or the destination can
 * get wrong is refused before the model loads; images are written without ever replacing a file.
 *
 * @module
 */
import { encodePng, formatA1111Parameters } from "./src/io/png.ts";
import { Profiler } from "./src/gpu/profiler.ts";
import { addonInfotext, checkPromptLoras } from "./src/pipeline/addons.ts";
import { decodeLatents, vaeTiles } from "./src/pipeline/decode.ts";
import { encodePrompt } from "./src/pipeline/encode.ts";
import { latentFactor, loadPipeline, type Pipeline } from "./src/pipeline/load.ts";
import { sampleLatents, stepCounts } from "./src/pipeline/sample.ts";
import { defaultStrength, strengthSchedule } from "./src/pipeline/condition.ts";
import { loadTaesdDecoder, type TaesdDecoder } from "./src/models/taesd.ts";
import { a1111Name, a1111ScheduleType } from "./src/schedulers/mod.ts";
import type { Tensor } from "./src/gpu/tensor.ts";
import { type FlagValues, helpText, parseFlags, UsageError } from "./src/cli/flags.ts";
import { type Checked, preflight } from "./src/cli/preflight.ts";
import { FLAGS, MAX_SEED } from "./src/cli/options.ts";
import { type OutputTarget, prepareOutput } from "./src/cli/output.ts";
import { formatSeconds, Progress } from "./src/cli/progress.ts";
import { onInterrupt } from "./src/cli/interrupt.ts";
import { describeError } from "./src/cli/errors.ts";

const USAGE = `denoise: Stable Diffusion on WebGPU

usage: deno run -A gen.ts "a prompt" [flags]
       deno run -A gen.ts -p "a prompt" -m MODEL -W 512 -H 512 -s 42 -o out.png   (sd.cpp style)`;

const stderr = (text: string) => Deno.stderr.writeSync(new TextEncoder().encode(text));

/**
 * Runs the command line on `args` (as `Deno.args`); bad flags throw a {@link UsageError} whose
 * message names the flag as typed and the fix.
 *
 * @example
 * ```ts no-run
 * import { main } from "@denoise/sd/gen";
 * await main(["a red fox", "--model", "tests/fixtures/models/tiny-sd15", "--steps", "4"]);
 * ```
 */
async function main(args: string[]): Promise<void> {
  const { values, positionals, spelled } = parseFlags(FLAGS, args);
  if (values.help) {
    console.log(helpText(FLAGS, { usage: USAGE }));
    return;
  }
  if (values.prompt !== undefined && positionals.length > 0) {
    throw new UsageError(
      `the prompt is given twice (${spelled.prompt} and the words ${
        JSON.stringify(positionals.join(" "))
      }): give one`,
    );
  }
  const prompt = values.prompt ?? positionals.join(" ");
  if (!prompt) {
    throw new UsageError(`no prompt given: deno run -A gen.ts "a prompt" [--model PATH]`);
  }
  const seed0 = values.seed ?? BigInt(crypto.getRandomValues(new Uint32Array(1))[0]);
  if (seed0 + BigInt(values.count - 1) > MAX_SEED) {
    throw new UsageError(
      `seeds ${seed0} … ${seed0 + BigInt(values.count - 1)} run past ${MAX_SEED}, torch's last ` +
        `seed: lower the seed or the count`,
    );
  }
  const checked = await preflight(values, spelled);
  try {
    await checkPromptLoras(prompt, values.loraModelDir); // the tags and their files, before loading
  } catch (e) {
    throw new UsageError((e as Error).message, { cause: e });
  }
  const out = await prepareOutput(values.out, {
    count: values.count,
    overwrite: values.overwrite,
    flag: spelled.out ?? "--out",
  });
  const progress = new Progress({ write: stderr });
  using _ = onInterrupt([() => progress.interrupt(), () => out.abandon()]);
  try {
    await generate(values, { prompt, checked, seed0, out, progress });
  } catch (e) {
    progress.interrupt();
    out.abandon();
    throw e;
  }
}

/** What {@link generate} needs besides the flags. */
interface Run {
  prompt: string;
  checked: Checked;
  seed0: bigint;
  out: OutputTarget;
  progress: Progress;
}

/** Loads the model, then samples, decodes and writes each image, reporting as it goes. */
async function generate(values: FlagValues<typeof FLAGS>, run: Run): Promise<void> {
  const { prompt, progress, out, checked } = run;
  const { steps, cfg, count, clipSkip } = values;
  const { width, height, scheduler } = checked;
  const t0 = performance.now();
  const pipe = await loadPipeline(checked.model, {
    runtime: checked.rt,
    dtype: values.dtype,
    tokenizer: values.tokenizer,
    configFrom: values.configFrom,
    vae: values.vae,
    loraDir: values.loraModelDir,
    embeddingDir: values.embdDir,
    vaeEncoder: checked.images.image !== undefined, // img2img and inpainting encode the image
  });
  const loadSecs = (performance.now() - t0) / 1000;
  stderr(
    `loaded ${pipe.name} (${pipe.dtype}) on ${pipe.rt.gpu.adapterName} in ${
      formatSeconds(loadSecs)
    }\n`,
  );
  const profiler = values.profile ? new Profiler() : null;
  pipe.rt.profiler = profiler;
  let sampleSecs = 0, decodeSecs = 0, stepsRun = 0;
  try {
    const taesd = values.taesd
      ? await loadTaesdDecoder(values.taesd, { runtime: pipe.rt, dtype: pipe.dtype })
      : undefined;
    const embeds = await encodePrompt(pipe, prompt, { negativePrompt: values.negative, clipSkip });
    const addons = await addonInfotext(pipe, embeds);
    const { image, mask } = checked.images;
    const strength = image ? defaultStrength({ strength: values.strength, mask }) : undefined;
    const sampleOpts = {
      steps,
      guidance: cfg,
      scheduler: values.sampler,
      schedule: values.schedule,
      width,
      height,
      image,
      mask,
      strength,
    };
    const samplerName = a1111Name(scheduler);
    const begin = strength === undefined
      ? 0
      : strengthSchedule(steps, strength, scheduler.order).begin;
    const totalSteps = stepCounts(
      scheduler.timesteps.length - begin,
      steps - Math.floor(begin / scheduler.order),
      scheduler.order,
    ).at(-1)!;
    for (let k = 0; k < count; k++) {
      const seed = run.seed0 + BigInt(k);
      const label = `[${k + 1}/${count}]`;
      stderr(`seed ${seed}\n`);
      let last: Tensor | undefined;
      progress.begin(label, totalSteps);
      let shown = 0;
      for await (const s of sampleLatents(pipe, embeds, { ...sampleOpts, seed })) {
        last = s.latents;
        if (s.step > shown) progress.step(shown = s.step, s.steps);
      }
      stepsRun += shown;
      const sampled = progress.elapsed();
      sampleSecs += sampled;
      const decodeOpts = {
        taesd,
        tiling: values.vaeTiling || values.vaeTileSize !== undefined ? true : "auto" as const,
        tileSize: values.vaeTileSize,
      };
      const what = decodePhase(pipe, last!.shape, decodeOpts);
      progress.phase(what);
      const t1 = performance.now();
      const image = await decodeLatents(pipe, last!, {
        ...decodeOpts,
        onTile: (done, total) => progress.phaseStep(done, total),
      });
      last!.dispose();
      const decoded = (performance.now() - t1) / 1000;
      decodeSecs += decoded;
      const text = formatA1111Parameters({
        prompt,
        negativePrompt: values.negative,
        steps,
        sampler: samplerName,
        scheduleType: a1111ScheduleType(scheduler),
        cfg,
        seed,
        width: image.width,
        height: image.height,
        model: pipe.name,
        denoisingStrength: strength,
        clipSkip,
        ...addons,
      });
      const bytes = encodePng(image, { text: { parameters: text } });
      const path = await out.write(bytes, { seed, index: k, notice: (m) => progress.note(m) });
      progress.end(
        `${shown} step${shown === 1 ? "" : "s"} in ${formatSeconds(sampled)}, decoded in ${
          formatSeconds(decoded)
        }`,
      );
      console.log(path);
    }
    embeds.dispose();
    taesd?.dispose();
    if (profiler) stderr(`${profiler.table()}\n`);
  } finally {
    pipe.dispose();
  }
  const total = loadSecs + sampleSecs + decodeSecs;
  stderr(
    `done: ${count} image${count === 1 ? "" : "s"} in ${formatSeconds(total)} (load ${
      formatSeconds(loadSecs)
    }, sampling ${formatSeconds(sampleSecs)} at ${(stepsRun / sampleSecs).toFixed(2)} it/s, ` +
      `decoding ${formatSeconds(decodeSecs)})\n`,
  );
}

/** `decoding 1088×1024 with the VAE in 9 tiles of 512 px (…)`: what the decode phase will do. */
function decodePhase(
  pipe: Pipeline,
  shape: readonly number[],
  options: { taesd?: TaesdDecoder; tiling: boolean | "auto"; tileSize?: number },
): string {
  const [, , h, w] = shape;
  const f = options.taesd ? 8 : latentFactor(pipe);
  const size = `${f * w}×${f * h}`;
  if (options.taesd) return `decoding ${size} with TAESD`;
  const plan = vaeTiles(pipe, shape, options);
  if (!plan) return `decoding ${size} with the VAE`;
  const why = options.tiling === "auto"
    ? `: whole, it would need a ${mb(plan.wholeBytes)} buffer; this GPU binds ${
      mb(pipe.rt.gpu.limits.maxStorageBufferBindingSize)
    }`
    : "";
  return `decoding ${size} with the VAE in ${plan.count} tiles of ${plan.tile * f} px${why}`;
}

function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    const { code, text } = describeError(e);
    console.error(text);
    Deno.exit(code);
  }
}

export { main };
