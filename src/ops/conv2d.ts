/**
 * 2-D convolution on NCHW activations with PyTorch `[Cout, Cin, kh, kw]` weights, as an implicit
 * GEMM (no im2col buffer): host side of `kernels/conv2d.wgsl.jinja`.
 *
 * Fusions, all optional: a second input `skip` read as a channel concat `cat([x, skip], 1)` (the
 * diffusers up blocks), a nearest 2× upsample of the input (`upsample`), a soft clamp
 * `c·tanh(x/c)` of the input (`softClamp`, TAESD's first layer), and the epilogue
 * `act(conv + bias + residual)` with `act` one of {@link ConvActivation}.
 *
 * Weights are used in their checkpoint layout as loaded: the kernel's K index
 * `(ci·kh + r)·kw + s` is the weight's own memory order, so there is no `prepareConvWeight` step.
 *
 * Kernel ladder (`variant`): "naive" (one invocation per output, direct loop) and "igemm"
 * (workgroup-memory tiles, register blocking, register prefetch of the next K slice, and split-K
 * over a f32 workspace when the output has too few tiles to fill the GPU). The default is "igemm"
 * with the tile and split chosen by {@link planConv2d}.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { groupNorm, groupNormOfConvParts } from "./norm.ts";

/** Epilogue activations of {@link conv2d} (the elementwise unary ops of the same names). */
export type ConvActivation = "none" | "relu" | "silu" | "gelu" | "gelu_tanh" | "quick_gelu";

const ACTIVATIONS: readonly string[] = ["none", "relu", "silu", "gelu", "gelu_tanh", "quick_gelu"];
/** Kernel versions of the ladder. */
export type ConvVariant = "naive" | "igemm";
/** Output tile shapes (Cout × pixels) of the "igemm" kernel. */
export type ConvTile = "128x128" | "64x64" | "16x256";

/** Template parameters of the conv2d kernel (the pipeline cache key's `params`). */
export interface Conv2dParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Kernel version: direct, implicit GEMM, or the split-K reduce pass. */
  variant: "naive" | "igemm" | "reduce";
  /** Storage dtype of x, weight, bias, residual and y (accumulation is f32). */
  dtype: DType;
  /** Kernel height. */
  kh: number;
  /** Kernel width. */
  kw: number;
  /** A bias [Cout] is bound. */
  bias: boolean;
  /** A second input is read as a channel concat after x. */
  skip: boolean;
  /** A residual of the output shape is added. */
  residual: boolean;
  /** A per-sample channel shift `temb[b, col + co]` is added. */
  temb: boolean;
  /** A per-channel bias of the shift is added. */
  temb_bias: boolean;
  /** The input is read nearest-upsampled 2×. */
  upsample: boolean;
  /** The input is read as c·tanh(x/c). */
  soft_clamp: boolean;
  /** Fused activation, applied last. */
  act: ConvActivation;
  /** Split-K: partial sums go to a buffer reduced by the "reduce" pass. */
  split: boolean;
  /** Tile rows (output channels). */
  bm: number;
  /** Tile columns (output pixels). */
  bn: number;
  /** Tile depth (reduction). */
  bk: number;
  /** Outputs per invocation along rows. */
  tm: number;
  /** Outputs per invocation along columns. */
  tn: number;
  /** Workgroup size. */
  wg: number;
}

