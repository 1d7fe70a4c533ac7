/**
 * TAESD, the tiny SD latent decoder (madebyollin/taesd): latent `[B, 4, h, w]` (as the U-Net sees
 * it, scaling factor 1) → RGB `[B, 3, 8h, 8w]` in [0, 1] (not clamped). For fast previews and
 * decoding.
 *
 * The network is a torch `Sequential` whose indices are the checkpoint's key prefixes:
 * `Clamp, conv, ReLU, Block×3, Upsample, conv, Block×3, Upsample, conv, Block×3, Upsample, conv,
 * Block, conv`. `Clamp` is `3·tanh(x/3)`; a `Block` is `ReLU(conv(ReLU(conv(ReLU(conv(x))))) +
 * x)` (a 1×1 `skip` conv replaces `x` where the channel count changes); upsampling is nearest 2×;
 * convs are 3×3 with padding 1, those after an upsample without bias.
 *
 * Every layer is one {@link conv2d} dispatch: the clamp is the first conv's `softClamp` prologue,
 * each upsample is fused into the following conv's input, and the ReLUs and the Block's residual
 * add are conv epilogues.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import type { Runtime } from "../gpu/runtime.ts";
import { chain, type ChainStep } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { cast } from "../ops/elementwise.ts";
import { conv2d } from "../ops/conv2d.ts";
import { openSafetensors } from "../weights/safetensors.ts";

/** The decoder's torch `Sequential`, one entry per index. */
const DECODER_LAYERS = [
  "clamp",
  "conv",
  "relu",
  "block",
  "block",
  "block",
  "up",
  "conv",
  "block",
  "block",
  "block",
  "up",
  "conv",
  "block",
  "block",
  "block",
  "up",
  "conv",
  "block",
  "conv",
] as const;

/** TAESD's `Clamp` bound: 3·tanh(x/3). */
const CLAMP = 3;

interface Conv {
  weight: Tensor;
  bias?: Tensor;
}

interface Block {
  convs: [Conv, Conv, Conv];
  skip?: Conv;
}

/** A loaded TAESD decoder. */
export interface TaesdDecoder {
  /** The dtype the weights and activations use. */
  readonly dtype: DType;
  /** Latent channels the decoder takes (4 for SD 1.x/2.x). */
  readonly latentChannels: number;
  /** Records the decode of `latent` `[B, C, h, w]` → RGB `[B, 3, 8h, 8w]` in about [0, 1]. */
  decode(latent: Tensor): Tensor;
  /** Frees the weights. */
  dispose(): void;
}

/** Options of {@link loadTaesdDecoder}. */
export interface TaesdOptions {
  /** The GPU runtime to upload the weights to. */
  runtime: Runtime;
  /** Weight and activation dtype (default: the runtime's preferred dtype). */
  dtype?: DType;
}

/**
 * Loads `taesd_decoder.safetensors` (F32, F16 or BF16) onto the GPU. Every tensor of the file must
 * be used and every expected one present.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { loadTaesdDecoder } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const taesd = await loadTaesdDecoder("../shared/data/taesd/taesd_decoder.safetensors", {
 *   runtime: rt,
 * });
 * const latent = rt.upload(new Float32Array(4 * 8 * 8), [1, 4, 8, 8], { dtype: taesd.dtype });
 * const rgb = taesd.decode(latent); // [1, 3, 64, 64]
 * console.log(rgb.shape, (await rgb.read()).slice(0, 4));
 * ```
 */
export async function loadTaesdDecoder(
  path: string | URL,
  options: TaesdOptions,
): Promise<TaesdDecoder> {
  const rt = options.runtime;
  const dtype = options.dtype ?? rt.preferredDType;
  rt.assertDType(dtype);
  const file = await openSafetensors(path);
  const uploaded: Tensor[] = [];
  const layers: (Conv | Block | null)[] = [];
  try {
    checkKeys(file.tensors, typeof path === "string" ? path : decodeURIComponent(path.pathname));
    const take = async (key: string): Promise<Tensor> => {
      const t = rt.keep(
        rt.upload(await file.readF32(key), file.tensors.get(key)!.shape, { dtype }),
      );
      uploaded.push(t);
      return t;
    };
    const conv = async (prefix: string): Promise<Conv> => ({
      weight: await take(`${prefix}.weight`), // [Cout, Cin, 3, 3]
      bias: file.tensors.has(`${prefix}.bias`) ? await take(`${prefix}.bias`) : undefined,
    });
    for (let i = 0; i < DECODER_LAYERS.length; i++) {
      const kind = DECODER_LAYERS[i];
      if (kind === "conv") layers.push(await conv(`${i}`));
      else if (kind === "block") {
        const convs: [Conv, Conv, Conv] = [
          await conv(`${i}.conv.0`),
          await conv(`${i}.conv.2`),
          await conv(`${i}.conv.4`),
        ];
        const skip = file.tensors.has(`${i}.skip.weight`) ? await conv(`${i}.skip`) : undefined;
        layers.push({ convs, skip });
      } else layers.push(null);
    }
  } catch (e) {
    for (const t of uploaded) t.dispose();
    throw e;
  } finally {
    file.close();
  }
  const first = layers[1] as Conv;
  const latentChannels = first.weight.shape[1];
  return {
    dtype,
    latentChannels,
    decode: (latent) => decodeWith(layers, latent, dtype, latentChannels),
    dispose: () => {
      for (const t of uploaded) t.dispose();
    },
  };
}

