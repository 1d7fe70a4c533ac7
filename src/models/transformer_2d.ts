/**
 * The transformer of the diffusers `UNet2DConditionModel` under its checkpoint names:
 * `Transformer2DModel` with its `BasicTransformerBlock`, `Attention`, `FeedForward` and the
 * `proj_in`/`proj_out` token projections, and what every block of one U-Net call shares
 * ({@link UNetContext}, with the dispatch fusions it may use). Each `forward` records ops, borrows
 * its inputs and returns new tensors (the ownership rule of `src/gpu/scope.ts`).
 *
 * @module
 */
import { chain } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { attention } from "../ops/attention.ts";
import { linear } from "../ops/gemm.ts";
import { geglu } from "../ops/geglu.ts";
import { nchwToTokens, tokensToNchw } from "../ops/layout.ts";
import { GroupNorm, LayerNorm, Linear } from "./layers.ts";
import type { ParamScope } from "./params.ts";

/**
 * Dispatch fusions a U-Net call may use; each is on by default and computes the same values as
 * the plain graph (switch one off to measure it: `unet.fusions.qkv = false`).
 */
export interface UNetFusions {
  /** Self-attention's q, k, v (cross-attention's k, v) from one GEMM on their joined weights. */
  qkv: boolean;
  /**
   * Every resnet's `time_emb_proj` in one GEMM on their joined weights, each resnet's columns
   * (and bias) added in its conv1's epilogue.
   */
  temb: boolean;
  /**
   * The transformer's GroupNorm writes tokens and `proj_out` writes NCHW with the residual: the
   * two permutes are gone.
   */
  tokens: boolean;
  /** The feed-forward's GEGLU in the epilogue of its input projection. */
  geglu: boolean;
  /** The up blocks' skip concatenation read by norm1 and the shortcut conv, never made. */
  concat: boolean;
  /** The transformer block's LayerNorms in the prologue of the GEMMs that read them. */
  ln: boolean;
  /**
   * Every cross-attention's k and v from one GEMM on the text context (their weights joined
   * across the U-Net): one dispatch per call in place of one per transformer block.
   */
  kv: boolean;
  /**
   * A resnet's norm2 reads conv1's split-K partial sums (and its epilogue) in place of the
   * conv's reduce pass.
   */
  reduce: boolean;
}

/** Every fusion of {@link UNetFusions}, in the order they were made. */
export const UNET_FUSIONS: readonly (keyof UNetFusions)[] = [
  "qkv",
  "temb",
  "tokens",
  "geglu",
  "concat",
  "ln",
  "reduce",
  "kv",
];

/** What every block of one U-Net call reads besides its input. */
export interface UNetContext {
  /** `silu(time_embedding(t))`, shared by every resnet's `time_emb_proj`. */
  tembAct: Tensor; // [B, T]
  /** With the `temb` fusion: every resnet's `time_emb_proj` weight applied to `tembAct` at once. */
  tembAll?: Tensor; // [B, Σ Cout]
  /** The text embeddings the cross-attention reads. */
  encoderHiddenStates: Tensor; // [B, Lctx, Dctx]
  /** With the `kv` fusion: every cross-attention's k and v of the text, side by side. */
  kvAll?: Tensor; // [B, Lctx, Σ 2·C]
  /** Opt-in hook: each cross-attention layer's head-averaged probabilities (see `UNetForwardOptions`). */
  attentionProbs?: (name: string, probs: Tensor) => void;
  /** The fusions this call uses. */
  fusions: Readonly<UNetFusions>;
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

