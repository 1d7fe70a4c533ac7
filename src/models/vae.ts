/**
 * The Stable Diffusion VAE (diffusers' `AutoencoderKL`, keys `encoder.*`, `decoder.*`,
 * `quant_conv.*`, `post_quant_conv.*`): the decoder turns latents into images (8× larger, about
 * [−1, 1]); the encoder (img2img) turns images into the diagonal Gaussian over latents. Layout
 * NCHW. Single-file checkpoints work the same way: the weights layer renames their keys and
 * squeezes the 1×1-conv attention weights into linears.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import type { Runtime } from "../gpu/runtime.ts";
import { bindScope, chain, type ChainStep } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { cast } from "../ops/elementwise.ts";
import type { AutoencoderKLConfig } from "../weights/configs.ts";
import type { LoadedTensor } from "../weights/source.ts";
import { Conv2d, GroupNorm } from "./layers.ts";
import { type ParamScope, ParamStore } from "./params.ts";
import {
  type CaptureFn,
  diagonalGaussian,
  DownEncoderBlock2D,
  type LatentDistribution,
  UNetMidBlock2D,
  UpDecoderBlock2D,
  VAE_EPS,
} from "./vae_blocks.ts";

export type { CaptureFn, LatentDistribution } from "./vae_blocks.ts";

/** Which halves of the VAE to load. */
export type VaePart = "encoder" | "decoder";

/** Options of {@link AutoencoderKL.load}. */
export interface VaeLoadOptions {
  /** The checkpoint tensors by diffusers key (e.g. from `readComponent(source, "vae")`). */
  tensors: ReadonlyMap<string, LoadedTensor>;
  /** The model config (`vae/config.json`). */
  config: AutoencoderKLConfig;
  /** The dtype of parameters and activations. */
  dtype: DType;
  /** The halves to load (default both); keys of a half not loaded are left unused. */
  parts?: VaePart[];
}

/** Options of {@link AutoencoderKL.decode} and {@link AutoencoderKL.encode}. */
export interface VaeForwardOptions {
  /** Receives internal activations by diffusers module path (see {@link CaptureFn}). */
  capture?: CaptureFn;
}

/** The config values the VAE reads, checked. */
function checkConfig(config: AutoencoderKLConfig): void {
  const boc = config.block_out_channels;
  const groups = config.norm_num_groups;
  const bad = (what: string) => {
    throw new Error(`denoise: VAE config: ${what}; check vae/config.json`);
  };
  if (!Array.isArray(boc) || boc.length === 0 || !boc.every((c) => Number.isInteger(c) && c > 0)) {
    bad(`block_out_channels must be a list of positive integers, got ${JSON.stringify(boc)}`);
  }
  if (!(Number.isInteger(groups) && groups > 0) || boc.some((c) => c % groups !== 0)) {
    bad(`norm_num_groups ${groups} must divide every block_out_channels entry [${boc}]`);
  }
  for (const key of ["layers_per_block", "latent_channels", "in_channels", "out_channels"]) {
    const v = config[key];
    if (!(Number.isInteger(v) && (v as number) > 0)) bad(`${key} must be a positive integer`);
  }
  const act = config.act_fn ?? "silu";
  if (act !== "silu") bad(`act_fn "${act}" is not supported (only "silu")`);
  const down = (config.down_block_types ?? []) as string[];
  const up = (config.up_block_types ?? []) as string[];
  if (down.some((t) => t !== "DownEncoderBlock2D") || up.some((t) => t !== "UpDecoderBlock2D")) {
    bad(
      `only DownEncoderBlock2D / UpDecoderBlock2D blocks are supported, got ` +
        `${JSON.stringify(down)} / ${JSON.stringify(up)}`,
    );
  }
  if (config.norm_type !== undefined && config.norm_type !== "group") {
    bad(`norm_type "${config.norm_type}" is not supported (only "group")`);
  }
}

