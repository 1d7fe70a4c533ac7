/**
 * Normalisation ops: `groupNorm` (NCHW, optional fused SiLU) and `layerNorm` (last axis). Host side
 * of `kernels/norm.wgsl.jinja`; statistics are reduced in f32 with Welford/Chan merges.
 *
 * Kernel ladder for GroupNorm (the `variant` option; `"auto"` picks by group size):
 * - `fused`: one workgroup per group reduces it, then normalises it (one dispatch).
 * - `split`: the groups are cut into chunks reduced by many workgroups into partial summaries, then
 *   a second dispatch merges each group's partials and normalises its chunk (two dispatches; spreads
 *   the million-element VAE groups over the whole GPU).
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** GroupNorm kernel versions; `auto` chooses by group size. */
export type GroupNormVariant = "auto" | "fused" | "split";

/** Template parameters of the norm kernel (the pipeline cache key's `params`). */
export interface NormParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Kernel role: partial statistics, merge + normalise, one-workgroup GroupNorm, LayerNorm. */
  mode: "stats" | "apply" | "fused" | "ln";
  /** Storage dtype of x and y. */
  dtype: DType;
  /** Storage dtype of the weight and bias. */
  wdtype: DType;
  /** Items are vec4 (GroupNorm: H·W % 4 == 0; LayerNorm: D % 4 == 0). */
  vec: boolean;
  /** Apply SiLU after the affine. */
  silu: boolean;
  /** GroupNorm of `cat([x, skip], 1)`: a second input binding after x. */
  skip: boolean;
  /** GroupNorm output in token layout `[B, H·W, C]`. */
  tokens: boolean;
  /** GroupNorm of a split-K conv's f32 partial sums (summed, plus the conv's epilogue). */
  conv: boolean;
  /** conv: the conv's bias is bound. */
  cbias: boolean;
  /** conv: a per-sample channel shift (the time embedding) is bound. */
  temb: boolean;
  /** conv: the shift's bias is bound. */
  temb_bias: boolean;
  /** Invocations per workgroup (a power of two). */
  wg: number;
}

/** Options of {@link groupNorm}. */
export interface GroupNormOptions {
  /** Number of groups (default 32); must divide the channels. */
  groups?: number;
  /** Added to the variance (default 1e-5; the VAE uses 1e-6). */
  eps?: number;
  /** Apply SiLU after the affine (the `norm → SiLU` pair of resnet blocks). */
  silu?: boolean;
  /** Kernel version (default `auto`). */
  variant?: GroupNormVariant;
  /** Write into this tensor (the output's shape and dtype; must not be an input). */
  out?: Tensor;
  /**
   * Normalise `cat([x, skip], 1)` without making it: `skip` `[B, Cs, …]` follows x's channels
   * (the up blocks' skip connections); weight and bias then have Cx + Cs entries.
   */
  skip?: Tensor;
  /**
   * Write the result in token layout `[B, H·W, C]` (what a transformer's `proj_in` reads) instead
   * of NCHW.
   */
  tokens?: boolean;
}

/** Options of {@link layerNorm}. */
export interface LayerNormOptions {
  /** Added to the variance (default 1e-5). */
  eps?: number;
  /** Write into this tensor (x's shape and dtype; must not be x). */
  out?: Tensor;
}

const WG = 256;
const LN_WG = 64;
/** Elements one workgroup reduces (stats) or normalises (apply) in the split GroupNorm. */
const SPLIT_CHUNK = 4096;
/** Groups up to this many elements use the one-dispatch kernel under `auto`. */
const FUSED_MAX = 16384;

function uniforms(v: {
  rows: number;
  n: number;
  inner?: number;
  cpg?: number;
  groups?: number;
  splits?: number;
  chunk?: number;
  eps: number;
  cx?: number;
  conv?: number[];
}): Uint32Array {
  const buf = new ArrayBuffer(64);
  const u = new Uint32Array(buf);
  u.set([v.rows, v.n, v.inner ?? 1, v.cpg ?? 0, v.groups ?? 1, v.splits ?? 1, v.chunk ?? v.n]);
  new Float32Array(buf)[7] = v.eps;
  u[8] = v.cx ?? 0;
  if (v.conv) u.set(v.conv, 9);
  return u;
}

/** The partial sums of a split-K conv that a GroupNorm can read in place of the conv's output. */
export interface ConvParts {
  /** f32 partial sums `[splits, B·C·H·W]` (NCHW order within each split). */
  parts: Tensor;
  /** How many partial sums there are. */
  splits: number;
  /** The conv's output shape `[B, C, H, W]` and dtype (the sum is rounded to it). */
  shape: readonly number[];
  /** The conv's output dtype. */
  dtype: DType;
  /** The conv's bias `[C]`. */
  bias?: Tensor;
  /** The conv's per-sample channel shift (see `conv2d`'s `temb`). */
  temb?: { values: Tensor; column?: number; bias?: Tensor };
}

