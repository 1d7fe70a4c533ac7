/**
 * The building blocks of the networks, holding their parameters under diffusers names: `Linear`,
 * `Conv2d`, `GroupNorm`, `LayerNorm`. Each `forward` records ops; nothing is submitted here.
 *
 * @module
 */
import type { Tensor } from "../gpu/tensor.ts";
import { conv2d, type Conv2dOptions } from "../ops/conv2d.ts";
import { type GemmActivation, linear, type LinearOptions } from "../ops/gemm.ts";
import { groupNorm, layerNorm } from "../ops/norm.ts";
import type { ParamScope } from "./params.ts";

/** A fused activation after a linear or conv layer. */
export type Activation = "none" | "gelu" | "gelu_tanh" | "quick_gelu" | "silu" | "relu";

/**
 * `nn.Linear` with PyTorch's `[out, in]` weight.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Linear } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const q = new Linear(scope.child("to_q"), 320, 320, { bias: false });
 * ```
 */
export class Linear {
  /** `[out, in]`. */
  readonly weight: Tensor;
  /** `[out]`, when the layer has a bias. */
  readonly bias?: Tensor;

  /** Takes `weight` (and `bias`) from `scope`. */
  constructor(
    scope: ParamScope,
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: { bias?: boolean } = {},
  ) {
    this.weight = scope.take("weight", [outFeatures, inFeatures]);
    if (options.bias ?? true) this.bias = scope.take("bias", [outFeatures]);
  }

  /**
   * `act(x·Wᵀ + b) + residual` on `[..., in]` → `[..., out]`; `geglu` and `nchw` as in
   * {@link linear} (`h · gelu(gate)` of the halves of the output; tokens written back as NCHW).
   */
  forward(
    x: Tensor,
    options: {
      activation?: Activation;
      residual?: Tensor;
      geglu?: boolean;
      nchw?: { height: number; width: number };
      layerNorm?: LinearOptions["layerNorm"];
    } = {},
  ): Tensor {
    return linear(x, this.weight, {
      bias: this.bias,
      activation: (options.activation ?? "none") as GemmActivation,
      residual: options.residual,
      geglu: options.geglu,
      nchw: options.nchw,
      layerNorm: options.layerNorm,
    });
  }
}

/**
 * `nn.Conv2d` (square kernel, NCHW activations).
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { Conv2d } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const convIn = new Conv2d(scope.child("conv_in"), 4, 320, 3, { padding: 1 });
 * ```
 */
export class Conv2d {
  /** `[out, in, k, k]`. */
  readonly weight: Tensor;
  /** `[out]`, when the layer has a bias. */
  readonly bias?: Tensor;
  /** Stride (1 or 2). */
  readonly stride: number;
  /** Zero padding on each side. */
  readonly padding: number;

  /** Takes `weight` `[out, in, k, k]` (and `bias`) from `scope`. */
  constructor(
    scope: ParamScope,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    options: { stride?: number; padding?: number; bias?: boolean } = {},
  ) {
    this.weight = scope.take("weight", [outChannels, inChannels, kernelSize, kernelSize]);
    if (options.bias ?? true) this.bias = scope.take("bias", [outChannels]);
    this.stride = options.stride ?? 1;
    this.padding = options.padding ?? 0;
  }

  /**
   * The convolution of `x` `[B, C, H, W]` (channel-concatenated with `skip` when given, nearest-
   * upsampled 2× — or to `[H', W']` — first when `upsample`), then `act(conv + bias + residual)`.
   */
  forward(
    x: Tensor,
    options: {
      skip?: Tensor;
      upsample?: boolean | readonly [number, number];
      activation?: Activation;
      residual?: Tensor;
      temb?: Conv2dOptions["temb"];
      groupNorm?: Conv2dOptions["groupNorm"];
    } = {},
  ): Tensor {
    return conv2d(x, this.weight, {
      bias: this.bias,
      stride: this.stride,
      padding: this.padding,
      skip: options.skip,
      upsample: options.upsample,
      activation: options.activation === "none" ? undefined : options.activation,
      residual: options.residual,
      temb: options.temb,
      groupNorm: options.groupNorm,
    });
  }
}

/**
 * `nn.GroupNorm` on `[B, C, ...]`, optionally followed by SiLU.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { GroupNorm } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const norm1 = new GroupNorm(scope.child("norm1"), 32, 320, 1e-5);
 * ```
 */
export class GroupNorm {
  /** `[C]`. */
  readonly weight: Tensor;
  /** `[C]`. */
  readonly bias: Tensor;

  /** Takes `weight` and `bias` from `scope`. */
  constructor(
    scope: ParamScope,
    readonly groups: number,
    readonly channels: number,
    readonly eps: number,
  ) {
    this.weight = scope.take("weight", [channels]);
    this.bias = scope.take("bias", [channels]);
  }

  /**
   * Normalises `x` (or `cat([x, skip], 1)`, without making it); `silu` fuses the activation that
   * usually follows; `tokens` writes `[B, H·W, C]` for a transformer instead of NCHW.
   */
  forward(x: Tensor, options: { silu?: boolean; skip?: Tensor; tokens?: boolean } = {}): Tensor {
    return groupNorm(x, this.weight, this.bias, {
      groups: this.groups,
      eps: this.eps,
      silu: options.silu ?? false,
      skip: options.skip,
      tokens: options.tokens,
    });
  }
}

/**
 * `nn.LayerNorm` over the last axis.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { LayerNorm } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const ln = new LayerNorm(scope.child("norm1"), 320, 1e-5);
 * ```
 */
export class LayerNorm {
  /** `[D]`. */
  readonly weight: Tensor;
  /** `[D]`. */
  readonly bias: Tensor;

  /** Takes `weight` and `bias` from `scope`. */
  constructor(scope: ParamScope, readonly dim: number, readonly eps: number) {
    this.weight = scope.take("weight", [dim]);
    this.bias = scope.take("bias", [dim]);
  }

  /** Normalises the last axis of `x`. */
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, { eps: this.eps });
  }
}