/** Wraps a chain step so that `capture` sees its output as `<prefix>.<name>`. */
function tapper(prefix: string, capture?: CaptureFn): (name: string, step: ChainStep) => ChainStep {
  if (capture) capture = bindScope(capture); // the hook allocates in our caller's scope
  return (name, step) => (t) => {
    const y = step(t);
    capture?.(prefix ? `${prefix}.${name}` : name, y);
    return y;
  };
}

/**
 * A block's steps with the last one tapped under the block's name: chaining a block's steps into
 * the model's chain (rather than calling its `forward`) frees the block's input after its first
 * layer, not after the whole block.
 */
function tapLast(
  name: string,
  steps: ChainStep[],
  tap: (name: string, step: ChainStep) => ChainStep,
): ChainStep[] {
  return steps.map((step, i) => i === steps.length - 1 ? tap(name, step) : step);
}

/** A step list of one step for a layer that exists, none for one that does not. */
function optional<L>(layer: L | undefined, step: (layer: L) => ChainStep): ChainStep[] {
  return layer ? [step(layer)] : [];
}

/** `conv_out(silu(conv_norm_out(h)))`; with `capture`, `conv_norm_out` (without SiLU) too. */
function normActOut(norm: GroupNorm, conv: Conv2d, prefix: string, capture?: CaptureFn) {
  const tap = tapper(prefix, capture);
  if (capture) capture = bindScope(capture);
  return [
    tap("conv_act", (t) => {
      if (capture) {
        using normed = norm.forward(t); // [B, C, H, W]
        capture(`${prefix}.conv_norm_out`, normed);
      }
      return norm.forward(t, { silu: true }); // [B, C, H, W]
    }),
    tap("conv_out", (t) => conv.forward(t)),
  ];
}

/**
 * The VAE encoder: `conv_in`, down blocks, mid block, `conv_norm_out` + SiLU, `conv_out` →
 * `2 · latent_channels` moments.
 *
 * @example
 * ```ts no-run
 * import type { AutoencoderKLConfig } from "@denoise/sd/weights";
 * import type { ParamStore } from "@denoise/sd/models";
 * import { Encoder } from "@denoise/sd/models";
 * declare const store: ParamStore;
 * declare const config: AutoencoderKLConfig;
 * const encoder = new Encoder(store.scope("encoder"), config);
 * ```
 */
export class Encoder {
  /** 3×3 conv, image → first block's channels. */
  readonly conv_in: Conv2d;
  /** `down_blocks.*`. */
  readonly down_blocks: DownEncoderBlock2D[];
  /** `mid_block`. */
  readonly mid_block: UNetMidBlock2D;
  /** GroupNorm before the output conv. */
  readonly conv_norm_out: GroupNorm;
  /** 3×3 conv → `2 · latent_channels` (mean and log-variance). */
  readonly conv_out: Conv2d;

  /** Takes the encoder's parameters from `scope` (`encoder`). */
  constructor(scope: ParamScope, config: AutoencoderKLConfig) {
    const boc = config.block_out_channels, groups = config.norm_num_groups;
    this.conv_in = new Conv2d(scope.child("conv_in"), config.in_channels, boc[0], 3, {
      padding: 1,
    });
    const blocks = scope.child("down_blocks");
    this.down_blocks = boc.map((out, i) =>
      new DownEncoderBlock2D(blocks.child(i), i === 0 ? boc[0] : boc[i - 1], out, {
        layers: config.layers_per_block,
        groups,
        downsample: i < boc.length - 1,
      })
    );
    const top = boc[boc.length - 1];
    this.mid_block = new UNetMidBlock2D(scope.child("mid_block"), top, {
      groups,
      attention: config.mid_block_add_attention !== false,
    });
    this.conv_norm_out = new GroupNorm(scope.child("conv_norm_out"), groups, top, VAE_EPS);
    this.conv_out = new Conv2d(scope.child("conv_out"), top, 2 * config.latent_channels, 3, {
      padding: 1,
    });
  }

