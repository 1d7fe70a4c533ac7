/**
 * Everything `gen.ts` can check before the long load: the paths the flags name are readable, the
 * model's configs are sound (read without its weights), the size fits the model's factors and the
 * GPU's limits (the VAE decode tiles itself when needed; a tile size that cannot work is refused),
 * the sampler accepts the steps, the clip skip fits the text encoder. A mistake is a
 * {@link UsageError} quoting the flag as the user typed it.
 *
 * @example
 * ```ts no-run
 * import { preflight } from "./preflight.ts";
 * import { parseFlags } from "./flags.ts";
 * import { FLAGS } from "./options.ts";
 * const { values, spelled } = parseFlags(FLAGS, ["-m", "tests/fixtures/models/tiny-sd15"]);
 * const checked = await preflight(values, spelled);
 * console.log(checked.width, checked.height); // 128 128
 * ```
 *
 * @module
 */
import { Runtime } from "../gpu/runtime.ts";
import { DEFAULT_MODEL, inspectModel, latentFactor, type ModelInfo } from "../pipeline/load.ts";
import { checkSampleOptions, schedulerFor, sizeFactor } from "../pipeline/sample.ts";
import type { Scheduler } from "../schedulers/mod.ts";
import { planVaeTiles } from "../pipeline/vae_tiling.ts";
import { type FlagValues, UsageError } from "./flags.ts";
import type { FLAGS } from "./options.ts";
import { checkReadable } from "./paths.ts";
import { type InitImages, readInitImages } from "./images.ts";

/** What {@link preflight} found. */
export interface Checked {
  /** The model path. */
  model: string;
  /** The model's configs, name and scheduler config. */
  info: ModelInfo;
  /** The GPU runtime (created here: its limits bound the size). */
  rt: Runtime;
  /** The image width that will be used. */
  width: number;
  /** The image height. */
  height: number;
  /** The sampler, built with the run's steps. */
  scheduler: Scheduler;
  /** `--init-img` and `--mask`, decoded and fitted to the run's size. */
  images: InitImages;
}

type Spelled = Partial<Record<keyof typeof FLAGS, string>>;

/**
 * Checks the flags against the model and the GPU, before any weights are read.
 *
 * @example
 * ```ts no-run
 * import { preflight } from "./preflight.ts";
 * import { parseFlags } from "./flags.ts";
 * import { FLAGS } from "./options.ts";
 * const { values, spelled } = parseFlags(FLAGS, ["-m", "tests/fixtures/models/tiny-sd15", "-W", "100"]);
 * await preflight(values, spelled).catch((e) => console.log(e.message));
 * // -W 100 is not a multiple of 64 (this model's sizes are); try 128
 * ```
 */
export async function preflight(
  values: FlagValues<typeof FLAGS>,
  spelled: Spelled,
): Promise<Checked> {
  const model = values.model ?? DEFAULT_MODEL; // the bundled emoji model unless one is named
  await checkReadable(model, spelled.model ?? "--model");
  for (
    const key of [
      "configFrom",
      "tokenizer",
      "taesd",
      "vae",
      "loraModelDir",
      "embdDir",
      "initImg",
      "mask",
    ] as const
  ) {
    const path = values[key];
    if (path !== undefined) await checkReadable(path, spelled[key]!);
  }
  const info = await inspectModel(model, { configFrom: values.configFrom });
  const factor = sizeFactor(info);
  const latent = latentFactor(info);
  for (const key of ["width", "height"] as const) {
    const v = values[key];
    if (v !== undefined && v % factor !== 0) {
      const lo = Math.max(factor, v - (v % factor));
      const hint = lo === v - (v % factor) ? `${lo} or ${lo + factor}` : `${lo}`;
      throw new UsageError(
        `${spelled[key]} ${v} is not a multiple of ${factor} (this model's VAE scales by ` +
          `${latent}); try ${hint}`,
      );
    }
  }
  const layers = info.configs.text_encoder.num_hidden_layers;
  if (values.clipSkip > layers) {
    throw new UsageError(
      `${spelled.clipSkip} ${values.clipSkip}: this model's text encoder has ${layers} layers: ` +
        `use 1 … ${layers}`,
    );
  }
  const rt = await Runtime.create();
  if (values.dtype === "f16" && !rt.gpu.hasF16) {
    throw new UsageError(
      `${spelled.dtype} f16: ${rt.gpu.adapterName} has no shader-f16: use --dtype f32 or auto`,
    );
  }
  const images = await readInitImages(values, { spelled, factor });
  const options = {
    steps: values.steps,
    guidance: values.cfg,
    scheduler: values.sampler,
    schedule: values.schedule,
    width: images.width,
    height: images.height,
    image: images.image,
    mask: images.mask,
    strength: values.strength,
  };
  let scheduler: Scheduler;
  try {
    scheduler = schedulerFor(info, options);
  } catch (e) {
    const sampler = values.sampler !== undefined
      ? `${spelled.sampler} ${values.sampler}`
      : `the model's ${info.schedulerConfig._class_name ?? "PNDMScheduler"}`;
    const schedule = values.schedule !== undefined
      ? ` and ${spelled.schedule} ${values.schedule}`
      : "";
    throw new UsageError(
      `${sampler} with ${spelled.steps ?? "--steps"} ${values.steps}${schedule}: ` +
        (e as Error).message.replace(/^createScheduler: /, ""),
      { cause: e },
    );
  }
  let size: { width: number; height: number };
  try {
    size = checkSampleOptions({ ...info, rt }, options);
  } catch (e) {
    throw new UsageError((e as Error).message, { cause: e });
  }
  if (values.taesd === undefined) {
    try {
      planVaeTiles(info.configs.vae, {
        height: size.height / latent,
        width: size.width / latent,
        tiling: values.vaeTiling || values.vaeTileSize !== undefined ? true : "auto",
        tileSize: values.vaeTileSize,
        maxBindingBytes: rt.gpu.limits.maxStorageBufferBindingSize,
      });
    } catch (e) {
      const flag = values.vaeTileSize !== undefined
        ? `${spelled.vaeTileSize} ${values.vaeTileSize}`
        : `${size.width}×${size.height}`;
      throw new UsageError(`${flag}: ${(e as Error).message}`, { cause: e });
    }
  }
  return { model, info, rt, ...size, scheduler, images };
}
