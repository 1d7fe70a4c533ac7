/**
 * `deno run -A gen.ts "a prompt" --model PATH`: text to image from the command line. `--help` lists
 * every flag.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { formatA1111Parameters, writePngFile } from "./src/io/png.ts";
import { Profiler } from "./src/gpu/profiler.ts";
import { decodeLatents } from "./src/pipeline/decode.ts";
import { encodePrompt } from "./src/pipeline/encode.ts";
import { loadPipeline } from "./src/pipeline/load.ts";
import { sampleLatents, schedulerFor, sizeFactor } from "./src/pipeline/sample.ts";
import { loadTaesdDecoder } from "./src/models/taesd.ts";
import { resolveSchedulerName, SCHEDULER_NAMES } from "./src/schedulers/mod.ts";
import type { Tensor } from "./src/gpu/tensor.ts";

const HELP = `denoise: Stable Diffusion on WebGPU

usage: deno run -A gen.ts "a prompt" [flags]

  --model PATH        diffusers folder or single-file .safetensors (or env DENOISE_MODEL)
  --negative TEXT     negative prompt ("")
  --steps N           denoising steps (20)
  --cfg X             classifier-free guidance scale (7.5; ≤ 1 turns guidance off)
  --seed N            seed of the torch-compatible noise (random when absent; always printed)
  --sampler NAME      ${SCHEDULER_NAMES.ours.join(", ")}, or A1111 names such as "Euler a",
                      "DPM++ 2M Karras" (default: the model's own scheduler)
  --width N           image width, a multiple of 8·2^(levels−1) (64 for SD; default: the model's)
  --height N          image height
  --count N           how many images, seeds seed, seed+1, … (1)
  --out PATH          a .png file or a folder (out/); numbered names, never overwritten
  --overwrite         allow replacing an existing file
  --dtype T           auto, f16 or f32 (auto)
  --clip-skip N       A1111 clip skip: 1 = last layer (1)
  --taesd PATH        decode with TAESD (taesd_decoder.safetensors) instead of the VAE
  --tokenizer PATH    tokenizer folder or bpe_simple_vocab_16e6.txt.gz (single files)
  --config-from DIR   a diffusers folder whose configs serve a non-standard single file
  --profile           print a per-step, per-kernel time table
  --help              this text
`;

/** Parses a flag as a number within bounds, or exits with a message naming the flag. */
function num(
  name: string,
  value: string | undefined,
  def: number,
  opts: { int?: boolean; min?: number } = {},
) {
  if (value === undefined) return def;
  const v = Number(value);
  if (
    !Number.isFinite(v) || (opts.int && !Number.isInteger(v)) ||
    (opts.min !== undefined && v < opts.min)
  ) {
    throw new UsageError(
      `--${name} ${JSON.stringify(value)} is not ${opts.int ? "a whole number" : "a number"}${
        opts.min !== undefined ? ` ≥ ${opts.min}` : ""
      }`,
    );
  }
  return v;
}

class UsageError extends Error {}

const A1111_NAMES: Record<string, string> = {
  ddim: "DDIM",
  pndm: "PLMS",
  euler: "Euler",
  euler_a: "Euler a",
  dpmpp_2m: "DPM++ 2M",
  lcm: "LCM",
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The output paths: a file (numbered when count > 1) or numbered names in a folder. */
async function outputPaths(out: string, count: number, seeds: number[]): Promise<string[]> {
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
 * The command-line flags, as `node:util` `parseArgs` options; `--help` describes each of them.
 *
 * @example
 * ```ts
 * import { OPTIONS } from "./gen.ts";
 * console.log(Object.keys(OPTIONS).map((f) => `--${f}`).join(" "));
 * ```
 */
export const OPTIONS = {
  model: { type: "string" },
  negative: { type: "string", default: "" },
  steps: { type: "string" },
  cfg: { type: "string" },
  seed: { type: "string" },
  sampler: { type: "string" },
  width: { type: "string" },
  height: { type: "string" },
  count: { type: "string" },
  out: { type: "string", default: "out/" },
  overwrite: { type: "boolean", default: false },
  dtype: { type: "string", default: "auto" },
  "clip-skip": { type: "string" },
  taesd: { type: "string" },
  tokenizer: { type: "string" },
  "config-from": { type: "string" },
  profile: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const;

/**
 * Runs the command line on `args` (as `Deno.args`); bad flags throw an error whose message names
 * the flag and the fix.
 *
 * @example
 * ```ts
 * import { main } from "./gen.ts";
 * await main(["a red fox", "--model", "tests/fixtures/models/tiny-sd15", "--steps", "4"]);
 * ```
 */
async function main(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: OPTIONS });
  if (values.help) {
    console.log(HELP);
    return;
  }
  const prompt = positionals.join(" ");
  if (!prompt) throw new UsageError(`no prompt given: deno run -A gen.ts "a prompt" --model PATH`);
  const model = values.model ?? Deno.env.get("DENOISE_MODEL");
  if (!model) {
    throw new UsageError(
      "no model given: pass --model PATH (a diffusers folder or .safetensors) or set DENOISE_MODEL",
    );
  }
  if (!(await exists(model))) throw new UsageError(`--model ${model}: no such file or folder`);
  const steps = num("steps", values.steps, 20, { int: true, min: 1 });
  const cfg = num("cfg", values.cfg, 7.5, { min: 0 });
  const count = num("count", values.count, 1, { int: true, min: 1 });
  const clipSkip = num("clip-skip", values["clip-skip"], 1, { int: true, min: 1 });
  const seed0 = num("seed", values.seed, Math.floor(Math.random() * 2 ** 32), {
    int: true,
    min: 0,
  });
  if (!["auto", "f16", "f32"].includes(values.dtype)) {
    throw new UsageError(`--dtype ${values.dtype}: use auto, f16 or f32`);
  }
  if (values.sampler) {
    try {
      resolveSchedulerName(values.sampler);
    } catch (e) {
      throw new UsageError(`--sampler: ${(e as Error).message}`);
    }
  }
  const size = (flag: "width" | "height") => {
    const v = values[flag];
    if (v === undefined) return undefined;
    const n = num(flag, v, 0, { int: true, min: 8 });
    if (n % 8 !== 0) {
      throw new UsageError(`--${flag} ${n} is not a multiple of 8 (the VAE's factor)`);
    }
    return n;
  };
  const width = size("width");
  const height = size("height");
  const seeds = Array.from({ length: count }, (_, i) => seed0 + i);
  const paths = await outputPaths(values.out, count, seeds);
  for (const p of paths) {
    if (!values.overwrite && await exists(p)) {
      throw new UsageError(`${p} exists: pass --overwrite to replace it, or choose another --out`);
    }
  }

  const t0 = performance.now();
  const pipe = await loadPipeline(model, {
    dtype: values.dtype as "auto" | "f16" | "f32",
    tokenizer: values.tokenizer,
    configFrom: values["config-from"],
  });
  console.error(
    `loaded ${pipe.name} (${pipe.dtype}) on ${pipe.rt.gpu.adapterName} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  const profiler = values.profile ? new Profiler() : null;
  pipe.rt.profiler = profiler;
  try {
    const factor = sizeFactor(pipe);
    for (const [flag, v] of [["width", width], ["height", height]] as const) {
      if (v !== undefined && v % factor !== 0) {
        throw new UsageError(
          `--${flag} ${v} is not a multiple of ${factor} (this model's U-Net needs it); try ${
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
    const karras = values.sampler ? resolveSchedulerName(values.sampler).karras : false;
    const samplerName = `${A1111_NAMES[sched.kind]}${karras ? " Karras" : ""}`;
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