  /** `[B, 3, H, W]` (left intact) → moments `[B, 2L, H/f, W/f]`; `capture` names `encoder.*`. */
  forward(image: Tensor, capture?: CaptureFn): Tensor {
    const tap = tapper("encoder", capture);
    return chain(
      image,
      // 1. conv_in
      tap("conv_in", (t) => this.conv_in.forward(t)), // [B, C0, H, W]
      // 2. down blocks (each but the last halves H and W)
      ...this.down_blocks.flatMap((block, i) => tapLast(`down_blocks.${i}`, block.steps, tap)), // [B, Ci, H/2^i', W/2^i']
      // 3. mid block
      tap("mid_block", (t) => this.mid_block.forward(t)), // [B, Ctop, h, w]
      // 4. conv_norm_out + SiLU, conv_out
      ...normActOut(this.conv_norm_out, this.conv_out, "encoder", capture), // [B, 2L, h, w]
    );
  }
}

/**
 * The VAE decoder: `conv_in`, mid block, up blocks (channels reversed, `layers_per_block + 1`
 * resnets each), `conv_norm_out` + SiLU, `conv_out` → image.
 *
 * @example
 * ```ts no-run
 * import type { AutoencoderKLConfig } from "@denoise/sd/weights";
 * import type { ParamStore } from "@denoise/sd/models";
 * import { Decoder } from "@denoise/sd/models";
 * declare const store: ParamStore;
 * declare const config: AutoencoderKLConfig;
 * const decoder = new Decoder(store.scope("decoder"), config);
 * ```
 */
export class Decoder {
  /** 3×3 conv, latents → the widest channels. */
  readonly conv_in: Conv2d;
  /** `mid_block`. */
  readonly mid_block: UNetMidBlock2D;
  /** `up_blocks.*`. */
  readonly up_blocks: UpDecoderBlock2D[];
  /** GroupNorm before the output conv. */
  readonly conv_norm_out: GroupNorm;
  /** 3×3 conv → image channels. */
  readonly conv_out: Conv2d;

  /** Takes the decoder's parameters from `scope` (`decoder`). */
  constructor(scope: ParamScope, config: AutoencoderKLConfig) {
    const rev = [...config.block_out_channels].reverse(), groups = config.norm_num_groups;
    this.conv_in = new Conv2d(scope.child("conv_in"), config.latent_channels, rev[0], 3, {
      padding: 1,
    });
    this.mid_block = new UNetMidBlock2D(scope.child("mid_block"), rev[0], {
      groups,
      attention: config.mid_block_add_attention !== false,
    });
    const blocks = scope.child("up_blocks");
    this.up_blocks = rev.map((out, i) =>
      new UpDecoderBlock2D(blocks.child(i), i === 0 ? rev[0] : rev[i - 1], out, {
        layers: config.layers_per_block + 1,
        groups,
        upsample: i < rev.length - 1,
      })
    );
    const last = rev[rev.length - 1];
    this.conv_norm_out = new GroupNorm(scope.child("conv_norm_out"), groups, last, VAE_EPS);
    this.conv_out = new Conv2d(scope.child("conv_out"), last, config.out_channels, 3, {
      padding: 1,
    });
  }

  /** `[B, L, h, w]` (left intact) → `[B, 3, h·f, w·f]`; `capture` names `decoder.*`. */
  forward(z: Tensor, capture?: CaptureFn): Tensor {
    const tap = tapper("decoder", capture);
    return chain(
      z,
      // 1. conv_in
      tap("conv_in", (t) => this.conv_in.forward(t)), // [B, Ctop, h, w]
      // 2. mid block
      tap("mid_block", (t) => this.mid_block.forward(t)), // [B, Ctop, h, w]
      // 3. up blocks (each but the last doubles H and W)
      ...this.up_blocks.flatMap((block, i) => tapLast(`up_blocks.${i}`, block.steps, tap)), // [B, Ci, h·2^i', w·2^i']
      // 4. conv_norm_out + SiLU, conv_out
      ...normActOut(this.conv_norm_out, this.conv_out, "decoder", capture), // [B, 3, H, W]
    );
  }
}

