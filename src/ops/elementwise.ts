/**
 * Elementwise ops on tensors: activations, broadcast binary ops, linear combinations and dtype
 * casts. Host side of `kernels/elementwise.wgsl.jinja`.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Unary ops: activations, an affine `scale` (y = x·alpha + beta) and `clamp` (to [alpha, beta]). */
export type UnaryOp =
  | "silu"
  | "gelu"
  | "gelu_tanh"
  | "quick_gelu"
  | "relu"
  | "scale"
  | "clamp"
  | "identity";
/** Binary ops with the second operand broadcast. */
export type BinaryOp = "add" | "sub" | "mul";

/** Template parameters of the elementwise kernel (the pipeline cache key's `params`). */
export interface ElementwiseParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Unary activation, broadcast binary op, or linear combination. */
  mode: "unary" | "binary" | "lincomb";
  /** The unary or binary op name. */
  op: string;
  /** Storage dtype of the inputs of a unary or binary op. */
  dtype: DType;
  /** Storage dtype of each lincomb term, comma-separated (`""` for unary and binary ops). */
  x_dtypes: string;
  /** Storage dtype of the output. */
  out_dtype: DType;
  /** Inputs of a lincomb (1–4). */
  terms: number;
  /** Workgroup size. */
  wg: number;
}

const WG = 256;

function params(n: number, bLen = 1, bInner = 1, coef: number[] = []): Uint32Array {
  const buf = new ArrayBuffer(32);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  u[0] = n;
  u[1] = bLen;
  u[2] = bInner;
  coef.forEach((c, i) => f[4 + i] = c);
  return u;
}

function run(
  inputs: Tensor[],
  out: Tensor,
  p: ElementwiseParams,
  uniforms: Uint32Array,
  label: string,
): Tensor {
  out.rt.dispatch({
    key: { kernel: "elementwise", params: p },
    bindings: [...inputs, out],
    uniforms,
    grid: grid1d(Math.ceil(out.size / WG)),
    label: () => `${label} [${out.shape}]`,
  });
  return out;
}

/**
 * y = op(x), elementwise. `alpha`/`beta` parametrise `scale` (y = x·alpha + beta) and `clamp`
 * (y = min(max(x, alpha), beta)).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { unary } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const y = unary(rt.upload(new Float32Array([-1, 0, 1]), [3]), "silu");
 * console.log(await y.read());
 * ```
 */
export function unary(
  x: Tensor,
  op: UnaryOp,
  options: { alpha?: number; beta?: number; out?: Tensor; outDType?: DType } = {},
): Tensor {
  const outDType = options.out?.dtype ?? options.outDType ?? x.dtype;
  const out = options.out ?? x.rt.empty(x.shape, outDType);
  checkSize(out, x.size, op);
  const u = params(x.size, 1, 1, [options.alpha ?? 1, options.beta ?? 0]);
  const p: ElementwiseParams = {
    mode: "unary",
    op,
    dtype: x.dtype,
    x_dtypes: "",
    out_dtype: outDType,
    terms: 1,
    wg: WG,
  };
  return run([x], out, p, u, op);
}

/**
 * y = a op b with `b` broadcast: `b` of shape [C] is matched to axis `axis` of `a` (default: the
 * last axis), or `b` has `a`'s size.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { binary } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const a = rt.upload(new Float32Array([1, 2, 3, 4]), [2, 2]);
 * const bias = rt.upload(new Float32Array([10, 20]), [2]);
 * console.log(await binary(a, bias, { op: "add" }).read()); // [11, 22, 13, 24]
 * ```
 */
export function binary(
  a: Tensor,
  b: Tensor,
  options: { op: BinaryOp; axis?: number; out?: Tensor },
): Tensor {
  if (a.dtype !== b.dtype) throw new Error(`denoise: ${options.op} of ${a.dtype} and ${b.dtype}`);
  let bInner = 1;
  if (b.size !== a.size) {
    const axis = options.axis ?? a.shape.length - 1;
    const ax = axis < 0 ? a.shape.length + axis : axis;
    if (a.shape[ax] !== b.size) {
      throw new Error(
        `denoise: ${options.op}: cannot broadcast [${b.shape}] over axis ${ax} of [${a.shape}]`,
      );
    }
    for (let i = ax + 1; i < a.shape.length; i++) bInner *= a.shape[i];
  }
  const out = options.out ?? a.rt.empty(a.shape, a.dtype);
  checkSize(out, a.size, options.op);
  const p: ElementwiseParams = {
    mode: "binary",
    op: options.op,
    dtype: a.dtype,
    x_dtypes: "",
    out_dtype: out.dtype,
    terms: 2,
    wg: WG,
  };
  return run([a, b], out, p, params(a.size, b.size, bInner), options.op);
}

/**
 * y = Σ coef_k · x_k over up to four same-sized tensors, each in its own dtype, summed in f32 (the
 * scheduler update, with the CFG combine folded in).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { lincomb } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const u = rt.upload(new Float32Array([1, 1]), [2]);
 * const c = rt.upload(new Float32Array([3, 5]), [2]);
 * const g = 7.5; // u + g·(c − u)
 * console.log(await lincomb([u, c], [1 - g, g]).read());
 * ```
 */
export function lincomb(
  xs: Tensor[],
  coefs: number[],
  options: { out?: Tensor } = {},
): Tensor {
  if (xs.length < 1 || xs.length > 4 || xs.length !== coefs.length) {
    throw new Error(`denoise: lincomb takes 1–4 tensors with one coefficient each`);
  }
  const x0 = xs[0];
  for (const x of xs) {
    if (x.size !== x0.size) {
      throw new Error(`denoise: lincomb of [${x.shape}] and [${x0.shape}]: sizes differ`);
    }
  }
  const out = options.out ?? x0.rt.empty(x0.shape, x0.dtype);
  checkSize(out, x0.size, "lincomb");
  const p: ElementwiseParams = {
    mode: "lincomb",
    op: "lincomb",
    dtype: x0.dtype,
    x_dtypes: xs.map((x) => x.dtype).join(","),
    out_dtype: out.dtype,
    terms: xs.length,
    wg: WG,
  };
  return run(xs, out, p, params(x0.size, 1, 1, coefs), "lincomb");
}

/**
 * Converts a tensor to another dtype (a copy even when the dtype is the same).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { cast } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const h = cast(rt.upload(new Float32Array([0.1]), [1]), "f16");
 * ```
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  return unary(x, "identity", { outDType: dtype });
}

function checkSize(out: Tensor, n: number, op: string): void {
  if (out.size !== n) throw new Error(`denoise: ${op} output has ${out.size} elements, needs ${n}`);
}
