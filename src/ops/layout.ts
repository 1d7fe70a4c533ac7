/**
 * Layout ops: NCHW ⇄ token permutes (with the Transformer2D residual fused), channel concatenation,
 * nearest 2× upsampling, and batch slicing/stacking for classifier-free guidance. Host side of
 * `kernels/layout.wgsl.jinja`.
 *
 * Tensors have no byte offset (a dispatch binds a whole buffer), so `batchSlice` copies: a
 * zero-copy view would also need 256-byte aligned offsets (`minStorageBufferOffsetAlignment`),
 * which a [1, …] slice seldom has.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d } from "../gpu/runtime.ts";
import { dtypeBytes, type Tensor } from "../gpu/tensor.ts";

/** Transpose kernel versions (the permutes). */
export type TransposeVariant = "tiled" | "naive";

/** Template parameters of the layout kernel (the pipeline cache key's `params`). */
export interface LayoutParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Which op. */
  mode: "transpose" | "concat" | "upsample" | "copy";
  /** Transpose version (`tiled` for the others, unused). */
  variant: TransposeVariant;
  /** Storage dtype. */
  dtype: DType;
  /** Transpose: add a residual in the output layout. */
  residual: boolean;
  /** Concat: vec4 items; upsample: two inputs → four outputs per invocation. */
  vec: boolean;
}

/** Options of the permutes. */
export interface TransposeOptions {
  /** Kernel version (default `tiled`). */
  variant?: TransposeVariant;
  /** Write into this tensor (the result's shape and dtype; must not be an input). */
  out?: Tensor;
}

/** Options of {@link tokensToNchw}. */
export interface TokensToNchwOptions extends TransposeOptions {
  /** Output height H (H·W must equal the token count). */
  height: number;
  /** Output width W. */
  width: number;
  /** Added to the result: `[B, C, H, W]`, same dtype (the Transformer2D block's input). */
  residual?: Tensor;
}

const WG = 256;
const TILE = 32;
const MAX_GRID = 65535;

function uniforms(v: {
  n: number;
  r?: number;
  k?: number;
  ka?: number;
  kb?: number;
  srcOff?: number;
  dstOff?: number;
}): Uint32Array {
  return new Uint32Array([
    v.n,
    v.r ?? 0,
    v.k ?? 0,
    v.ka ?? 0,
    v.kb ?? 0,
    v.srcOff ?? 0,
    v.dstOff ?? 0,
    0,
  ]);
}

function params(mode: LayoutParams["mode"], dtype: DType, extra: Partial<LayoutParams> = {}) {
  const p: LayoutParams = { mode, variant: "tiled", dtype, residual: false, vec: false, ...extra };
  return p;
}

function output(shape: number[], x: Tensor, op: string, out?: Tensor, inputs: Tensor[] = [x]) {
  if (!out) return x.rt.empty(shape, x.dtype);
  const n = shape.reduce((a, b) => a * b, 1);
  if (out.size !== n || out.dtype !== x.dtype || inputs.includes(out)) {
    throw new Error(
      `denoise: ${op}: out must be a separate ${x.dtype} tensor of shape [${shape}], ` +
        `got [${out.shape}] ${out.dtype}${inputs.includes(out) ? " (an input)" : ""}`,
    );
  }
  return out;
}

/** Records y[b] = x[b]ᵀ for x viewed as [B, R, K] (plus a residual in y's layout). */
function transpose(
  x: Tensor,
  out: Tensor,
  dims: { b: number; r: number; k: number },
  options: { variant?: TransposeVariant; residual?: Tensor; label: () => string },
): Tensor {
  const { b, r, k } = dims;
  const tiles: [number, number, number] = [Math.ceil(k / TILE), Math.ceil(r / TILE), b];
  const fits = tiles.every((t) => t <= MAX_GRID);
  const variant = options.variant === "naive" || !fits ? "naive" : "tiled";
  const residual = options.residual;
  x.rt.dispatch({
    key: {
      kernel: "layout",
      params: params("transpose", x.dtype, { variant, residual: !!residual }),
    },
    bindings: residual ? [x, residual, out] : [x, out],
    uniforms: uniforms({ n: x.size, r, k }),
    grid: variant === "tiled" ? tiles : grid1d(Math.ceil(x.size / WG)),
    label: options.label,
  });
  return out;
}

function checkNchw(x: Tensor, op: string): void {
  if ((x.shape.length !== 3 && x.shape.length !== 4) || x.size === 0) {
    throw new Error(`denoise: ${op} takes x as [B, C, H, W] or [B, C, L], got [${x.shape}]`);
  }
}

