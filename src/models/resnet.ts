/**
 * diffusers' `ResnetBlock2D` (default time-embedding shift, output scale 1, no dropout), shared by
 * the U-Net (with a time embedding) and the VAE (without):
 * `x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb)))))`, with a 1×1
 * `conv_shortcut` on `x` when the width changes.
 *
 * @module
 */
import { chain } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary } from "../ops/elementwise.ts";
import { concatChannels } from "../ops/layout.ts";
import { Conv2d, GroupNorm, Linear } from "./layers.ts";
import type { ParamScope } from "./params.ts";

/** Widths and norms of a {@link ResnetBlock2D}. */
export interface ResnetConfig {
  /** Input channels (the concatenated width in up blocks). */
  inChannels: number;
  /** Output channels. */
  outChannels: number;
  /** Width of the time embedding; absent for the VAE's blocks (no `time_emb_proj`). */
  tembChannels?: number;
  /** GroupNorm groups. */
  groups: number;
  /** GroupNorm epsilon. */
  eps: number;
}

/**
 * A ResNet block under its checkpoint names (`norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`,
 * `conv_shortcut`).
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { ResnetBlock2D } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const resnet = new ResnetBlock2D(scope.child("resnets").child(0), {
 *   inChannels: 320, outChannels: 640, tembChannels: 1280, groups: 32, eps: 1e-5,
 * });
 * ```
 */
export class ResnetBlock2D {
  /** GroupNorm on the input. */
  readonly norm1: GroupNorm;
  /** 3×3 conv, in → out. */
  readonly conv1: Conv2d;
  /** Linear from the time embedding to one value per channel (U-Net only). */
  readonly time_emb_proj?: Linear;
  /** GroupNorm after the time embedding is added. */
  readonly norm2: GroupNorm;
  /** 3×3 conv, out → out. */
  readonly conv2: Conv2d;
  /** 1×1 conv on the input when the width changes. */
  readonly conv_shortcut?: Conv2d;
  /**
   * Where this block's `time_emb_proj` output sits in a joined projection of every resnet of the
   * model (set by the U-Net when it uploads their weights joined; see `tembAll` of `forward`).
   */
  tembColumn?: number;

  /** Takes the block's parameters from `scope`. */
  constructor(scope: ParamScope, readonly config: ResnetConfig) {
    const { inChannels: cin, outChannels: cout, groups, eps } = config;
    this.norm1 = new GroupNorm(scope.child("norm1"), groups, cin, eps);
    this.conv1 = new Conv2d(scope.child("conv1"), cin, cout, 3, { padding: 1 });
    if (config.tembChannels !== undefined) {
      this.time_emb_proj = new Linear(scope.child("time_emb_proj"), config.tembChannels, cout);
    }
    this.norm2 = new GroupNorm(scope.child("norm2"), groups, cout, eps);
    this.conv2 = new Conv2d(scope.child("conv2"), cout, cout, 3, { padding: 1 });
    if (cin !== cout) this.conv_shortcut = new Conv2d(scope.child("conv_shortcut"), cin, cout, 1);
  }

  /**
   * The block on `x` `[B, Cin, H, W]` (channel-concatenated with `skip` first, in up blocks);
   * `temb` is `silu(time embedding)` `[B, T]`, required when the block has `time_emb_proj`.
   * `tembAll`, when given with a `tembColumn`, holds `silu(temb)·Wᵀ` of every resnet's joined
   * `time_emb_proj` weight `[B, Σ Cout]`: conv1 then adds this block's columns and bias in its
   * epilogue instead of running the projection and an add. With `catless` (and a skip and a
   * shortcut conv), norm1 and the shortcut read `x` and `skip` as the concatenation, which is never
   * made. With `norm2InConv` (and the time embedding in conv1's epilogue, or none), conv1 hands
   * its output straight to norm2, which reads conv1's split-K partial sums when it splits (no
   * reduce pass). Borrows its inputs and returns a new tensor (the rule in `src/gpu/scope.ts`).
   */
  forward(
    x: Tensor,
    options: {
      temb?: Tensor;
      tembAll?: Tensor;
      skip?: Tensor;
      catless?: boolean;
      norm2InConv?: boolean;
    } = {},
  ): Tensor {
    const { temb, skip } = options;
    const shift = this.time_emb_proj && options.tembAll && this.tembColumn !== undefined
      ? { values: options.tembAll, column: this.tembColumn, bias: this.time_emb_proj.bias }
      : undefined;
    if (this.time_emb_proj && !temb && !shift) {
      throw new Error("denoise: this ResnetBlock2D needs a time embedding");
    }
    const catless = skip !== undefined && this.conv_shortcut !== undefined && options.catless;
    return x.rt.scope(() => {
      // 1. the input, with the skip concatenated in up blocks (or read as such)
      const input = skip && !catless ? concatChannels(x, skip) : x; // [B, Cin, H, W]
      const cat = catless ? skip : undefined;
      // 2. silu(norm2(conv1(silu(norm1(input))) + time_emb_proj(temb)))
      const n2 = this.norm2;
      const joint = options.norm2InConv && (shift !== undefined || !this.time_emb_proj);
      const groupNorm = {
        weight: n2.weight,
        bias: n2.bias,
        groups: n2.groups,
        eps: n2.eps,
        silu: true,
      };
      const h = joint
        ? chain(
          input,
          (t) => this.norm1.forward(t, { silu: true, skip: cat }), // [B, Cin, H, W]
          (t) => this.conv1.forward(t, { temb: shift, groupNorm }), // [B, Cout, H, W]
        )
        : chain(
          input,
          (t) => this.norm1.forward(t, { silu: true, skip: cat }), // [B, Cin, H, W]
          (t) => this.conv1.forward(t, { temb: shift }), // [B, Cout, H, W]
          (t) => shift ? t : this.#addTimeEmbedding(t, temb), // [B, Cout, H, W]
          (t) => n2.forward(t, { silu: true }), // [B, Cout, H, W]
        );
      // 3. conv2 plus the shortcut
      const shortcut = this.conv_shortcut?.forward(input, { skip: cat }) ?? input; // [B, Cout, H, W]
      return this.conv2.forward(h, { residual: shortcut }); // [B, Cout, H, W]
    });
  }

  /** `h + time_emb_proj(temb)` per channel (U-Net); `h` itself without a time embedding (VAE). */
  #addTimeEmbedding(h: Tensor, temb: Tensor | undefined): Tensor {
    if (!this.time_emb_proj || !temb) return h;
    const [b, c, height, width] = h.shape;
    using t = this.time_emb_proj.forward(temb); // [B, Cout]
    return binary(h.reshape([b * c, height * width]), t.reshape([b * c]), {
      op: "add",
      axis: 0,
      out: h.rt.empty(h.shape, h.dtype),
    }); // [B, Cout, H, W]
  }
}
