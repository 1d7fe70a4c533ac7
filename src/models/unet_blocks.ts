/**
 * The building blocks of the diffusers `UNet2DConditionModel` (besides `ResnetBlock2D`, in
 * `resnet.ts`): `Transformer2DModel` (with `BasicTransformerBlock`, `Attention`, `FeedForward`), the down / mid /
 * up blocks, under their checkpoint names. Each `forward` records ops, borrows its inputs and
 * returns new tensors (the ownership rule of `src/gpu/scope.ts`); intermediates are freed as soon
 * as they are consumed. The one exception is the skip stack: an up block takes the skips it reads
 * off the stack, and frees them.
 *
 * @module
 */
import { chain } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { attention } from "../ops/attention.ts";
import { linear } from "../ops/gemm.ts";
import { geglu } from "../ops/geglu.ts";
import { nchwToTokens, tokensToNchw } from "../ops/layout.ts";
import { Conv2d, GroupNorm, LayerNorm, Linear } from "./layers.ts";
import { ResnetBlock2D } from "./resnet.ts";
import type { ParamScope } from "./params.ts";

/** What every block of one U-Net call reads besides its input. */
export interface UNetContext {
  /** `silu(time_embedding(t))`, shared by every resnet's `time_emb_proj`. */
  tembAct: Tensor; // [B, T]
  /** The text embeddings the cross-attention reads. */
  encoderHiddenStates: Tensor; // [B, Lctx, Dctx]
  /** Opt-in hook: each cross-attention layer's head-averaged probabilities (see `UNetForwardOptions`). */
  attentionProbs?: (name: string, probs: Tensor) => void;
}

/**
 * A token-wise projection (`proj_in` / `proj_out`) whose weight is stored as `nn.Linear`
 * `[out, in]` or as a 1×1 conv `[out, in, 1, 1]`; either way it is applied as a linear map on
 * tokens `[B, L, in]`.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { TokenProjection } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const projIn = new TokenProjection(scope.child("proj_in"), 320, 320, { conv: true });
 * ```
 */
export class TokenProjection {
  /** `[out, in]` (a view of the conv weight when stored as a 1×1 conv). */
  readonly weight: Tensor;
  /** `[out]`. */
  readonly bias: Tensor;

  /** Takes `weight` and `bias` from `scope`; `conv` expects the 1×1 conv shape. */
  constructor(scope: ParamScope, cin: number, cout: number, options: { conv: boolean }) {
    const conv = options.conv;
    this.weight = conv
      ? scope.take("weight", [cout, cin, 1, 1]).reshape([cout, cin])
      : scope.take("weight", [cout, cin]);
    this.bias = scope.take("bias", [cout]);
  }

  /** `x·Wᵀ + b` on `[..., in]` → `[..., out]`. */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, { bias: this.bias });
  }
}

/**
 * diffusers `Attention` as the SD U-Net uses it: bias-free `to_q`/`to_k`/`to_v`, `to_out.0` with
 * bias, scale `head_dim^-0.5`, softmax in float32. Self-attention when no context is given.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Attention } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const attn2 = new Attention(scope.child("attn2"), { dim: 320, contextDim: 768, heads: 8 });
 * ```
 */
export class Attention {
  /** Query projection. */
  readonly to_q: Linear;
  /** Key projection (from the context in cross-attention). */
  readonly to_k: Linear;
  /** Value projection (from the context in cross-attention). */
  readonly to_v: Linear;
  /** `to_out.0`: the output projection. */
  readonly to_out: [Linear];
  /** Attention heads. */
  readonly heads: number;
  /** The module's diffusers name (`…transformer_blocks.0.attn2`), given to the probs hook. */
  readonly name: string;

  /** Takes `to_q`, `to_k`, `to_v`, `to_out.0` from `scope`. */
  constructor(scope: ParamScope, options: { dim: number; contextDim?: number; heads: number }) {
    const { dim, heads } = options;
    this.name = scope.prefix;
    const ctx = options.contextDim ?? dim;
    this.heads = heads;
    this.to_q = new Linear(scope.child("to_q"), dim, dim, { bias: false });
    this.to_k = new Linear(scope.child("to_k"), ctx, dim, { bias: false });
    this.to_v = new Linear(scope.child("to_v"), ctx, dim, { bias: false });
    this.to_out = [new Linear(scope.child("to_out").child(0), dim, dim)];
  }