/**
 * diffusers' `AutoencoderKL`. `decode` takes latents already divided by
 * `config.scaling_factor` (the pipeline divides, as diffusers does before `vae.decode`);
 * `encode` returns the unscaled latent distribution (multiply a sample or the mean by
 * `scaling_factor` before the U-Net).
 *
 * @example
 * ```ts no-run
 * import { Runtime } from "@denoise/sd/gpu";
 * import { openModelSource, readComponent } from "@denoise/sd/weights";
 * import { AutoencoderKL } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const src = await openModelSource("tests/fixtures/models/tiny-sd15");
 * const vae = AutoencoderKL.load(rt, {
 *   tensors: await readComponent(src, "vae"),
 *   config: src.configs.vae,
 *   dtype: "f32",
 * });
 * const z = rt.upload(new Float32Array(4 * 16 * 16), [1, 4, 16, 16]); // latents / scaling_factor
 * const image = vae.decode(z); // [1, 3, 128, 128], about [-1, 1]
 * const { mean } = vae.encode(image); // [1, 4, 16, 16]
 * console.log(await mean.read());
 * ```
 */
export class AutoencoderKL {
  /** The model config. */
  readonly config: AutoencoderKLConfig;
  /** The parameter (and activation) dtype. */
  readonly dtype: DType;
  /** `encoder`, when loaded. */
  readonly encoder?: Encoder;
  /** `quant_conv` (1×1 on the moments), when the encoder is loaded and the config uses it. */
  readonly quant_conv?: Conv2d;
  /** `decoder`, when loaded. */
  readonly decoder?: Decoder;
  /** `post_quant_conv` (1×1 on the latents), when the decoder is loaded and the config uses it. */
  readonly post_quant_conv?: Conv2d;
  /** Checkpoint keys the model did not use (those of a half not loaded, among others). */
  unused: string[] = [];
  readonly #store: ParamStore;

  /** Takes the parameters of `parts` from `store` (call `store.finish()` after, or use `load`). */
  constructor(
    store: ParamStore,
    config: AutoencoderKLConfig,
    options: { parts?: VaePart[] } = {},
  ) {
    checkConfig(config);
    const parts = options.parts ?? ["encoder", "decoder"];
    if (parts.length === 0 || parts.some((p) => p !== "encoder" && p !== "decoder")) {
      throw new Error(
        `denoise: VAE parts must be "encoder" and/or "decoder", got ${JSON.stringify(parts)}`,
      );
    }
    this.#store = store;
    this.config = config;
    this.dtype = store.dtype;
    const l = config.latent_channels;
    if (parts.includes("encoder")) {
      this.encoder = new Encoder(store.scope("encoder"), config);
      if (config.use_quant_conv !== false) {
        this.quant_conv = new Conv2d(store.scope("quant_conv"), 2 * l, 2 * l, 1);
      }
    }
    if (parts.includes("decoder")) {
      this.decoder = new Decoder(store.scope("decoder"), config);
      if (config.use_post_quant_conv !== false) {
        this.post_quant_conv = new Conv2d(store.scope("post_quant_conv"), l, l, 1);
      }
    }
  }