function checkAffine(
  op: string,
  t: Tensor,
  name: string,
  n: number,
  x: { shape: readonly number[] },
): void {
  if (t.size !== n || t.shape.length !== 1) {
    throw new Error(
      `denoise: ${op}: ${name} has shape [${t.shape}], needs [${n}] for x [${x.shape}]`,
    );
  }
}

function checkOut(
  op: string,
  out: Tensor,
  x: Pick<Tensor, "buffer" | "dtype">,
  size: number,
  skip?: Tensor,
): void {
  const alias = out.buffer === x.buffer || (skip !== undefined && out.buffer === skip.buffer);
  if (alias || out.size !== size || out.dtype !== x.dtype) {
    throw new Error(
      `denoise: ${op}: out must be a separate ${x.dtype} tensor of ${size} elements ` +
        `(got [${out.shape}] ${out.dtype}${alias ? ", sharing an input's storage" : ""})`,
    );
  }
}

/**
 * GroupNorm over NCHW `[B, C, H, W]` (or `[B, C, L]`): each group of C/groups channels of a sample
 * is normalised to zero mean and unit variance (biased), then scaled by `weight[c]`, shifted by
 * `bias[c]` and optionally passed through SiLU. Statistics are computed in f32 for both dtypes.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { groupNorm } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array(2 * 64 * 8 * 8).map(Math.random), [2, 64, 8, 8]);
 * const w = rt.upload(new Float32Array(64).fill(1), [64]);
 * const b = rt.upload(new Float32Array(64), [64]);
 * const y = groupNorm(x, w, b, { groups: 32, eps: 1e-6, silu: true }); // [2, 64, 8, 8]
 * ```
 */
export function groupNorm(
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  options: GroupNormOptions = {},
): Tensor {
  return recordGroupNorm({ x, shape: x.shape, dtype: x.dtype }, weight, bias, options);
}

/**
 * GroupNorm of a split-K conv's output read from its partial sums (`conv2d`'s `groupNorm` option
 * uses it): the conv's reduce pass and the norm are one dispatch.
 *
 * @example
 * ```ts no-run
 * import type { Tensor } from "@denoise/sd/gpu";
 * import { groupNormOfConvParts } from "@denoise/sd/ops";
 * declare const parts: Tensor, w: Tensor, b: Tensor;
 * const y = groupNormOfConvParts(
 *   { parts, splits: 4, shape: [2, 64, 8, 8], dtype: "f16" },
 *   w,
 *   b,
 *   { groups: 32, silu: true },
 * );
 * ```
 */
export function groupNormOfConvParts(
  src: ConvParts,
  weight: Tensor,
  bias: Tensor,
  options: Omit<GroupNormOptions, "skip" | "tokens"> = {},
): Tensor {
  return recordGroupNorm(
    { x: src.parts, shape: src.shape, dtype: src.dtype, conv: src },
    weight,
    bias,
    options,
  );
}