  /**
   * Attention of `x` over `context` (or itself), plus `residual`; `probs` is handed the
   * head-averaged attention probabilities `[B, L, Lk]` (f32; the hook owns and disposes them).
   */
  forward(
    x: Tensor,
    options: {
      context?: Tensor;
      residual?: Tensor;
      probs?: (name: string, probs: Tensor) => void;
    } = {},
  ): Tensor {
    return chain(
      x,
      (t) => x.rt.scope(() => this.#attend(t, options.context ?? t, options.probs)), // [B, L, C]
      (t) => this.to_out[0].forward(t, { residual: options.residual }), // [B, L, C]
    );
  }

  /** Multi-head attention of the projections of `x` `[B, L, C]` over `src` `[B, Lk, Cctx]`. */
  #attend(x: Tensor, src: Tensor, hook?: (name: string, probs: Tensor) => void): Tensor {
    const probs = hook
      ? x.rt.empty([x.shape[0], x.shape[1], src.shape[1]], "f32") // [B, L, Lk]
      : undefined;
    const o = attention(this.to_q.forward(x), {
      k: this.to_k.forward(src), // [B, Lk, C]
      v: this.to_v.forward(src), // [B, Lk, C]
      heads: this.heads,
      probs,
    }); // [B, L, C]
    if (probs) hook!(this.name, x.rt.keep(probs)); // handed over: the hook owns it
    return o;
  }
}

/**
 * diffusers `FeedForward` with GEGLU: `net.2(h · gelu(gate))` where `[h, gate] = net.0.proj(x)`.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { FeedForward } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const ff = new FeedForward(scope.child("ff"), 320);
 * ```
 */
export class FeedForward {
  /** `net.0.proj` (`[2·inner, dim]`) and `net.2` (`[dim, inner]`). */
  readonly net: { 0: { proj: Linear }; 2: Linear };

  /** Takes `net.0.proj` and `net.2` from `scope`; the inner width is `4·dim`. */
  constructor(scope: ParamScope, readonly dim: number) {
    const inner = 4 * dim;
    const net = scope.child("net");
    this.net = {
      0: { proj: new Linear(net.child(0).child("proj"), dim, 2 * inner) },
      2: new Linear(net.child(2), inner, dim),
    };
  }

  /** The feed-forward of `x`, plus `residual`. */
  forward(x: Tensor, options: { residual?: Tensor } = {}): Tensor {
    return chain(
      x,
      (t) => this.net[0].proj.forward(t), // [B, L, 2·inner]
      (t) => geglu(t), // [B, L, inner]
      (t) => this.net[2].forward(t, { residual: options.residual }), // [B, L, dim]
    );
  }
}

/**
 * diffusers `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU
 * feed-forward, each with a residual).
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { BasicTransformerBlock } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const block = new BasicTransformerBlock(scope.child("transformer_blocks").child(0), {
 *   dim: 320, contextDim: 768, heads: 8,
 * });
 * ```
 */
export class BasicTransformerBlock {
  /** LayerNorm before self-attention. */
  readonly norm1: LayerNorm;
  /** Self-attention. */
  readonly attn1: Attention;
  /** LayerNorm before cross-attention. */
  readonly norm2: LayerNorm;
  /** Cross-attention on the text. */
  readonly attn2: Attention;
  /** LayerNorm before the feed-forward. */
  readonly norm3: LayerNorm;
  /** GEGLU feed-forward. */
  readonly ff: FeedForward;

  /** Takes the block's parameters from `scope`. */
  constructor(scope: ParamScope, options: { dim: number; contextDim: number; heads: number }) {
    const { dim, contextDim, heads } = options;
    this.norm1 = new LayerNorm(scope.child("norm1"), dim, 1e-5);
    this.attn1 = new Attention(scope.child("attn1"), { dim, heads });
    this.norm2 = new LayerNorm(scope.child("norm2"), dim, 1e-5);
    this.attn2 = new Attention(scope.child("attn2"), { dim, contextDim, heads });
    this.norm3 = new LayerNorm(scope.child("norm3"), dim, 1e-5);
    this.ff = new FeedForward(scope.child("ff"), dim);
  }

