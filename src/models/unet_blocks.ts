/**
 * The down, mid and up blocks of the diffusers `UNet2DConditionModel` under their checkpoint
 * names (their resnets are `ResnetBlock2D` in `resnet.ts`, their transformers
 * `Transformer2DModel` in `transformer_2d.ts`). Each `forward` records ops, borrows its inputs and
 * returns new tensors (the ownership rule of `src/gpu/scope.ts`); intermediates are freed as soon
 * as they are consumed. The one exception is the skip stack: an up block takes the skips it reads
 * off the stack, and frees them.
 *
 * @module
 */
import { chain } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { Conv2d } from "./layers.ts";
import { ResnetBlock2D } from "./resnet.ts";
import type { ParamScope } from "./params.ts";
import { Transformer2DModel, type UNetContext } from "./transformer_2d.ts";

/** What a resnet of this call reads from the context: the time embedding and the fusions. */
function resnetOptions(ctx: UNetContext) {
  return {
    temb: ctx.tembAct,
    tembAll: ctx.tembAll,
    catless: ctx.fusions.concat,
    norm2InConv: ctx.fusions.reduce,
  };
}

/** Settings shared by the down, mid and up blocks. */
export interface BlockConfig {
  /** Resnets in the block. */
  layers: number;
  /** Channels of the block's input. */
  inChannels: number;
  /** Channels of the block's output. */
  outChannels: number;
  /** Time-embedding width. */
  tembChannels: number;
  /** GroupNorm groups. */
  groups: number;
  /** GroupNorm epsilon of the resnets. */
  eps: number;
  /** Attention settings; absent for `DownBlock2D` / `UpBlock2D`. */
  attention?: { heads: number; contextDim: number; useLinearProjection: boolean };
}

function transformers(scope: ParamScope, cfg: BlockConfig, channels: number) {
  const a = cfg.attention;
  if (!a) return undefined;
  return Array.from(
    { length: cfg.layers },
    (_, j) =>
      new Transformer2DModel(scope.child("attentions").child(j), {
        channels,
        heads: a.heads,
        contextDim: a.contextDim,
        groups: cfg.groups,
        useLinearProjection: a.useLinearProjection,
      }),
  );
}

/**
 * `CrossAttnDownBlock2D` (with `attention`) or `DownBlock2D`: resnets (each followed by a
 * transformer in the cross-attention form), then an optional stride-2 `downsamplers.0.conv`. Each
 * stage's output is pushed onto the skip list the up blocks consume.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { DownBlock } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const down = new DownBlock(scope, {
 *   layers: 2, inChannels: 320, outChannels: 320, tembChannels: 1280, groups: 32, eps: 1e-5,
 *   attention: { heads: 8, contextDim: 768, useLinearProjection: false },
 * }, { downsample: true });
 * ```
 */
export class DownBlock {
  /** The resnets. */
  readonly resnets: ResnetBlock2D[];
  /** One transformer per resnet (cross-attention blocks only). */
  readonly attentions?: Transformer2DModel[];
  /** `downsamplers.0.conv` (all but the last level). */
  readonly downsamplers?: [{ conv: Conv2d }];

  /** Takes the block's parameters from `scope` (`down_blocks.N`). */
  constructor(scope: ParamScope, readonly config: BlockConfig, options: { downsample: boolean }) {
    const { layers, inChannels, outChannels: c } = config;
    this.resnets = Array.from(
      { length: layers },
      (_, j) =>
        new ResnetBlock2D(scope.child("resnets").child(j), {
          ...config,
          inChannels: j === 0 ? inChannels : c,
          outChannels: c,
        }),
    );
    this.attentions = transformers(scope, config, c);
    if (options.downsample) {
      const conv = new Conv2d(scope.child("downsamplers").child(0).child("conv"), c, c, 3, {
        stride: 2,
        padding: 1,
      });
      this.downsamplers = [{ conv }];
    }
  }

  /**
   * The block on `x`: every stage's output, in order (the last is the block's output), each a skip
   * the up path reads. The caller owns them.
   */
  forward(x: Tensor, ctx: UNetContext): Tensor[] {
    const outs: Tensor[] = [];
    let h = x;
    this.resnets.forEach((resnet, j) => {
      const attn = this.attentions?.[j];
      h = chain(
        h,
        (t) => resnet.forward(t, resnetOptions(ctx)), // [B, C, H, W]
        (t) => attn?.forward(t, ctx) ?? t, // [B, C, H, W]
      );
      outs.push(h);
    });
    if (this.downsamplers) outs.push(this.downsamplers[0].conv.forward(h)); // [B, C, H/2, W/2]
    return outs;
  }
}

/**
 * `UNetMidBlock2DCrossAttn`: resnet → transformer → resnet at the lowest resolution.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { MidBlock } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const mid = new MidBlock(scope.child("mid_block"), {
 *   layers: 1, inChannels: 1280, outChannels: 1280, tembChannels: 1280, groups: 32, eps: 1e-5,
 *   attention: { heads: 8, contextDim: 768, useLinearProjection: false },
 * });
 * ```
 */