function recordGroupNorm(
  src: { x: Tensor; shape: readonly number[]; dtype: DType; conv?: ConvParts },
  weight: Tensor,
  bias: Tensor,
  options: GroupNormOptions,
): Tensor {
  const x = src.x;
  const conv = src.conv;
  const groups = options.groups ?? 32;
  const eps = options.eps ?? 1e-5;
  if (src.shape.length !== 3 && src.shape.length !== 4) {
    throw new Error(
      `denoise: groupNorm takes x as [B, C, H, W] or [B, C, L], got [${x.shape}]; reshape it first`,
    );
  }
  const size = src.shape.reduce((a, b) => a * b, 1);
  if (size === 0) throw new Error(`denoise: groupNorm of an empty tensor [${src.shape}]`);
  const skip = options.skip;
  if (
    skip && (skip.shape.length !== x.shape.length || skip.shape[0] !== x.shape[0] ||
      skip.shape.slice(2).some((d, i) => d !== x.shape[2 + i]) || skip.dtype !== x.dtype)
  ) {
    throw new Error(
      `denoise: groupNorm: skip [${skip.shape}] ${skip.dtype} cannot follow x [${x.shape}] ` +
        `${x.dtype} along channels (same batch, size and dtype)`,
    );
  }
  const [batch, cx] = src.shape;
  const channels = cx + (skip?.shape[1] ?? 0);
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new Error(
      `denoise: groupNorm: ${channels} channels cannot be split into ${groups} groups; ` +
        `pick groups dividing C`,
    );
  }
  checkAffine("groupNorm", weight, "weight", channels, src);
  checkAffine("groupNorm", bias, "bias", channels, src);
  if (weight.dtype !== bias.dtype) {
    throw new Error(`denoise: groupNorm: weight is ${weight.dtype} but bias is ${bias.dtype}`);
  }
  const spatial = size / (batch * cx);
  const outShape = options.tokens
    ? [batch, spatial, channels]
    : [batch, channels, ...src.shape.slice(2)];
  const out = options.out ?? x.rt.empty(outShape, src.dtype);
  checkOut(
    "groupNorm",
    out,
    { buffer: x.buffer, dtype: src.dtype },
    batch * channels * spatial,
    skip,
  );
  const cpg = channels / groups;
  const vec = spatial % 4 === 0;
  const per = vec ? 4 : 1;
  const rows = batch * groups;
  const n = (cpg * spatial) / per;
  const base = {
    dtype: src.dtype,
    wdtype: weight.dtype,
    vec,
    silu: options.silu ?? false,
    skip: !!skip,
    tokens: options.tokens ?? false,
    conv: conv !== undefined,
    cbias: conv?.bias !== undefined,
    temb: conv?.temb !== undefined,
    temb_bias: conv?.temb?.bias !== undefined,
    wg: WG,
  };
  const inputs = skip ? [x, skip] : [x];
  if (conv?.bias) inputs.push(conv.bias);
  if (conv?.temb) inputs.push(conv.temb.values);
  if (conv?.temb?.bias) inputs.push(conv.temb.bias);
  const convU = conv
    ? [conv.splits, size / (vec ? 4 : 1), conv.temb?.values.shape[1] ?? 0, conv.temb?.column ?? 0]
    : undefined;
  const variant = options.variant ?? "auto";
  const split = variant === "split" || (variant === "auto" && cpg * spatial > FUSED_MAX);
  const label = () =>
    `${conv ? "conv→" : ""}groupNorm${base.silu ? "+silu" : ""}${skip ? "+cat" : ""}` +
    `${base.tokens ? "→tokens" : ""} ` +
    `[${outShape}] g=${groups}`;
  const inner = spatial / per;
  if (!split) {
    const p: NormParams = { mode: "fused", ...base };
    x.rt.dispatch({
      key: { kernel: "norm", params: p },
      bindings: [...inputs, weight, bias, out],
      uniforms: uniforms({ rows, n, inner, cpg, groups, eps, cx, conv: convU }),
      grid: grid1d(rows),
      label,
    });
    return out;
  }
  const chunk = SPLIT_CHUNK / per;
  const splits = Math.ceil(n / chunk);
  const part = x.rt.empty([rows * splits, 4], "f32");
  const u = uniforms({ rows, n, inner, cpg, groups, splits, chunk, eps, cx, conv: convU });
  const stats: NormParams = { mode: "stats", ...base, silu: false, tokens: false };
  x.rt.dispatch({
    key: { kernel: "norm", params: stats },
    bindings: [...inputs, part],
    uniforms: u,
    grid: grid1d(rows * splits),
    label: () => `${label()} stats`,
  });
  const apply: NormParams = { mode: "apply", ...base };
  x.rt.dispatch({
    key: { kernel: "norm", params: apply },
    bindings: [...inputs, part, weight, bias, out],
    uniforms: u,
    grid: grid1d(rows * splits),
    label,
  });
  part.dispose();
  return out;
}

/**
 * LayerNorm over the last axis of `[..., D]`: each row is normalised (biased variance, f32
 * statistics) then scaled by `weight` and shifted by `bias` (both `[D]`).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { layerNorm } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array(2 * 77 * 768).map(Math.random), [2, 77, 768]);
 * const w = rt.upload(new Float32Array(768).fill(1), [768]);
 * const b = rt.upload(new Float32Array(768), [768]);
 * const y = layerNorm(x, w, b, { eps: 1e-5 }); // [2, 77, 768]
 * ```
 */
export function layerNorm(
  x: Tensor,
  weight: Tensor,
  bias: Tensor,
  options: LayerNormOptions = {},
): Tensor {
  if (x.shape.length < 1 || x.size === 0) {
    throw new Error(`denoise: layerNorm takes a non-empty [..., D] tensor, got [${x.shape}]`);
  }
  const d = x.shape[x.shape.length - 1];
  checkAffine("layerNorm", weight, "weight", d, x);
  checkAffine("layerNorm", bias, "bias", d, x);
  if (weight.dtype !== bias.dtype) {
    throw new Error(`denoise: layerNorm: weight is ${weight.dtype} but bias is ${bias.dtype}`);
  }
  const out = options.out ?? x.rt.empty(x.shape, x.dtype);
  checkOut("layerNorm", out, x, x.size);
  const vec = d % 4 === 0;
  const rows = x.size / d;
  const p: NormParams = {
    mode: "ln",
    dtype: x.dtype,
    wdtype: weight.dtype,
    vec,
    silu: false,
    skip: false,
    tokens: false,
    conv: false,
    cbias: false,
    temb: false,
    temb_bias: false,
    wg: LN_WG,
  };
  x.rt.dispatch({
    key: { kernel: "norm", params: p },
    bindings: [x, weight, bias, out],
    uniforms: uniforms({ rows, n: vec ? d / 4 : d, eps: options.eps ?? 1e-5 }),
    grid: grid1d(rows),
    label: () => `layerNorm [${x.shape}]`,
  });
  return out;
}