  /** The block on tokens `x` `[B, L, dim]` with the text context of `ctx` `[B, Lctx, Dctx]`. */
  forward(x: Tensor, ctx: UNetContext): Tensor {
    const context = ctx.encoderHiddenStates;
    const rt = x.rt;
    return chain(
      x,
      // 1. self-attention
      (t) => rt.scope(() => this.attn1.forward(this.norm1.forward(t), { residual: t })), // [B, L, C]
      // 2. cross-attention on the text
      (t) =>
        rt.scope(() =>
          this.attn2.forward(this.norm2.forward(t), {
            context,
            residual: t,
            probs: ctx.attentionProbs,
          })
        ), // [B, L, C]
      // 3. feed-forward
      (t) => rt.scope(() => this.ff.forward(this.norm3.forward(t), { residual: t })), // [B, L, C]
    );
  }
}

/** Settings of a {@link Transformer2DModel}. */
export interface TransformerConfig {
  /** Channels in and out (= heads · head dim). */
  channels: number;
  /** Attention heads. */
  heads: number;
  /** Width of the text embeddings. */
  contextDim: number;
  /** GroupNorm groups. */
  groups: number;
  /** `proj_in`/`proj_out` are `nn.Linear` (SD 2.x) rather than 1×1 convs. */
  useLinearProjection: boolean;
}

/**
 * diffusers `Transformer2DModel` on continuous input: GroupNorm (eps 1e-6) → `proj_in` → one
 * `BasicTransformerBlock` → `proj_out` → + input. A 1×1 conv projection is applied token-wise as
 * the equal linear map.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Transformer2DModel } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const attn = new Transformer2DModel(scope.child("attentions").child(0), {
 *   channels: 320, heads: 8, contextDim: 768, groups: 32, useLinearProjection: false,
 * });
 * ```
 */
export class Transformer2DModel {
  /** GroupNorm on the input. */
  readonly norm: GroupNorm;
  /** Input projection. */
  readonly proj_in: TokenProjection;
  /** The transformer blocks (`transformer_layers_per_block` = 1). */
  readonly transformer_blocks: BasicTransformerBlock[];
  /** Output projection. */
  readonly proj_out: TokenProjection;

  /** Takes the model's parameters from `scope`. */
  constructor(scope: ParamScope, readonly config: TransformerConfig) {
    const { channels: c, heads, groups, useLinearProjection: lin } = config;
    if (c % heads !== 0) {
      throw new Error(
        `denoise: ${scope.prefix}: ${c} channels cannot be split into ${heads} attention heads; ` +
          `check attention_head_dim / num_attention_heads in the U-Net config`,
      );
    }
    this.norm = new GroupNorm(scope.child("norm"), groups, c, 1e-6);
    this.proj_in = new TokenProjection(scope.child("proj_in"), c, c, { conv: !lin });
    this.transformer_blocks = [
      new BasicTransformerBlock(scope.child("transformer_blocks").child(0), {
        dim: c,
        contextDim: config.contextDim,
        heads,
      }),
    ];
    this.proj_out = new TokenProjection(scope.child("proj_out"), c, c, { conv: !lin });
  }

  /** The model on `x` `[B, C, H, W]`. */
  forward(x: Tensor, ctx: UNetContext): Tensor {
    const [, , height, width] = x.shape;
    return chain(
      x,
      (t) => this.norm.forward(t), // [B, C, H, W]
      (t) => nchwToTokens(t), // [B, H·W, C]
      (t) => this.proj_in.forward(t), // [B, H·W, C]
      ...this.transformer_blocks.map((block) => (t: Tensor) => block.forward(t, ctx)), // [B, H·W, C]
      (t) => this.proj_out.forward(t), // [B, H·W, C]
      (t) => tokensToNchw(t, { height, width, residual: x }), // [B, C, H, W]
    );
  }
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
        (t) => resnet.forward(t, { temb: ctx.tembAct }), // [B, C, H, W]
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
      (t) => this.resnets[0].forward(t, { temb: ctx.tembAct }), // [B, C, H, W]
      (t) => this.attentions[0].forward(t, ctx), // [B, C, H, W]
      (t) => this.resnets[1].forward(t, { temb: ctx.tembAct }), // [B, C, H, W]
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
            return resnet.forward(t, { temb: ctx.tembAct, skip }); // [B, C, H, W]
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