/**
 * NCHW `[B, C, H, W]` (or `[B, C, L]`) → tokens `[B, H·W, C]` (the Transformer2D `proj_in` input).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { nchwToTokens } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array(2 * 320 * 8 * 8), [2, 320, 8, 8]);
 * const tokens = nchwToTokens(x); // [2, 64, 320]
 * ```
 */
export function nchwToTokens(x: Tensor, options: TransposeOptions = {}): Tensor {
  checkNchw(x, "nchwToTokens");
  const [b, c] = x.shape;
  const l = x.size / (b * c);
  const out = output([b, l, c], x, "nchwToTokens", options.out);
  return transpose(x, out, { b, r: c, k: l }, {
    variant: options.variant,
    label: () => `nchwToTokens [${x.shape}]`,
  });
}

/**
 * Tokens `[B, H·W, C]` → NCHW `[B, C, H, W]`, optionally adding `residual` (`[B, C, H, W]`) on the
 * way out: the Transformer2D block's `proj_out(...) + residual`.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { tokensToNchw } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const tokens = rt.upload(new Float32Array(2 * 64 * 320), [2, 64, 320]);
 * const skip = rt.upload(new Float32Array(2 * 320 * 64), [2, 320, 8, 8]);
 * const y = tokensToNchw(tokens, { height: 8, width: 8, residual: skip }); // [2, 320, 8, 8]
 * ```
 */
export function tokensToNchw(x: Tensor, options: TokensToNchwOptions): Tensor {
  const { height, width, residual } = options;
  if (x.shape.length !== 3 || x.shape[1] !== height * width || x.size === 0) {
    throw new Error(
      `denoise: tokensToNchw takes x as [B, H·W, C] with H·W = ${height}·${width}, got [${x.shape}]`,
    );
  }
  const [b, l, c] = x.shape;
  const shape = [b, c, height, width];
  if (residual && (residual.size !== x.size || residual.dtype !== x.dtype)) {
    throw new Error(
      `denoise: tokensToNchw: residual is [${residual.shape}] ${residual.dtype}, needs ` +
        `[${shape}] ${x.dtype}`,
    );
  }
  const inputs = residual ? [x, residual] : [x];
  const out = output(shape, x, "tokensToNchw", options.out, inputs);
  return transpose(x, out, { b, r: l, k: c }, {
    variant: options.variant,
    residual,
    label: () => `tokensToNchw${residual ? "+res" : ""} [${shape}]`,
  });
}

/**
 * Concatenates NCHW tensors along the channel axis: `[B, Ca, ...]` and `[B, Cb, ...]` →
 * `[B, Ca + Cb, ...]` (the U-Net up blocks' skip connections).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { concatChannels } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const a = rt.upload(new Float32Array(2 * 1280 * 16), [2, 1280, 4, 4]);
 * const skip = rt.upload(new Float32Array(2 * 640 * 16), [2, 640, 4, 4]);
 * const y = concatChannels(a, skip); // [2, 1920, 4, 4]
 * ```
 */
export function concatChannels(a: Tensor, b: Tensor, options: { out?: Tensor } = {}): Tensor {
  const same = a.shape.length === b.shape.length && a.shape.length >= 2 &&
    a.shape.every((d, i) => i === 1 || d === b.shape[i]);
  if (!same || a.dtype !== b.dtype || a.size === 0 || b.size === 0) {
    throw new Error(
      `denoise: concatChannels needs [B, Ca, ...] and [B, Cb, ...] of one dtype with equal ` +
        `B and spatial dims, got [${a.shape}] ${a.dtype} and [${b.shape}] ${b.dtype}`,
    );
  }
  const shape = [...a.shape];
  shape[1] += b.shape[1];
  const out = output(shape, a, "concatChannels", options.out, [a, b]);
  const batch = a.shape[0];
  const ka = a.size / batch, kb = b.size / batch;
  const vec = ka % 4 === 0 && kb % 4 === 0;
  const per = vec ? 4 : 1;
  a.rt.dispatch({
    key: { kernel: "layout", params: params("concat", a.dtype, { vec }) },
    bindings: [a, b, out],
    uniforms: uniforms({ n: out.size / per, ka: ka / per, kb: kb / per }),
    grid: grid1d(Math.ceil(out.size / per / WG)),
    label: () => `concatChannels [${shape}]`,
  });
  return out;
}

/**
 * Nearest-neighbour 2× upsampling of NCHW `[B, C, H, W]` → `[B, C, 2H, 2W]`
 * (`F.interpolate(scale_factor=2, mode="nearest")`).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { upsampleNearest2x } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array([1, 2, 3, 4]), [1, 1, 2, 2]);
 * console.log(await upsampleNearest2x(x).read()); // 4×4: each value repeated in a 2×2 block
 * ```
 */
