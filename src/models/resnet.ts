/**
 * diffusers' `ResnetBlock2D` (default time-embedding shift, output scale 1, no dropout), shared by
 * the U-Net (with a time embedding) and the VAE (without):
 * `x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb)))))`, with a 1×1
 * `conv_shortcut` on `x` when the width changes.
 *
 * @module
 */
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
 * ```ts
 * import type { ParamScope } from "./params.ts";
 * import { ResnetBlock2D } from "./resnet.ts";
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
   */
  forward(x: Tensor, options: { temb?: Tensor; skip?: Tensor } = {}): Tensor {
    const [b, , h, w] = x.shape;
    const cout = this.config.outChannels;
    const input = options.skip ? concatChannels(x, options.skip) : x; // [B, Cin, H, W]
    const n1 = this.norm1.forward(input, { silu: true }); // [B, Cin, H, W]
    const c1 = this.conv1.forward(n1); // [B, Cout, H, W]
    n1.dispose();
    let pre = c1; // what norm2 reads: conv1's output, plus the time embedding in the U-Net
    if (this.time_emb_proj) {
      if (!options.temb) throw new Error("denoise: this ResnetBlock2D needs a time embedding");
      const t = this.time_emb_proj.forward(options.temb); // [B, Cout]
      pre = binary(c1.reshape([b * cout, h * w]), t.reshape([b * cout]), {
        op: "add",
        axis: 0,
      }); // [B·Cout, H·W]
      c1.dispose();
      t.dispose();
    }
    const n2 = this.norm2.forward(pre.reshape([b, cout, h, w]), { silu: true }); // [B, Cout, H, W]
    pre.dispose();
    const shortcut = this.conv_shortcut?.forward(input) ?? input; // [B, Cout, H, W]
    const out = this.conv2.forward(n2, { residual: shortcut }); // [B, Cout, H, W]
    n2.dispose();
    if (shortcut !== input) shortcut.dispose();
    if (input !== x) input.dispose();
    return out;
  }
}