  /**
   * Builds the VAE from a component's tensors (`readComponent(src, "vae")`), strictly: throws a
   * `StrictImportError` naming every missing key and wrong shape; unused keys (all of the
   * encoder's when only the decoder is loaded) are kept in `unused`.
   *
   * @example
   * ```ts no-run
   * import { Runtime } from "@denoise/sd/gpu";
   * import { openModelSource, readComponent } from "@denoise/sd/weights";
   * import { AutoencoderKL } from "@denoise/sd/models";
   * const rt = await Runtime.create();
   * const src = await openModelSource("tests/fixtures/models/tiny-sd15");
   * const vae = AutoencoderKL.load(rt, {
   *   tensors: await readComponent(src, "vae"),
   *   config: src.configs.vae,
   *   dtype: "f16",
   *   parts: ["decoder"],
   * });
   * console.log(vae.unused.every((k) => k.startsWith("encoder.") || k.startsWith("quant_conv.")));
   * ```
   */
  static load(
    rt: Runtime,
    options: VaeLoadOptions,
  ): AutoencoderKL {
    const { tensors, config } = options;
    const store = new ParamStore(rt, tensors, { dtype: options.dtype, component: "vae" });
    let model: AutoencoderKL;
    try {
      model = new AutoencoderKL(store, config, { parts: options.parts });
    } catch (e) {
      store.dispose();
      throw e;
    }
    try {
      model.unused = store.finish();
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }

  /** The spatial factor between latents and images (8 for SD). */
  get scaleFactor(): number {
    return 2 ** (this.config.block_out_channels.length - 1);
  }

  /**
   * Decodes latents `[B, latent_channels, h, w]` — ALREADY divided by `scaling_factor` — to
   * images `[B, 3, h·f, w·f]` in about [−1, 1] (`f` = {@link scaleFactor}), in the model's
   * dtype (an input of the other dtype is cast). Records the work; the caller disposes the
   * result.
   */
  decode(latents: Tensor, options: VaeForwardOptions = {}): Tensor {
    const decoder = this.decoder;
    if (!decoder) {
      throw new Error(
        `denoise: this VAE was loaded without its decoder: load with parts ["decoder"]`,
      );
    }
    const l = this.config.latent_channels;
    const s = latents.shape;
    if (s.length !== 4 || s[1] !== l) {
      throw new Error(
        `denoise: VAE decode takes latents [B, ${l}, h, w], got [${s}]: pass the U-Net's latents ` +
          `divided by scaling_factor ${this.config.scaling_factor}`,
      );
    }
    const capture = options.capture && bindScope(options.capture); // runs in our caller's scope
    const tap = tapper("", capture);
    return chain(
      latents,
      // 1. dtype
      (t) => t.dtype === this.dtype ? t : cast(t, this.dtype), // [B, L, h, w]
      // 2. post_quant_conv
      ...optional(this.post_quant_conv, (conv) => tap("post_quant_conv", (t) => conv.forward(t))), // [B, L, h, w]
      // 3. decoder
      (t) => decoder.forward(t, capture), // [B, 3, H, W]
    );
  }

  /**
   * Encodes images `[B, in_channels, H, W]` in [−1, 1] (H and W multiples of
   * {@link scaleFactor}) to the latent distribution `[B, latent_channels, H/f, W/f]` (unscaled:
   * multiply by `scaling_factor` for the U-Net). Records the work; the caller disposes the
   * three tensors.
   */
  encode(image: Tensor, options: VaeForwardOptions = {}): LatentDistribution {
    const encoder = this.encoder;
    if (!encoder) {
      throw new Error(
        `denoise: this VAE was loaded without its encoder (img2img needs it): load with parts ` +
          `["encoder", "decoder"]`,
      );
    }
    const c = this.config.in_channels, f = this.scaleFactor;
    const s = image.shape;
    if (s.length !== 4 || s[1] !== c || s[2] % f !== 0 || s[3] % f !== 0 || s[2] === 0) {
      throw new Error(
        `denoise: VAE encode takes images [B, ${c}, H, W] with H and W multiples of ${f}, got ` +
          `[${s}]: resize or crop the image`,
      );
    }
    const capture = options.capture && bindScope(options.capture); // runs in our caller's scope
    const tap = tapper("", capture);
    return image.rt.scope(() => {
      const moments = chain(
        image,
        // 1. dtype
        (t) => t.dtype === this.dtype ? t : cast(t, this.dtype), // [B, 3, H, W]
        // 2. encoder
        (t) => encoder.forward(t, capture), // [B, 2L, H/f, W/f]
        // 3. quant_conv
        ...optional(this.quant_conv, (conv) => tap("quant_conv", (t) => conv.forward(t))), // [B, 2L, H/f, W/f]
      );
      // 4. diagonal Gaussian: mean, clamped logvar, std
      return diagonalGaussian(moments); // 3 × [B, L, H/f, W/f]
    });
  }

  /** Frees the model's GPU parameters. */
  dispose(): void {
    this.#store.dispose();
  }
}
