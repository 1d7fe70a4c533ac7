/**
 * The building blocks of the VAE (diffusers' `AutoencoderKL`; its `ResnetBlock2D`, without time
 * embedding, is the shared one of `resnet.ts`): the single-head spatial self-attention of the mid block, `UNetMidBlock2D`,
 * `Downsample2D` (stride-2 conv after diffusers' asymmetric zero padding), `Upsample2D` (nearest
 * 2× then conv, fused), `DownEncoderBlock2D`, `UpDecoderBlock2D`, and the diagonal Gaussian
 * posterior (`mean`, clamped `logvar`, `std`). Activations are NCHW `[B, C, H, W]`; each
 * `forward` records ops and never flushes.
 *
 * @module
 */
import { grid1d } from "../gpu/runtime.ts";
import { chain, type ChainStep } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { attention } from "../ops/attention.ts";
import { nchwToTokens, tokensToNchw } from "../ops/layout.ts";
import { Conv2d, GroupNorm, Linear } from "./layers.ts";
import { ResnetBlock2D } from "./resnet.ts";
import type { ParamScope } from "./params.ts";

/**
 * The GroupNorm epsilon of every VAE block (diffusers hard-codes `resnet_eps=1e-6`).
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { GroupNorm } from "@denoise/sd/models";
 * import { VAE_EPS } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const norm = new GroupNorm(scope.child("conv_norm_out"), 32, 128, VAE_EPS);
 * ```
 */
export const VAE_EPS = 1e-6;

/**
 * Receives internal activations by diffusers module path (`decoder.up_blocks.0`,
 * `post_quant_conv`, …), as the U-Net's `capture`: the model frees `t` afterwards, so copy what
 * you keep (`rt.copy`).
 */
export type CaptureFn = (name: string, t: Tensor) => void;

/**
 * The VAE mid block's `Attention`: GroupNorm, then single-head self-attention over the H·W
 * positions with `to_q`/`to_k`/`to_v`/`to_out.0` linears (scale 1/√C), added to the input.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { VaeAttention } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const attn = new VaeAttention(scope.child("attentions").child(0), 512, { groups: 32 });
 * ```
 */
export class VaeAttention {
  /** GroupNorm before the projections. */
  readonly group_norm: GroupNorm;
  /** Query projection. */
  readonly to_q: Linear;
  /** Key projection. */
  readonly to_k: Linear;
  /** Value projection. */
  readonly to_v: Linear;
  /** `to_out.0`: the output projection. */
  readonly to_out: [Linear];

  /** Takes the attention's parameters from `scope`. */
  constructor(scope: ParamScope, readonly channels: number, options: { groups: number }) {
    const c = channels;
    this.group_norm = new GroupNorm(scope.child("group_norm"), options.groups, c, VAE_EPS);
    this.to_q = new Linear(scope.child("to_q"), c, c);
    this.to_k = new Linear(scope.child("to_k"), c, c);
    this.to_v = new Linear(scope.child("to_v"), c, c);
    this.to_out = [new Linear(scope.child("to_out").child(0), c, c)];
  }

  /** `x + attention(group_norm(x))` on `x` `[B, C, H, W]` (left intact). */
  forward(x: Tensor): Tensor {
    const [, c, height, width] = x.shape;
    return chain(
      x,
      (t) => this.group_norm.forward(t), // [B, C, H, W]
      (t) => nchwToTokens(t), // [B, H*W, C]
      (t) =>
        x.rt.scope(() =>
          attention(this.to_q.forward(t), {
            k: this.to_k.forward(t), // [B, H*W, C]
            v: this.to_v.forward(t), // [B, H*W, C]
            heads: 1,
            causal: false,
            scale: c ** -0.5,
          })
        ), // [B, H*W, C]
      (t) => this.to_out[0].forward(t), // [B, H*W, C]
      (t) => tokensToNchw(t, { height, width, residual: x }), // [B, C, H, W]
    );
  }
}

/**
 * `UNetMidBlock2D` of the VAE: resnet, attention (unless `mid_block_add_attention` is false),
 * resnet, at constant width.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { UNetMidBlock2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const mid = new UNetMidBlock2D(scope.child("mid_block"), 512, { groups: 32, attention: true });
 * ```
 */
export class UNetMidBlock2D {
  /** `resnets.0`, `resnets.1`. */
  readonly resnets: [ResnetBlock2D, ResnetBlock2D];
  /** `attentions.0` (empty without attention). */
  readonly attentions: VaeAttention[];

  /** Takes the block's parameters from `scope`. */
  constructor(
    scope: ParamScope,
    readonly channels: number,
    options: { groups: number; attention: boolean },
  ) {
    const r = scope.child("resnets");
    const g = { groups: options.groups, eps: VAE_EPS };
    this.resnets = [
      new ResnetBlock2D(r.child(0), { ...g, inChannels: channels, outChannels: channels }),
      new ResnetBlock2D(r.child(1), { ...g, inChannels: channels, outChannels: channels }),
    ];
    this.attentions = options.attention
      ? [new VaeAttention(scope.child("attentions").child(0), channels, g)]
      : [];
  }