/** Options of {@link conv2d}. */
export interface Conv2dOptions {
  /** Per-output-channel bias `[Cout]`. */
  bias?: Tensor;
  /** Stride (both axes; default 1). */
  stride?: number;
  /** Zero padding (both axes; default `floor(kh / 2)`, "same" for odd kernels at stride 1). */
  padding?: number;
  /** A second input `[B, Cskip, H, W]` concatenated after `x` along channels. */
  skip?: Tensor;
  /**
   * Convolve the nearest-neighbour 2× upsample of the input (of `x` and `skip`); `[H', W']`
   * upsamples to that size instead, each axis 2× or 2× − 1 (the U-Net's `forward_upsample_size`
   * for sizes that are not multiples of 2^levels: the 2× upsample with its last row or column cut).
   */
  upsample?: boolean | readonly [number, number];
  /** Feed `c·tanh(input / c)` instead of the input (TAESD's `Clamp`, c = 3). */
  softClamp?: number;
  /** Activation applied last: `act(conv + bias + residual)` (default "none"). */
  activation?: ConvActivation;
  /** A tensor of the output's shape added after the bias (a residual connection). */
  residual?: Tensor;
  /**
   * A per-sample channel shift added after the bias: `values[b, column + co]` (`values` is
   * `[B, S]`; `column` default 0), plus `bias[co]` when given — the resnet's time embedding,
   * `time_emb_proj(temb)` computed for many layers at once.
   */
  temb?: { values: Tensor; column?: number; bias?: Tensor };
  /**
   * Then GroupNorm (+ SiLU) of the result, which is all that is returned (the raw conv output
   * never exists when the conv splits K: the norm reads the partial sums in place of the reduce
   * pass). Not with `out`, `residual` or an activation.
   */
  groupNorm?: { weight: Tensor; bias: Tensor; groups: number; eps: number; silu?: boolean };
  /** Write here instead of a new tensor (output shape and dtype). */
  out?: Tensor;
  /** Kernel version (default "igemm"). */
  variant?: ConvVariant;
  /** Force the igemm tile (default: {@link planConv2d}). */
  tile?: ConvTile;
  /** Force the number of K splits of the igemm kernel (default: {@link planConv2d}). */
  splitK?: number;
}

/** A chosen igemm configuration. */
export interface ConvPlan {
  /** Output tile. */
  tile: ConvTile;
  /** K splits (1: no split-K). */
  splits: number;
}

/** The tile geometry of one "igemm" tile choice. */
export interface TileShape {
  /** Tile rows (output channels). */
  bm: number;
  /** Tile columns (output pixels). */
  bn: number;
  /** Tile depth (reduction). */
  bk: number;
  /** Outputs per invocation along rows. */
  tm: number;
  /** Outputs per invocation along columns. */
  tn: number;
}

/**
 * Tile shapes of the igemm kernel (bm × bn outputs, bk-deep K slices, tm × tn per invocation):
 * 256 invocations each, under 16 KiB of workgroup memory.
 *
 * @example
 * ```ts
 * import { CONV_TILES } from "@denoise/sd/ops";
 * CONV_TILES["128x128"].bk; // 8
 * ```
 */
export const CONV_TILES: Readonly<Record<ConvTile, Readonly<TileShape>>> = {
  "128x128": { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  "64x64": { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  "16x256": { bm: 16, bn: 256, bk: 8, tm: 4, tn: 4 },
};

/** Workgroups that fill the target GPU (an H100 has 132 SMs, two 256-invocation groups each). */
const FILL_WORKGROUPS = 264;
const MAX_SPLITS = 16;
const MIN_TILES_PER_SPLIT = 16;
const WG = 256;
const MAX_GRID = 65535;

/**
 * Chooses the igemm tile and split-K for a conv seen as the GEMM M = Cout, N = B·Ho·Wo,
 * K = Cin·kh·kw: small Cout gets the 16×256 tile, large outputs the 128×128 tile when it wastes
 * little of M and still gives enough workgroups, otherwise 64×64; K is split when the tiles cannot
 * fill the GPU and K is long.
 *
 * @example
 * ```ts
 * import { planConv2d } from "@denoise/sd/ops";
 * planConv2d({ m: 1280, n: 2 * 8 * 8, k: 1280 * 9 }); // { tile: "64x64", splits: 7 }
 * ```
 */
export function planConv2d(gemm: { m: number; n: number; k: number }): ConvPlan {
  const { m, n, k } = gemm;
  const tiles = (t: ConvTile) => Math.ceil(m / CONV_TILES[t].bm) * Math.ceil(n / CONV_TILES[t].bn);
  let tile: ConvTile = "64x64";
  if (m <= 16) tile = "16x256";
  else if (Math.ceil(m / 128) * 128 <= 1.25 * m && tiles("128x128") >= FILL_WORKGROUPS / 2) {
    tile = "128x128";
  }
  const wgs = tiles(tile);
  const kTiles = Math.ceil(k / CONV_TILES[tile].bk);
  let splits = 1;
  if (wgs < FILL_WORKGROUPS / 2 && kTiles >= 2 * MIN_TILES_PER_SPLIT) {
    splits = Math.min(
      MAX_SPLITS,
      Math.ceil(FILL_WORKGROUPS / wgs),
      Math.floor(kTiles / MIN_TILES_PER_SPLIT),
    );
  }
  return { tile, splits };
}

/** The output size of a conv along one axis. */
function outDim(size: number, k: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - k) / stride) + 1;
}