/** The checkpoint keys of the decoder's layers: required weights, optional biases and skips. */
function checkKeys(tensors: Map<string, { shape: number[] }>, where: string): void {
  const required: string[] = [];
  const optional: string[] = [];
  const conv = (prefix: string, skip = false) => {
    (skip ? optional : required).push(`${prefix}.weight`);
    optional.push(`${prefix}.bias`);
  };
  DECODER_LAYERS.forEach((kind, i) => {
    if (kind === "conv") conv(`${i}`);
    if (kind === "block") {
      for (const j of [0, 2, 4]) conv(`${i}.conv.${j}`);
      conv(`${i}.skip`, true);
    }
  });
  const known = new Set([...required, ...optional]);
  const list = (keys: string[]) =>
    keys.slice(0, 6).join(", ") + (keys.length > 6 ? ` and ${keys.length - 6} more` : "");
  const missing = required.filter((k) => !tensors.has(k));
  const unexpected = [...tensors.keys()].filter((k) => !known.has(k));
  const bad = required.filter((k) => tensors.get(k) && tensors.get(k)!.shape.length !== 4);
  if (missing.length + unexpected.length + bad.length === 0) return;
  const parts = [
    missing.length > 0 ? `missing ${list(missing)}` : "",
    unexpected.length > 0 ? `unexpected ${list(unexpected)}` : "",
    bad.length > 0 ? `not 4-D conv weights: ${list(bad)}` : "",
  ].filter((s) => s);
  throw new Error(
    `denoise: ${where} is not a TAESD decoder (${parts.join("; ")}); use ` +
      `taesd_decoder.safetensors from madebyollin/taesd`,
  );
}

function decodeWith(
  layers: (Conv | Block | null)[],
  latent: Tensor,
  dtype: DType,
  channels: number,
): Tensor {
  if (latent.shape.length !== 4 || latent.shape[1] !== channels) {
    throw new Error(
      `denoise: TAESD decodes latents [B, ${channels}, h, w], got [${latent.shape}]`,
    );
  }
  const steps: ChainStep[] = [(t) => t.dtype === dtype ? t : cast(t, dtype)];
  let softClamp: number | undefined;
  let upsample = false;
  for (let i = 0; i < DECODER_LAYERS.length; i++) {
    const kind = DECODER_LAYERS[i];
    if (kind === "clamp") softClamp = CLAMP;
    else if (kind === "up") upsample = true;
    else if (kind === "conv") {
      const { weight, bias } = layers[i] as Conv;
      const relu = DECODER_LAYERS[i + 1] === "relu";
      const options = { bias, softClamp, upsample, activation: relu ? "relu" : "none" } as const;
      // [B, 64, H, W] (×2 after an upsample); [B, 3, 8h, 8w] for the last conv
      steps.push((t) => conv2d(t, weight, options));
      softClamp = undefined;
      upsample = false;
      if (relu) i++;
    } else if (kind === "block") {
      const block = layers[i] as Block;
      steps.push((t) => taesdBlock(t, block)); // [B, 64, H, W]
    }
  }
  return chain(latent, ...steps); // [B, 3, 8h, 8w]
}

/** `ReLU(conv(relu(conv(relu(conv(h))))) + skip(h))` on `h` `[B, 64, H, W]`. */
function taesdBlock(h: Tensor, block: Block): Tensor {
  const { convs, skip } = block;
  return h.rt.scope(() => {
    const b = chain(
      h,
      (t) => conv2d(t, convs[0].weight, { bias: convs[0].bias, activation: "relu" }), // [B, 64, H, W]
      (t) => conv2d(t, convs[1].weight, { bias: convs[1].bias, activation: "relu" }), // [B, 64, H, W]
    );
    const res = skip ? conv2d(h, skip.weight, { bias: skip.bias }) : h; // [B, 64, H, W]
    return conv2d(b, convs[2].weight, { bias: convs[2].bias, residual: res, activation: "relu" }); // [B, 64, H, W]
  });
}