  /** The block on `x` `[B, C, H, W]` (left intact) → `[B, C, H, W]`. */
  forward(x: Tensor): Tensor {
    return chain(
      x,
      (t) => this.resnets[0].forward(t), // [B, C, H, W]
      ...this.attentions.map((attn) => (t: Tensor) => attn.forward(t)), // [B, C, H, W]
      (t) => this.resnets[1].forward(t), // [B, C, H, W]
    );
  }
}

/**
 * `Downsample2D` of the VAE encoder: zero-pad one row at the bottom and one column at the right
 * (`F.pad(x, (0, 1, 0, 1))`), then a 3×3 conv with stride 2 and no padding: `[B, C, H, W]` →
 * `[B, C, ⌊(H−1)/2⌋+1, ⌊(W−1)/2⌋+1]`.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Downsample2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const down = new Downsample2D(scope.child("downsamplers").child(0), 128);
 * ```
 */
export class Downsample2D {
  /** The stride-2 3×3 conv. */
  readonly conv: Conv2d;

  /** Takes `conv.weight` / `conv.bias` from `scope`. */
  constructor(scope: ParamScope, readonly channels: number) {
    this.conv = new Conv2d(scope.child("conv"), channels, channels, 3, { stride: 2, padding: 0 });
  }

  /** Downsamples `x` `[B, C, H, W]` (left intact). */
  forward(x: Tensor): Tensor {
    return chain(
      x,
      (t) => padBottomRight(t), // [B, C, H+1, W+1]
      (t) => this.conv.forward(t), // [B, C, H/2, W/2]
    );
  }
}

/**
 * `Upsample2D` of the VAE decoder: nearest-neighbour 2× then a 3×3 conv (fused into one op).
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Upsample2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const up = new Upsample2D(scope.child("upsamplers").child(0), 512);
 * ```
 */
export class Upsample2D {
  /** The 3×3 conv after upsampling. */
  readonly conv: Conv2d;

  /** Takes `conv.weight` / `conv.bias` from `scope`. */
  constructor(scope: ParamScope, readonly channels: number) {
    this.conv = new Conv2d(scope.child("conv"), channels, channels, 3, { padding: 1 });
  }

  /** Upsamples `x` `[B, C, H, W]` (left intact) → `[B, C, 2H, 2W]`. */
  forward(x: Tensor): Tensor {
    return this.conv.forward(x, { upsample: true }); // [B, C, 2H, 2W]
  }
}

/** `layers` VAE resnets, the first from `inChannels`, all to `outChannels`. */
function resnetStack(
  scope: ParamScope,
  inChannels: number,
  outChannels: number,
  options: { layers: number; groups: number },
): ResnetBlock2D[] {
  return Array.from({ length: options.layers }, (_, i) =>
    new ResnetBlock2D(scope.child(i), {
      inChannels: i === 0 ? inChannels : outChannels,
      outChannels,
      groups: options.groups,
      eps: VAE_EPS,
    }));
}

/** A layer's `forward` as a {@link chain} step. */
function layerStep(layer: { forward(x: Tensor): Tensor }): ChainStep {
  return (t) => layer.forward(t);
}

/**
 * `DownEncoderBlock2D`: `layers` resnets, then a `Downsample2D` unless it is the last block.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { DownEncoderBlock2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const block = new DownEncoderBlock2D(scope.child("down_blocks").child(0), 128, 128, {
 *   layers: 2, groups: 32, downsample: true,
 * });
 * ```
 */
export class DownEncoderBlock2D {
  /** `resnets.0` … `resnets.{layers−1}`. */
  readonly resnets: ResnetBlock2D[];
  /** `downsamplers.0`, when the block downsamples. */
  readonly downsamplers: Downsample2D[];

  /** Takes the block's parameters from `scope`. */
  constructor(
    scope: ParamScope,
    inChannels: number,
    outChannels: number,
    options: { layers: number; groups: number; downsample: boolean },
  ) {
    this.resnets = resnetStack(scope.child("resnets"), inChannels, outChannels, options);
    this.downsamplers = options.downsample
      ? [new Downsample2D(scope.child("downsamplers").child(0), outChannels)]
      : [];
  }

  /** The block on `x` `[B, Cin, H, W]` → `[B, Cout, H/2, W/2]` (`x` left intact). */
  forward(x: Tensor): Tensor {
    return chain(x, ...this.steps);
  }

  /** The block as chain steps (the VAE encoder chains them with its own). */
  get steps(): ChainStep[] {
    return [...this.resnets, ...this.downsamplers].map(layerStep);
  }
}