function shapeOf(t: Tensor): string {
  return `[${t.shape.join(",")}]`;
}

function fail(msg: string): never {
  throw new Error(`denoise: conv2d: ${msg}`);
}

/**
 * The output shape `[B, Cout, Ho, Wo]` of {@link conv2d} for input `x` and weight `weight`, after
 * validating every input; throws a message naming the mismatch.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { conv2dShape } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * conv2dShape(rt.empty([2, 4, 9, 9]), rt.empty([8, 4, 3, 3]), { stride: 2 }); // [2, 8, 5, 5]
 * ```
 */
export function conv2dShape(x: Tensor, weight: Tensor, options: Conv2dOptions = {}): number[] {
  if (x.shape.length !== 4) {
    fail(`x must be NCHW [B, C, H, W], got ${shapeOf(x)}; reshape it to 4-D first`);
  }
  if (weight.shape.length !== 4) {
    fail(`weight must be [Cout, Cin, kh, kw], got ${shapeOf(weight)}`);
  }
  const [b, cx, hs, ws] = x.shape;
  const [cout, cin, kh, kw] = weight.shape;
  const skip = options.skip;
  let cs = 0;
  if (skip) {
    if (
      skip.shape.length !== 4 || skip.shape[0] !== b || skip.shape[2] !== hs || skip.shape[3] !== ws
    ) {
      fail(
        `skip ${shapeOf(skip)} must be [${b}, C, ${hs}, ${ws}] to concatenate with x ${
          shapeOf(x)
        } ` +
          `along channels`,
      );
    }
    cs = skip.shape[1];
  }
  if (cx + cs !== cin) {
    const what = skip
      ? `x ${shapeOf(x)} + skip ${shapeOf(skip)} give ${cx + cs}`
      : `x ${shapeOf(x)} has ${cx}`;
    fail(`weight ${shapeOf(weight)} expects ${cin} input channels but ${what}`);
  }
  const stride = options.stride ?? 1;
  const pad = options.padding ?? Math.floor(kh / 2);
  if (!Number.isInteger(stride) || stride < 1) {
    fail(`stride must be a positive integer, got ${stride}`);
  }
  if (!Number.isInteger(pad) || pad < 0) fail(`padding must be a non-negative integer, got ${pad}`);
  const [hu, wu] = upsampledSize(hs, ws, options.upsample);
  const ho = outDim(hu, kh, stride, pad);
  const wo = outDim(wu, kw, stride, pad);
  if (ho < 1 || wo < 1) {
    fail(`a ${kh}×${kw} kernel with padding ${pad} does not fit the ${hu}×${wu} input`);
  }
  const shape = [b, cout, ho, wo];
  for (const t of [weight, skip, options.bias, options.residual, options.out]) {
    if (t && t.dtype !== x.dtype) {
      fail(`all tensors must share x's dtype ${x.dtype}, got ${t.dtype} ${shapeOf(t)}; cast first`);
    }
  }
  if (options.bias && (options.bias.size !== cout || options.bias.shape.length !== 1)) {
    fail(`bias ${shapeOf(options.bias)} must be [${cout}] (one per output channel)`);
  }
  const same = (t: Tensor) => t.shape.length === 4 && t.shape.every((d, i) => d === shape[i]);
  const temb = options.temb;
  if (temb) {
    const [tb, ts] = temb.values.shape;
    const col = temb.column ?? 0;
    if (temb.values.shape.length !== 2 || tb !== b || !(col >= 0 && col + cout <= ts)) {
      fail(
        `temb values ${shapeOf(temb.values)} at column ${col} must be [${b}, ≥ column + ${cout}]`,
      );
    }
    if (temb.bias && (temb.bias.size !== cout || temb.bias.shape.length !== 1)) {
      fail(`temb bias ${shapeOf(temb.bias)} must be [${cout}]`);
    }
    for (const t of [temb.values, temb.bias]) {
      if (t && t.dtype !== x.dtype) fail(`temb tensors must be ${x.dtype}, got ${t.dtype}`);
    }
  }
  if (options.residual && !same(options.residual)) {
    fail(`residual ${shapeOf(options.residual)} must have the output's shape [${shape}]`);
  }
  if (options.out && !same(options.out)) {
    fail(`out ${shapeOf(options.out)} must have the output's shape [${shape}]`);
  }
  const inputs = { x, weight, skip, bias: options.bias, residual: options.residual };
  for (const [name, t] of Object.entries(inputs)) {
    if (t && options.out && t.buffer === options.out.buffer) {
      fail(
        `out and ${name} are the same buffer; WebGPU forbids reading and writing it in one pass`,
      );
    }
  }
  if (options.softClamp !== undefined && !(options.softClamp > 0)) {
    fail(`softClamp must be a positive number, got ${options.softClamp}`);
  }
  if (options.activation !== undefined && !ACTIVATIONS.includes(options.activation)) {
    fail(`unknown activation "${options.activation}" (use ${ACTIVATIONS.join(", ")})`);
  }
  const variant = options.variant ?? "igemm";
  if (variant !== "naive" && variant !== "igemm") {
    fail(`unknown variant "${variant}" (use "naive" or "igemm")`);
  }
  if (options.tile !== undefined && !(options.tile in CONV_TILES)) {
    fail(`unknown tile "${options.tile}" (use ${Object.keys(CONV_TILES).join(", ")})`);
  }
  const splitK = options.splitK;
  if (splitK !== undefined && (!Number.isInteger(splitK) || splitK < 1)) {
    fail(`splitK must be a positive integer, got ${splitK}`);
  }
  return shape;
}