  /** `x·Wᵀ + b` on `[..., in]` → `[..., out]`; `nchw`/`residual` as in {@link linear}. */
  forward(
    x: Tensor,
    options: { residual?: Tensor; nchw?: { height: number; width: number } } = {},
  ): Tensor {
    return linear(x, this.weight, { bias: this.bias, ...options });
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
  /** `[to_q; to_k; to_v]` (self-attention) or `[to_k; to_v]` (cross), when joinable. */
  readonly #joined?: Tensor;
  readonly #cross: boolean;
  /**
   * Where this cross-attention's k and v start in the U-Net's joined projection of every
   * cross-attention (the `kvAll` of `forward`), when the U-Net joined them.
   */
  readonly kvColumn?: number;

  /**
   * Takes `to_q`, `to_k`, `to_v`, `to_out.0` from `scope`; the projections that read the same
   * input are uploaded joined, so one GEMM can compute them.
   */
  constructor(scope: ParamScope, options: { dim: number; contextDim?: number; heads: number }) {
    const { dim, heads } = options;
    this.name = scope.prefix;
    const ctx = options.contextDim ?? dim;
    this.heads = heads;
    this.#cross = options.contextDim !== undefined;
    const names = this.#cross ? ["to_k", "to_v"] : ["to_q", "to_k", "to_v"];
    const keys = names.map((n) => `${n}.weight`);
    this.#joined = scope.join(keys, names.map(() => [dim, ctx]));
    const across = this.#joined || !this.#cross ? undefined : scope.joinedRows(keys);
    if (across) [this.#joined, this.kvColumn] = [across.rows, across.row];
    this.to_q = new Linear(scope.child("to_q"), dim, dim, { bias: false });
    this.to_k = new Linear(scope.child("to_k"), ctx, dim, { bias: false });
    this.to_v = new Linear(scope.child("to_v"), ctx, dim, { bias: false });
    this.to_out = [new Linear(scope.child("to_out").child(0), dim, dim)];
  }

  /**
   * Attention of `x` over `context` (or itself), plus `residual`; `probs` is handed the
   * head-averaged attention probabilities `[B, L, Lk]` (f32; the hook owns and disposes them).
   * `kvAll`: the U-Net's joined k, v projection of `context`, read at `kvColumn`.
   */
  forward(
    x: Tensor,
    options: {
      context?: Tensor;
      kvAll?: Tensor;
      residual?: Tensor;
      probs?: (name: string, probs: Tensor) => void;
      fused?: boolean;
      norm?: LayerNorm;
    } = {},
  ): Tensor {
    const joined = options.fused ?? true;
    return chain(
      x,
      (t) =>
        x.rt.scope(() =>
          this.#attend(t, {
            context: options.context,
            kvAll: options.kvAll,
            hook: options.probs,
            joined,
            norm: options.norm,
          })
        ), // [B, L, C]
      (t) => this.to_out[0].forward(t, { residual: options.residual }), // [B, L, C]
    );
  }