/**
 * `UpDecoderBlock2D`: `layers` resnets (`layers_per_block + 1`), then an `Upsample2D` unless it
 * is the last block.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { UpDecoderBlock2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const block = new UpDecoderBlock2D(scope.child("up_blocks").child(0), 512, 512, {
 *   layers: 3, groups: 32, upsample: true,
 * });
 * ```
 */
export class UpDecoderBlock2D {
  /** `resnets.0` … `resnets.{layers−1}`. */
  readonly resnets: ResnetBlock2D[];
  /** `upsamplers.0`, when the block upsamples. */
  readonly upsamplers: Upsample2D[];

  /** Takes the block's parameters from `scope`. */
  constructor(
    scope: ParamScope,
    inChannels: number,
    outChannels: number,
    options: { layers: number; groups: number; upsample: boolean },
  ) {
    this.resnets = resnetStack(scope.child("resnets"), inChannels, outChannels, options);
    this.upsamplers = options.upsample
      ? [new Upsample2D(scope.child("upsamplers").child(0), outChannels)]
      : [];
  }

  /** The block on `x` `[B, Cin, H, W]` → `[B, Cout, 2H, 2W]` (`x` left intact). */
  forward(x: Tensor): Tensor {
    return chain(x, ...this.steps);
  }

  /** The block as chain steps (the VAE decoder chains them with its own). */
  get steps(): ChainStep[] {
    return [...this.resnets, ...this.upsamplers].map(layerStep);
  }
}

/** The diagonal Gaussian the VAE encoder predicts; the caller disposes the three tensors. */
export interface LatentDistribution {
  /** `[B, L, h, w]`: the mean (diffusers' `latent_dist.mean`, what `mode()` returns). */
  mean: Tensor;
  /** `[B, L, h, w]`: the log-variance, clamped to [−30, 20]. */
  logvar: Tensor;
  /** `[B, L, h, w]`: `exp(0.5 · logvar)`. */
  std: Tensor;
}

const VAE_WG = 256;

/** Records one dispatch of `kernels/vae_ops.wgsl.jinja`. */
function vaeOp(
  x: Tensor,
  op: { mode: "pad" | "posterior"; outs: Tensor[]; a: number; b: number },
): void {
  const { mode, outs, a, b } = op;
  const n = outs[0].size;
  x.rt.dispatch({
    key: { kernel: "vae_ops", params: { mode, dtype: x.dtype, wg: VAE_WG } },
    bindings: [x, ...outs],
    uniforms: new Uint32Array([n, a, b, 0]),
    grid: grid1d(Math.ceil(n / VAE_WG)),
    label: `vae ${mode} [${outs[0].shape}]`,
  });
}

/**
 * Zero-pads one row at the bottom and one column at the right: `F.pad(x, (0, 1, 0, 1))` on
 * `[B, C, H, W]` → `[B, C, H+1, W+1]` (the asymmetric padding of the VAE's `Downsample2D`).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { padBottomRight } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const y = padBottomRight(rt.upload(new Float32Array([1, 2, 3, 4]), [1, 1, 2, 2]));
 * console.log(await y.read()); // [1, 2, 0, 3, 4, 0, 0, 0, 0]
 * ```
 */
export function padBottomRight(x: Tensor): Tensor {
  if (x.shape.length !== 4) {
    throw new Error(`denoise: padBottomRight takes NCHW [B, C, H, W], got [${x.shape}]`);
  }
  const [b, c, h, w] = x.shape;
  const out = x.rt.empty([b, c, h + 1, w + 1], x.dtype);
  vaeOp(x, { mode: "pad", outs: [out], a: h, b: w });
  return out;
}

/**
 * diffusers' `DiagonalGaussianDistribution` of the encoder's moments `[B, 2L, h, w]`: the first
 * `L` channels are the mean, the next `L` the log-variance (clamped to [−30, 20]), and
 * `std = exp(0.5 · logvar)`, in one dispatch.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { diagonalGaussian } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const moments = rt.upload(new Float32Array([0.5, -40]), [1, 2, 1, 1]);
 * const { mean, logvar, std } = diagonalGaussian(moments);
 * console.log(await mean.read(), await logvar.read(), await std.read()); // 0.5, −30, e^−15
 * ```
 */
export function diagonalGaussian(moments: Tensor): LatentDistribution {
  if (moments.shape.length !== 4 || moments.shape[1] % 2 !== 0) {
    throw new Error(
      `denoise: the VAE posterior takes moments [B, 2·latent_channels, h, w], got ` +
        `[${moments.shape}]`,
    );
  }
  const [b, c2, h, w] = moments.shape;
  const shape = [b, c2 / 2, h, w];
  const rt = moments.rt;
  const mean = rt.empty(shape, moments.dtype);
  const logvar = rt.empty(shape, moments.dtype);
  const std = rt.empty(shape, moments.dtype);
  vaeOp(moments, { mode: "posterior", outs: [mean, logvar, std], a: mean.size / b, b: 0 });
  return { mean, logvar, std };
}