export class MidBlock {
  /** The two resnets. */
  readonly resnets: [ResnetBlock2D, ResnetBlock2D];
  /** The transformer between them. */
  readonly attentions: [Transformer2DModel];

  /** Takes the block's parameters from `scope` (`mid_block`). */
  constructor(scope: ParamScope, readonly config: BlockConfig) {
    const resnets = scope.child("resnets");
    const c = config.inChannels;
    this.resnets = [
      new ResnetBlock2D(resnets.child(0), { ...config, inChannels: c, outChannels: c }),
      new ResnetBlock2D(resnets.child(1), { ...config, inChannels: c, outChannels: c }),
    ];
    const attn = transformers(scope, { ...config, layers: 1 }, c);
    if (!attn) throw new Error("denoise: UNetMidBlock2DCrossAttn needs attention settings");
    this.attentions = [attn[0]];
  }

  /** The block on `x` `[B, C, H, W]`. */
  forward(x: Tensor, ctx: UNetContext): Tensor {
    return chain(
      x,
      (t) => this.resnets[0].forward(t, resnetOptions(ctx)), // [B, C, H, W]
      (t) => this.attentions[0].forward(t, ctx), // [B, C, H, W]
      (t) => this.resnets[1].forward(t, resnetOptions(ctx)), // [B, C, H, W]
    );
  }
}

/**
 * `CrossAttnUpBlock2D` (with `attention`) or `UpBlock2D`: `layers` resnets, each reading
 * `cat([hidden, skip], 1)` with the next skip from the down path (each followed by a transformer
 * in the cross-attention form), then an optional nearest-2× upsample fused into
 * `upsamplers.0.conv`.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { UpBlock } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const up = new UpBlock(scope.child("up_blocks").child(0), {
 *   layers: 3, inChannels: 1280, outChannels: 1280, tembChannels: 1280, groups: 32, eps: 1e-5,
 * }, { prevChannels: 1280, upsample: true });
 * ```
 */
export class UpBlock {
  /** The resnets. */
  readonly resnets: ResnetBlock2D[];
  /** One transformer per resnet (cross-attention blocks only). */
  readonly attentions?: Transformer2DModel[];
  /** `upsamplers.0.conv` (all but the last level). */
  readonly upsamplers?: [{ conv: Conv2d }];
  /** Widths of the skips each resnet reads, in order of use. */
  readonly skipChannels: number[];

  /**
   * Takes the block's parameters from `scope` (`up_blocks.N`); `inChannels` is the width of the
   * skip of the level below, `prevChannels` the width of the incoming hidden states.
   */
  constructor(
    scope: ParamScope,
    readonly config: BlockConfig,
    options: { prevChannels: number; upsample: boolean },
  ) {
    const { layers, inChannels, outChannels: c } = config;
    this.skipChannels = Array.from({ length: layers }, (_, j) => j === layers - 1 ? inChannels : c);
    this.resnets = this.skipChannels.map((skip, j) =>
      new ResnetBlock2D(scope.child("resnets").child(j), {
        ...config,
        inChannels: (j === 0 ? options.prevChannels : c) + skip,
        outChannels: c,
      })
    );
    this.attentions = transformers(scope, config, c);
    if (options.upsample) {
      const conv = new Conv2d(scope.child("upsamplers").child(0).child("conv"), c, c, 3, {
        padding: 1,
      });
      this.upsamplers = [{ conv }];
    }
  }

  /**
   * The block on `x` (borrowed). The skips it reads are taken off the end of `skips`, which moves
   * them to the block: each is freed once its resnet has read it.
   */
  forward(x: Tensor, ctx: UNetContext, skips: Tensor[]): Tensor {
    const up = this.upsamplers?.[0].conv;
    return chain(
      x,
      ...this.resnets.flatMap((resnet, j) => {
        const attn = this.attentions?.[j];
        return [
          (t: Tensor) => {
            using skip = takeSkip(skips);
            return resnet.forward(t, { ...resnetOptions(ctx), skip }); // [B, C, H, W]
          },
          (t: Tensor) => attn?.forward(t, ctx) ?? t, // [B, C, H, W]
        ];
      }),
      (t) => {
        if (!up) return t;
        // diffusers' forward_upsample_size: to the next skip's size (2H or 2H − 1, …)
        const next = skips[skips.length - 1];
        const size = next ? [next.shape[2], next.shape[3]] as const : true;
        return up.forward(t, { upsample: size }); // [B, C, ≈2H, ≈2W]
      },
    );
  }
}

function takeSkip(skips: Tensor[]): Tensor {
  const skip = skips.pop();
  if (!skip) throw new Error("denoise: the up path ran out of skip connections");
  return skip;
}