  /** Multi-head attention of the projections of `x` `[B, L, C]` over `src` `[B, Lk, Cctx]`. */
  #attend(
    x: Tensor,
    o: {
      context?: Tensor;
      kvAll?: Tensor;
      hook?: (name: string, probs: Tensor) => void;
      joined: boolean;
      norm?: LayerNorm;
    },
  ): Tensor {
    const src = o.context ?? x;
    const hook = o.hook;
    const probs = hook
      ? x.rt.empty([x.shape[0], x.shape[1], src.shape[1]], "f32") // [B, L, Lk]
      : undefined;
    const c = this.to_q.outFeatures;
    const headDim = c / this.heads;
    const w = o.joined ? this.#joined : undefined;
    // projections of x see norm(x) (the LayerNorm in the GEMM's prologue); the context does not
    const ln = o.norm
      ? { layerNorm: { weight: o.norm.weight, bias: o.norm.bias, eps: o.norm.eps } }
      : {};
    const ofSrc = o.context ? {} : ln;
    const q = () => this.to_q.forward(x, ln); // [B, L, C]
    const kvAll = o.kvAll && o.context && this.kvColumn !== undefined ? o.kvAll : undefined;
    const out = kvAll
      ? attention(q(), {
        k: kvAll, // [B, Lk, Σ 2·C]: this block's k, v at kvColumn
        v: kvAll,
        kOffset: this.kvColumn,
        vOffset: this.kvColumn! + c,
        heads: this.heads,
        headDim,
        probs,
      })
      : !w
      ? attention(q(), {
        k: this.to_k.forward(src, ofSrc), // [B, Lk, C]
        v: this.to_v.forward(src, ofSrc), // [B, Lk, C]
        heads: this.heads,
        probs,
      })
      : this.#cross
      ? chain(
        () => linear(src, w), // [B, Lk, 2C]: k, v
        (kv) =>
          attention(q(), {
            k: kv,
            v: kv,
            vOffset: c,
            heads: this.heads,
            headDim,
            probs,
          }),
      )
      : chain(
        () => linear(x, w, ln), // [B, L, 3C]: q, k, v
        (qkv) =>
          attention(qkv, {
            k: qkv,
            v: qkv,
            kOffset: c,
            vOffset: 2 * c,
            heads: this.heads,
            headDim,
            probs,
          }),
      ); // [B, L, C]
    if (probs) hook!(this.name, x.rt.keep(probs)); // handed over: the hook owns it
    return out;
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

  /**
   * The feed-forward of `x` (of `norm(x)` when a LayerNorm is given: it runs in the first GEMM's
   * prologue), plus `residual`; `fused` runs GEGLU in the projection's epilogue.
   */
  forward(
    x: Tensor,
    options: { residual?: Tensor; fused?: boolean; norm?: LayerNorm } = {},
  ): Tensor {
    const n = options.norm;
    const ln = n ? { layerNorm: { weight: n.weight, bias: n.bias, eps: n.eps } } : {};
    const gate = options.fused ?? true
      ? [(t: Tensor) => this.net[0].proj.forward(t, { geglu: true, ...ln })] // [B, L, inner]
      : [
        (t: Tensor) => this.net[0].proj.forward(t, ln), // [B, L, 2·inner]
        (t: Tensor) => geglu(t), // [B, L, inner]
      ];
    return chain(
      x,
      ...gate,
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
      (t) =>
        rt.scope(() =>
          ctx.fusions.ln
            ? this.attn1.forward(t, { residual: t, fused: ctx.fusions.qkv, norm: this.norm1 })
            : this.attn1.forward(this.norm1.forward(t), { residual: t, fused: ctx.fusions.qkv })
        ), // [B, L, C]
      // 2. cross-attention on the text
      (t) =>
        rt.scope(() =>
          this.attn2.forward(ctx.fusions.ln ? t : this.norm2.forward(t), {
            context,
            kvAll: ctx.fusions.kv ? ctx.kvAll : undefined,
            residual: t,
            probs: ctx.attentionProbs,
            fused: ctx.fusions.qkv,
            norm: ctx.fusions.ln ? this.norm2 : undefined,
          })
        ), // [B, L, C]
      // 3. feed-forward
      (t) =>
        rt.scope(() =>
          ctx.fusions.ln
            ? this.ff.forward(t, { residual: t, fused: ctx.fusions.geglu, norm: this.norm3 })
            : this.ff.forward(this.norm3.forward(t), { residual: t, fused: ctx.fusions.geglu })
        ), // [B, L, C]
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
    const blocks = this.transformer_blocks.map((block) => (t: Tensor) => block.forward(t, ctx));
    if (ctx.fusions.tokens) {
      return chain(
        x,
        (t) => this.norm.forward(t, { tokens: true }), // [B, H·W, C]
        (t) => this.proj_in.forward(t), // [B, H·W, C]
        ...blocks, // [B, H·W, C]
        (t) => this.proj_out.forward(t, { residual: x, nchw: { height, width } }), // [B, C, H, W]
      );
    }
    return chain(
      x,
      (t) => this.norm.forward(t), // [B, C, H, W]
      (t) => nchwToTokens(t), // [B, H·W, C]
      (t) => this.proj_in.forward(t), // [B, H·W, C]
      ...blocks, // [B, H·W, C]
      (t) => this.proj_out.forward(t), // [B, H·W, C]
      (t) => tokensToNchw(t, { height, width, residual: x }), // [B, C, H, W]
    );
  }
}