/**
 * y = act(conv2d(x ⧺ skip, weight) + bias + residual): a 2-D convolution of NCHW `x`
 * (`[B, Cin, H, W]`, or `[B, Cx, H, W]` with `skip` `[B, Cin − Cx, H, W]`) with the PyTorch weight
 * `[Cout, Cin, kh, kw]`, giving `[B, Cout, Ho, Wo]`. f16 tensors are computed with f32
 * accumulation. Records the dispatches; nothing is flushed.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { conv2d } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array(2 * 4 * 8 * 8).fill(1), [2, 4, 8, 8]);
 * const w = rt.upload(new Float32Array(16 * 4 * 9).fill(0.1), [16, 4, 3, 3]);
 * const y = conv2d(x, w, { stride: 2, activation: "silu" }); // [2, 16, 4, 4]
 * console.log(y.shape, (await y.read())[0]);
 * ```
 */
export function conv2d(x: Tensor, weight: Tensor, options: Conv2dOptions = {}): Tensor {
  const [b, cout, ho, wo] = conv2dShape(x, weight, options);
  const gn = options.groupNorm;
  if (gn && (options.out || options.residual || (options.activation ?? "none") !== "none")) {
    fail(`groupNorm cannot follow a conv with out, residual or an activation`);
  }
  const rt = x.rt;
  const [, cx, hs, ws] = x.shape;
  const [, cin, kh, kw] = weight.shape;
  const [hu, wu] = upsampledSize(hs, ws, options.upsample);
  const outShape = [b, cout, ho, wo];
  const outSize = b * cout * ho * wo;
  let made: Tensor | undefined;
  const output = () => made ??= options.out ?? rt.empty(outShape, x.dtype);
  const normed = (y: Tensor): Tensor => {
    if (!gn) return y;
    const z = groupNorm(y, gn.weight, gn.bias, { groups: gn.groups, eps: gn.eps, silu: gn.silu });
    y.dispose();
    return z;
  };
  const m = cout, n = b * ho * wo, k = cin * kh * kw;
  const base: Conv2dParams = {
    variant: "naive",
    dtype: x.dtype,
    kh,
    kw,
    bias: !!options.bias,
    skip: !!options.skip,
    residual: !!options.residual,
    temb: !!options.temb,
    temb_bias: !!options.temb?.bias,
    upsample: !!options.upsample,
    soft_clamp: options.softClamp !== undefined,
    act: options.activation ?? "none",
    split: false,
    bm: 0,
    bn: 0,
    bk: 0,
    tm: 0,
    tn: 0,
    wg: 0,
  };
  const u = new Uint32Array(24);
  u.set([b, cx, cin - cx, cout, hs, ws, hu, wu, ho, wo]);
  u.set([options.stride ?? 1, options.padding ?? Math.floor(kh / 2), k, n, ho * wo, outSize], 10);
  new Float32Array(u.buffer)[20] = options.softClamp ?? 1;
  if (options.temb) u.set([options.temb.values.shape[1], options.temb.column ?? 0], 21);
  const inputs = [x, ...(options.skip ? [options.skip] : []), weight];
  const epilogue = [
    ...(options.bias ? [options.bias] : []),
    ...(options.residual ? [options.residual] : []),
    ...(options.temb ? [options.temb.values] : []),
    ...(options.temb?.bias ? [options.temb.bias] : []),
  ];
  const label = () => `conv2d ${kh}×${kw}${options.upsample ? " up" : ""} [${outShape}]`;
  const variant = options.variant ?? "igemm";
  if (variant === "naive") {
    u.set([1, 1, 1, 1], 16);
    rt.dispatch({
      key: { kernel: "conv2d", params: { ...base, wg: WG } },
      bindings: [...inputs, ...epilogue, output()],
      uniforms: u,
      grid: grid1d(Math.ceil(outSize / WG)),
      label: () => `${label()} naive`,
    });
    return normed(output());
  }
  const plan = planConv2d({ m, n, k });
  const tile = options.tile ?? plan.tile;
  const shape = CONV_TILES[tile];
  const kTiles = Math.ceil(k / shape.bk);
  const want = options.splitK ?? (options.tile ? 1 : plan.splits);
  const perSplit = Math.ceil(kTiles / Math.min(want, kTiles));
  const splits = Math.ceil(kTiles / perSplit);
  const tilesN = Math.ceil(n / shape.bn);
  const tilesM = Math.ceil(m / shape.bm);
  const gx = Math.min(tilesN, MAX_GRID);
  const gz = splits * Math.ceil(tilesN / gx);
  if (tilesM > MAX_GRID || gz > MAX_GRID) {
    fail(`output [${outShape}] is too large for one dispatch; split the batch`);
  }
  u.set([splits, perSplit, tilesN, gx], 16);
  const params: Conv2dParams = { ...base, ...shape, variant: "igemm", split: splits > 1 };
  if (splits === 1) {
    rt.dispatch({
      key: { kernel: "conv2d", params },
      bindings: [...inputs, ...epilogue, output()],
      uniforms: u,
      grid: [gx, tilesM, gz],
      label: () => `${label()} ${tile}`,
    });
    return normed(output());
  }
  const part = rt.empty([splits, outSize], "f32");
  rt.dispatch({
    key: {
      kernel: "conv2d",
      params: {
        ...params,
        bias: false,
        residual: false,
        temb: false,
        temb_bias: false,
        act: "none",
      },
    },
    bindings: [...inputs, part],
    uniforms: u,
    grid: [gx, tilesM, gz],
    label: () => `${label()} ${tile} split ${splits}`,
  });
  if (gn) {
    // the norm reads the partial sums (and the conv's epilogue) in place of the reduce pass
    const y = groupNormOfConvParts(
      {
        parts: part,
        splits,
        shape: outShape,
        dtype: x.dtype,
        bias: options.bias,
        temb: options.temb,
      },
      gn.weight,
      gn.bias,
      { groups: gn.groups, eps: gn.eps, silu: gn.silu },
    );
    part.dispose();
    return y;
  }
  const out = output();
  const reduce: Conv2dParams = {
    ...base,
    variant: "reduce",
    skip: false,
    upsample: false,
    soft_clamp: false,
    kh: 1,
    kw: 1,
    wg: WG,
  };
  rt.dispatch({
    key: { kernel: "conv2d", params: reduce },
    bindings: [part, ...epilogue, out],
    uniforms: u,
    grid: grid1d(Math.ceil(out.size / WG)),
    label: () => `${label()} split-K reduce`,
  });
  part.dispose();
  return out;
}

/**
 * The size of the (virtually) upsampled input: itself, 2×, or a given size of 2× or 2× − 1 per
 * axis — nearest upsampling to a size, `floor(i·in/out)`, equals the 2× upsample's `floor(i/2)`
 * exactly there, so the kernel reads it the same way and zero-pads past the cut edge.
 */
function upsampledSize(
  hs: number,
  ws: number,
  up: boolean | readonly [number, number] | undefined,
): [number, number] {
  if (!up) return [hs, ws];
  if (up === true) return [2 * hs, 2 * ws];
  const [h, w] = up;
  const ok = (t: number, s: number) => Number.isInteger(t) && (t === 2 * s || t === 2 * s - 1);
  if (!ok(h, hs) || !ok(w, ws)) {
    fail(`upsample to ${h}×${w} from ${hs}×${ws}: each side must be 2× or 2× − 1 the input's`);
  }
  return [h, w];
}
