/**
 * `deno run -A gen.ts "a prompt" --model PATH`: text to image from the command line. `--help` lists
 * every flag.
 *
 * @module
 */
import { formatA1111Parameters, writePngFile } from "./src/io/png.ts";
import { Profiler } from "./src/gpu/profiler.ts";
import { decodeLatents } from "./src/pipeline/decode.ts";
import { encodePrompt } from "./src/pipeline/encode.ts";
import { latentFactor, loadPipeline } from "./src/pipeline/load.ts";
import { sampleLatents, schedulerFor, sizeFactor } from "./src/pipeline/sample.ts";
import { loadTaesdDecoder } from "./src/models/taesd.ts";
import { a1111Name } from "./src/schedulers/mod.ts";
import type { Tensor } from "./src/gpu/tensor.ts";
import { helpText, parseFlags, UsageError } from "./src/cli/flags.ts";
import { FLAGS, MAX_SEED } from "./src/cli/options.ts";

const USAGE = `denoise: Stable Diffusion on WebGPU

usage: deno run -A gen.ts "a prompt" [flags]
       deno run -A gen.ts -p "a prompt" -m MODEL -W 512 -H 512 -s 42 -o out.png   (sd.cpp style)`;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The output paths: a file (numbered when count > 1) or numbered names in a folder. */
async function outputPaths(out: string, count: number, seeds: bigint[]): Promise<string[]> {
  if (out.toLowerCase().endsWith(".png")) {
    if (count === 1) return [out];
    const stem = out.slice(0, -4);
    return seeds.map((_, i) => `${stem}-${String(i + 1).padStart(4, "0")}.png`);
  }
  await Deno.mkdir(out, { recursive: true });
  let next = 0;
  for await (const e of Deno.readDir(out)) {
    const m = /^(\d{5})-/.exec(e.name);
    if (m) next = Math.max(next, Number(m[1]) + 1);
  }
  return seeds.map((s, i) =>
    `${out.replace(/\/+$/, "")}/${String(next + i).padStart(5, "0")}-${s}.png`
  );
}

function progress(i: number, total: number, start: number, label: string) {
  const done = i + 1;
  const secs = (performance.now() - start) / 1000;
  const rate = done / secs;
  const eta = (total - done) / rate;
  const line = `${label} step ${done}/${total}  ${rate.toFixed(2)} it/s  ETA ${eta.toFixed(1)} s`;
  if (Deno.stderr.isTerminal()) {
    const width = 24;
    const filled = Math.round((done / total) * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    Deno.stderr.writeSync(
      new TextEncoder().encode(`\r${bar} ${line}${done === total ? "\n" : ""}`),
    );
  } else {
    console.error(line);
  }
}

/**
 * Runs the command line on `args` (as `Deno.args`); bad flags throw a {@link UsageError} whose
 * message names the flag as typed and the fix.
 *
 * @example
 * ```ts
 * import { main } from "./gen.ts";
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
  if (!prompt) throw new UsageError(`no prompt given: deno run -A gen.ts "a prompt" --model PATH`);
  const model = values.model;
  if (!model) {
    throw new UsageError(
      "no model given: pass --model PATH (a diffusers folder or .safetensors) or set DENOISE_MODEL",
    );
  }
  if (!(await exists(model))) {
    throw new UsageError(`${spelled.model} ${model}: no such file or folder`);
  }
  const { steps, cfg, count, clipSkip, width, height } = values;
  const seed0 = values.seed ?? BigInt(crypto.getRandomValues(new Uint32Array(1))[0]);
  if (seed0 + BigInt(count - 1) > MAX_SEED) {
    throw new UsageError(
      `seeds ${seed0} … ${seed0 + BigInt(count - 1)} run past ${MAX_SEED}, torch's last seed: ` +
        `lower the seed or the count`,
    );
  }
  const seeds = Array.from({ length: count }, (_, i) => seed0 + BigInt(i));
  const paths = await outputPaths(values.out, count, seeds);
  for (const p of paths) {
    if (!values.overwrite && await exists(p)) {
      throw new UsageError(`${p} exists: pass --overwrite to replace it, or choose another --out`);
    }
  }

  const t0 = performance.now();
  const pipe = await loadPipeline(model, {
    dtype: values.dtype,
    tokenizer: values.tokenizer,
    configFrom: values.configFrom,
  });
  console.error(
    `loaded ${pipe.name} (${pipe.dtype}) on ${pipe.rt.gpu.adapterName} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  const profiler = values.profile ? new Profiler() : null;
  pipe.rt.profiler = profiler;
  try {
    const latent = latentFactor(pipe);
    const factor = sizeFactor(pipe);
    for (const [flag, v] of [["width", width], ["height", height]] as const) {
      if (v !== undefined && v % latent !== 0) {
        throw new UsageError(
          `${spelled[flag]} ${v} is not a multiple of ${latent} (the VAE's latent factor)`,
        );
      }
      if (v !== undefined && v % factor !== 0) {
        throw new UsageError(
          `${
            spelled[flag]
          } ${v} is not a multiple of ${factor} (this model's U-Net needs it); try ${
            Math.max(factor, Math.round(v / factor) * factor)
          }`,
        );
      }
    }
    const taesd = values.taesd
      ? await loadTaesdDecoder(values.taesd, { runtime: pipe.rt, dtype: pipe.dtype })
      : undefined;
    const embeds = await encodePrompt(pipe, prompt, { negativePrompt: values.negative, clipSkip });
    const sampleOpts = { steps, guidance: cfg, scheduler: values.sampler, width, height };
    const sched = schedulerFor(pipe, sampleOpts);
    const samplerName = a1111Name(sched);
    for (let k = 0; k < count; k++) {
      console.error(`seed ${seeds[k]}`);
      const start = performance.now();
      let last: Tensor | undefined;
      for await (const s of sampleLatents(pipe, embeds, { ...sampleOpts, seed: seeds[k] })) {
        last = s.latents;
        progress(s.index, s.total, start, `[${k + 1}/${count}]`);
      }
      const image = await decodeLatents(pipe, last!, { taesd });
      last!.dispose();
      const text = formatA1111Parameters({
        prompt,
        negativePrompt: values.negative,
        steps,
        sampler: samplerName,
        cfg,
        seed: seeds[k],
        width: image.width,
        height: image.height,
        model: pipe.name,
        clipSkip,
      });
      await writePngFile(paths[k], image, {
        text: { parameters: text },
        overwrite: values.overwrite,
      });
      console.log(paths[k]);
    }
    embeds.dispose();
    taesd?.dispose();
    if (profiler) console.error(profiler.table());
  } finally {
    pipe.dispose();
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    console.error(`error: ${msg}`);
    Deno.exit(e instanceof UsageError || e instanceof TypeError ? 2 : 1);
  }
}

export { main };