export function upsampleNearest2x(x: Tensor, options: { out?: Tensor } = {}): Tensor {
  if (x.shape.length !== 4 || x.size === 0) {
    throw new Error(`denoise: upsampleNearest2x takes x as [B, C, H, W], got [${x.shape}]`);
  }
  const [b, c, h, w] = x.shape;
  const out = output([b, c, 2 * h, 2 * w], x, "upsampleNearest2x", options.out);
  const vec = w % 2 === 0;
  const n = vec ? out.size / 4 : out.size;
  x.rt.dispatch({
    key: { kernel: "layout", params: params("upsample", x.dtype, { vec }) },
    bindings: [x, out],
    uniforms: uniforms({ n, r: h, k: vec ? w / 2 : w }),
    grid: grid1d(Math.ceil(n / WG)),
    label: () => `upsampleNearest2x [${x.shape}]`,
  });
  return out;
}

/** Copies `count` elements from element `srcOff` of `src` to element `dstOff` of `dst`. */
function copyElements(
  src: Tensor,
  dst: Tensor,
  at: { srcOff: number; dstOff: number; count: number },
): void {
  const bytes = dtypeBytes(src.dtype);
  const [s, d, n] = [at.srcOff * bytes, at.dstOff * bytes, at.count * bytes];
  if ((s | d | n) % 4 === 0) {
    src.rt.copy(src, dst, { srcOffset: s, dstOffset: d, bytes: n });
    return;
  }
  src.rt.dispatch({
    key: { kernel: "layout", params: params("copy", src.dtype) },
    bindings: [src, dst],
    uniforms: uniforms({ n: at.count, srcOff: at.srcOff, dstOff: at.dstOff }),
    grid: grid1d(Math.ceil(at.count / WG)),
    label: () => `copy [${at.count}]`,
  });
}

/**
 * A copy of `count` entries of the leading (batch) axis from `start`: `x[start:start+count]`
 * (splitting the CFG batch). Always a new tensor: tensors cannot view a buffer at an offset.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { batchSlice } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const eps = rt.upload(new Float32Array(2 * 4 * 8 * 8), [2, 4, 8, 8]);
 * const uncond = batchSlice(eps, { start: 0, count: 1 }); // [1, 4, 8, 8]
 * const cond = batchSlice(eps, { start: 1, count: 1 });
 * ```
 */
export function batchSlice(x: Tensor, options: { start: number; count: number }): Tensor {
  const { start, count } = options;
  const n = x.shape[0];
  if (
    x.shape.length < 1 || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 ||
    count < 1 || start + count > n
  ) {
    throw new Error(
      `denoise: batchSlice of [${x.shape}] from ${start} for ${count}: needs 0 ≤ start and ` +
        `1 ≤ count with start + count ≤ ${n}`,
    );
  }
  const row = x.size / n;
  const out = x.rt.empty([count, ...x.shape.slice(1)], x.dtype);
  copyElements(x, out, { srcOff: start * row, dstOff: 0, count: count * row });
  return out;
}

/**
 * Stacks tensors along the leading (batch) axis: `[n_i, ...rest]` → `[Σ n_i, ...rest]` (building
 * the CFG batch from the unconditional and conditional halves).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { batchConcat } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const uncond = rt.upload(new Float32Array(77 * 768), [1, 77, 768]);
 * const cond = rt.upload(new Float32Array(77 * 768), [1, 77, 768]);
 * const ctx = batchConcat([uncond, cond]); // [2, 77, 768]
 * ```
 */
export function batchConcat(xs: Tensor[], options: { out?: Tensor } = {}): Tensor {
  const first = xs[0];
  const rest = first?.shape.slice(1) ?? [];
  const bad = xs.find((t) =>
    t.shape.length !== first.shape.length || t.dtype !== first.dtype ||
    t.shape.slice(1).some((d, i) => d !== rest[i])
  );
  if (!first || first.shape.length < 1 || bad) {
    throw new Error(
      `denoise: batchConcat needs one or more [n, ...rest] tensors of one dtype and equal rest, ` +
        `got ${xs.map((t) => `[${t.shape}] ${t.dtype}`).join(", ") || "none"}`,
    );
  }
  const total = xs.reduce((s, t) => s + t.shape[0], 0);
  const out = output([total, ...rest], first, "batchConcat", options.out, xs);
  let at = 0;
  for (const t of xs) {
    copyElements(t, out, { srcOff: 0, dstOff: at, count: t.size });
    at += t.size;
  }
  return out;
}
