/**
 * Matrix products: `linear` (nn.Linear, y = act(x·Wᵀ + b) + residual with PyTorch's [out, in]
 * weight) and batched `matmul`. Host side of `kernels/gemm.wgsl.jinja`.
 *
 * Kernel ladder (the `variant` option; `"auto"` picks by shape):
 * - `naive`: one invocation per output, straight from global memory.
 * - `tiled`: 64×64 workgroup tiles through workgroup memory, 4×4 outputs per invocation, scalar loads.
 * - `tiled_vec`: as `tiled`, with vec4 loads when K % 4 == 0 and the next k-tile's loads in flight
 *   while the current one is multiplied.
 * - `tiled_128`: as `tiled_vec` with 128×64 tiles and 8×4 outputs per invocation (large M·N).
 * - `skinny`: for a handful of rows (M ≤ 8, the time embedding): 32 invocations share each output
 *   column and stream the weight row once. Needs B as [N, K] (`linear`, or `matmul` with `transB`).
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Activations the epilogue can fuse. */
export type GemmActivation = "none" | "gelu" | "gelu_tanh" | "quick_gelu" | "silu";

/** Kernel versions; `auto` chooses one from the shape. */
export type GemmVariant = "auto" | "naive" | "tiled" | "tiled_vec" | "tiled_128" | "skinny";

/**
 * Every concrete variant, in ladder order (for the benchmark).
 *
 * @example
 * ```ts
 * import { GEMM_VARIANTS } from "@denoise/sd/ops";
 * for (const variant of GEMM_VARIANTS) console.log(variant); // naive, tiled, …
 * ```
 */
export const GEMM_VARIANTS: readonly Exclude<GemmVariant, "auto">[] = [
  "naive",
  "tiled",
  "tiled_vec",
  "tiled_128",
  "skinny",
];

/** Template parameters of the gemm kernel (the pipeline cache key's `params`). */
export interface GemmParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Kernel family inside the template. */
  variant: "naive" | "tiled" | "skinny";
  /** Storage dtype of a, b, bias, residual and y (accumulation is f32). */
  dtype: DType;
  /** b is [N, K] (true) or [K, N] (false). */
  trans_b: boolean;
  /** Fused activation. */
  act: GemmActivation;
  /** A bias [N] is bound. */
  bias: boolean;
  /** A residual of y's shape is bound and added last. */
  residual: boolean;
  /** y (and the residual) are written as NCHW [B, N, L] from token rows (tiled and naive). */
  nchw: boolean;
  /** GEGLU epilogue: b holds [h; gate] rows, y = h · gelu(gate) (tiled only). */
  geglu: boolean;
  /** LayerNorm prologue on a's rows (tiled only). */
  ln: boolean;
  /** a (and b when trans_b) are read as vec4 (K % 4 == 0). */
  vec: boolean;
  /** Tile rows / columns / depth. */
  bm: number;
  /** Tile columns. */
  bn: number;
  /** Tile depth. */
  bk: number;
  /** Outputs per invocation (rows, columns). */
  tm: number;
  /** Outputs per invocation along columns. */
  tn: number;
  /** Invocations along columns (bn / tn) and rows (bm / tm). */
  tx: number;
  /** Invocations along rows (bm / tm). */
  ty: number;
  /** vec4 quads of the A and B tiles each invocation stages. */
  pa: number;
  /** vec4 quads of the B tile each invocation stages. */
  pb: number;
  /** Overlap the next tile's global loads with the current tile's math. */
  prefetch: boolean;
  /** Rows per pass of the skinny kernel. */
  mt: number;
  /** Invocations per workgroup. */
  wg: number;
}

/** Options of {@link linear}. */
export interface LinearOptions {
  /** Bias [N], same dtype as x. */
  bias?: Tensor;
  /** Activation applied after the bias (default `none`). */
  activation?: GemmActivation;
  /** Added after the activation; y's shape [..., N] (`[B, N, H, W]` with `nchw`). */
  residual?: Tensor;
  /**
   * x is tokens `[B, H·W, K]`: write y as NCHW `[B, N, H, W]` (the permute back from tokens fused
   * into the store; the residual is NCHW too).
   */
  nchw?: { height: number; width: number };
  /**
   * GEGLU: the weight's rows are `[h; gate]` (`[2·N, K]`, diffusers' `GEGLU.proj`) and
   * y = (x·Wₕᵀ + bₕ) · gelu(x·W_gᵀ + b_g), `[..., N]`: the projection and the gate in one GEMM.
   */
  geglu?: boolean;
  /**
   * Normalise x's rows with LayerNorm first: `weight` and `bias` `[K]`, `eps` (diffusers'
   * `norm → linear` pairs). The normalised rows are never stored: each workgroup computes its
   * rows' statistics and normalises as it loads them.
   */
  layerNorm?: { weight: Tensor; bias: Tensor; eps: number };
  /** Write into this tensor (y's shape and dtype; must not be an input). */
  out?: Tensor;
  /** Kernel version (default `auto`). */
  variant?: GemmVariant;
}

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** b is [Bt, N, K] (a·bᵀ) instead of [Bt, K, N]. */
  transB?: boolean;
  /** Scale applied to the product (default 1). */
  alpha?: number;
  /** Write into this tensor ([Bt, M, N], a's dtype; must not be an input). */
  out?: Tensor;
  /** Kernel version (default `auto`). */
  variant?: GemmVariant;
}

/** A batched problem: y[z] = alpha · a[z] · B[z] with the fused epilogue. */
interface Problem {
  batch: number;
  m: number;
  n: number;
  k: number;
  aStride: number;
  bStride: number;
  transB: boolean;
  alpha: number;
  act: GemmActivation;
  bias?: Tensor;
  residual?: Tensor;
  /** Tokens per image when writing NCHW. */
  nchwL?: number;
  geglu?: boolean;
  layerNorm?: { weight: Tensor; bias: Tensor; eps: number };
}

/** Output work groups under which a 128×64 tile leaves a large GPU idle (≈ 2 per SM on an H100). */
const FILL_WORKGROUPS = 256;
/** Rows per pass of the skinny kernel, and the largest M `auto` sends to it. */
const SKINNY_ROWS = 8;
const ACTIVATIONS = ["none", "gelu", "gelu_tanh", "quick_gelu", "silu"];

/**
 * The variant `auto` picks: `skinny` for at most 8 rows with B as [N, K], `tiled_128` when its
 * 128×64 tiles still give ≥ 256 workgroups, else `tiled_vec`.
 *
 * @example
 * ```ts
 * import { chooseGemmVariant } from "@denoise/sd/ops";
 * chooseGemmVariant({ m: 8192, n: 320, k: 320, batch: 1, transB: true }); // "tiled_128"
 * chooseGemmVariant({ m: 2, n: 1280, k: 320, batch: 1, transB: true }); // "skinny"
 * ```
 */
export function chooseGemmVariant(
  shape: { m: number; n: number; k: number; batch: number; transB: boolean },
): Exclude<GemmVariant, "auto"> {
  if (shape.transB && shape.m <= SKINNY_ROWS) return "skinny";
  const big = Math.ceil(shape.m / 128) * Math.ceil(shape.n / 64) * shape.batch;
  return big >= FILL_WORKGROUPS ? "tiled_128" : "tiled_vec";
}

/**
 * The template parameters and workgroup grid of a variant for a problem.
 *
 * @example
 * ```ts
 * import { gemmPlan } from "@denoise/sd/ops";
 * const { params, grid } = gemmPlan("tiled_128", { m: 8192, n: 320, k: 320, batch: 1, transB: true }, "f16");
 * // params.bm === 128, grid = [5, 64, 1]
 * ```
 */
export function gemmPlan(
  variant: Exclude<GemmVariant, "auto">,
  shape: { m: number; n: number; k: number; batch: number; transB: boolean },
  dtype: DType,
  epilogue: {
    act?: GemmActivation;
    bias?: boolean;
    residual?: boolean;
    nchw?: boolean;
    geglu?: boolean;
    ln?: boolean;
  } = {},
): { params: GemmParams; grid: [number, number, number] } {
  const { m, n, k, batch, transB } = shape;
  const geglu = epilogue.geglu ?? false;
  if (geglu && (variant === "naive" || variant === "skinny" || !transB)) {
    throw new Error(
      `denoise: the GEGLU epilogue needs a tiled gemm variant and b as [2·N, K], got "${variant}"`,
    );
  }
  if ((epilogue.ln ?? false) && (variant === "naive" || variant === "skinny")) {
    throw new Error(`denoise: the LayerNorm prologue needs a tiled gemm variant, got "${variant}"`);
  }
  if ((epilogue.nchw ?? false) && variant === "skinny") {
    throw new Error(`denoise: the NCHW store needs the tiled or naive gemm variant`);
  }
  const base = {
    dtype,
    trans_b: transB,
    act: epilogue.act ?? "none",
    bias: epilogue.bias ?? false,
    residual: epilogue.residual ?? false,
    nchw: epilogue.nchw ?? false,
    geglu,
    ln: epilogue.ln ?? false,
    bm: 0,
    bn: 0,
    bk: 0,
    tm: 0,
    tn: 0,
    tx: 0,
    ty: 0,
    pa: 0,
    pb: 0,
    prefetch: false,
    mt: 0,
  };
  let params: GemmParams;
  let grid: [number, number, number];
  if (variant === "naive") {
    params = { ...base, variant: "naive", vec: false, wg: 256 };
    grid = [Math.ceil(n / 16), Math.ceil(m / 16), batch];
  } else if (variant === "skinny") {
    if (!transB) {
      throw new Error(
        `denoise: gemm variant "skinny" needs b as [N, K] (linear, or matmul with transB); ` +
          `use variant "auto" or "tiled_vec"`,
      );
    }
    params = { ...base, variant: "skinny", vec: k % 4 === 0, mt: SKINNY_ROWS, wg: 256 };
    grid = [Math.ceil(n / 8), 1, batch];
  } else {
    const [bm, tm] = variant === "tiled_128" ? [128, 8] : [64, 4];
    const bn = 64, tn = 4, bk = 16;
    const tx = bn / tn, ty = bm / tm, wg = tx * ty;
    params = {
      ...base,
      variant: "tiled",
      vec: variant !== "tiled" && k % 4 === 0,
      bm,
      bn,
      bk,
      tm,
      tn,
      tx,
      ty,
      pa: (bm * bk) / 4 / wg,
      pb: (bn * bk) / 4 / wg,
      prefetch: variant !== "tiled",
      wg,
    };
    grid = [Math.ceil(n / (geglu ? bn / 2 : bn)), Math.ceil(m / bm), batch];
  }
  return { params, grid };
}

function record(
  y: Tensor,
  a: Tensor,
  b: Tensor,
  pr: Problem,
  variant: GemmVariant,
  label: () => string,
) {
  if (pr.m === 0 || pr.n === 0) return;
  const shape = { m: pr.m, n: pr.n, k: pr.k, batch: pr.batch, transB: pr.transB };
  let v = variant === "auto" ? chooseGemmVariant(shape) : variant;
  // the fused GEGLU and NCHW stores have no skinny form: a few rows go through the small tile
  if (variant === "auto" && v === "skinny" && (pr.geglu || pr.nchwL || pr.layerNorm)) {
    v = "tiled_vec";
  }
  if (!GEMM_VARIANTS.includes(v)) {
    throw new Error(`denoise: unknown gemm variant "${v}"; use one of auto, ${GEMM_VARIANTS}`);
  }
  const { params, grid } = gemmPlan(v, shape, a.dtype, {
    act: pr.act,
    bias: pr.bias !== undefined,
    residual: pr.residual !== undefined,
    nchw: pr.nchwL !== undefined,
    geglu: pr.geglu,
    ln: pr.layerNorm !== undefined,
  });
  const maxGrid = y.rt.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (grid.some((g) => g > maxGrid)) {
    throw new Error(
      `denoise: ${label()}: variant "${v}" needs a grid of [${grid}] workgroups, over the limit ` +
        `${maxGrid} per dimension; use a tiled variant or split the batch`,
    );
  }
  const buf = new ArrayBuffer(48);
  const u = new Uint32Array(buf);
  u.set([pr.m, pr.n, pr.k, pr.batch, pr.aStride, pr.bStride, pr.m * pr.n]);
  new Float32Array(buf)[7] = pr.alpha;
  u[8] = pr.nchwL ?? 1;
  new Float32Array(buf)[9] = pr.layerNorm?.eps ?? 0;
  const bindings = [a, b];
  if (pr.bias) bindings.push(pr.bias);
  if (pr.residual) bindings.push(pr.residual);
  if (pr.layerNorm) bindings.push(pr.layerNorm.weight, pr.layerNorm.bias);
  bindings.push(y);
  y.rt.dispatch({ key: { kernel: "gemm", params }, bindings, uniforms: u, grid, label });
}

function outTensor(op: string, inputs: Tensor[], shape: number[], dtype: DType, out?: Tensor) {
  if (!out) return inputs[0].rt.empty(shape, dtype);
  if (
    out.dtype !== dtype || out.shape.length !== shape.length ||
    out.shape.some((d, i) => d !== shape[i])
  ) {
    throw new Error(
      `denoise: ${op}: out is [${out.shape}] ${out.dtype}, needs [${shape}] ${dtype}`,
    );
  }
  if (inputs.some((t) => t.buffer === out.buffer)) {
    throw new Error(`denoise: ${op}: out shares storage with an input; pass a separate tensor`);
  }
  return out;
}

function checkDType(op: string, x: Tensor, others: [string, Tensor | undefined][]): void {
  for (const [name, t] of others) {
    if (t && t.dtype !== x.dtype) {
      throw new Error(
        `denoise: ${op}: ${name} is ${t.dtype} but the input is ${x.dtype}; cast one so they match`,
      );
    }
  }
}

/**
 * nn.Linear with a fused epilogue: y = act(x·Wᵀ + bias) + residual. x is [..., K] (leading dims
 * are flattened into rows), weight is [N, K] (PyTorch's [out, in]), bias [N], residual and y are
 * [..., N]. All share one dtype; f16 accumulates in f32.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { linear } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]); // [M=2, K=3]
 * const w = rt.upload(new Float32Array([1, 0, 0, 0, 1, 1]), [2, 3]); // [N=2, K=3]
 * const b = rt.upload(new Float32Array([10, 20]), [2]);
 * console.log(await linear(x, w, { bias: b, activation: "silu" }).read());
 * ```
 */
export function linear(x: Tensor, weight: Tensor, options: LinearOptions = {}): Tensor {
  const { bias, residual } = options;
  const act = options.activation ?? "none";
  if (!ACTIVATIONS.includes(act)) {
    throw new Error(`denoise: linear: unknown activation "${act}"; use one of ${ACTIVATIONS}`);
  }
  const k = x.shape.at(-1) ?? 1;
  if (weight.shape.length !== 2 || weight.shape[1] !== k) {
    throw new Error(
      `denoise: linear: weight is [${weight.shape}] but x is [${x.shape}]; the weight must be ` +
        `[out_features, ${k}] (PyTorch's [out, in] layout)`,
    );
  }
  const rows = weight.shape[0];
  const geglu = options.geglu ?? false;
  if (geglu && (rows % 2 !== 0 || act !== "none" || residual || options.nchw)) {
    throw new Error(
      `denoise: linear: geglu needs an even number of weight rows ([h; gate], got ${rows}) and ` +
        `no activation, residual or nchw`,
    );
  }
  const n = geglu ? rows / 2 : rows;
  const m = x.shape.slice(0, -1).reduce((p, d) => p * d, 1);
  const nchw = options.nchw;
  let yShape = [...x.shape.slice(0, -1), n];
  if (nchw) {
    const { height, width } = nchw;
    if (x.shape.length !== 3 || x.shape[1] !== height * width) {
      throw new Error(
        `denoise: linear: nchw needs x as tokens [B, ${height}·${width}, K], got [${x.shape}]`,
      );
    }
    yShape = [x.shape[0], n, height, width];
  }
  const ln = options.layerNorm;
  checkDType("linear", x, [
    ["weight", weight],
    ["bias", bias],
    ["residual", residual],
    ["layerNorm weight", ln?.weight],
    ["layerNorm bias", ln?.bias],
  ]);
  for (const t of [ln?.weight, ln?.bias]) {
    if (t && (t.shape.length !== 1 || t.shape[0] !== k)) {
      throw new Error(
        `denoise: linear: the layerNorm weight and bias must be [${k}], got [${t.shape}]`,
      );
    }
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== rows)) {
    throw new Error(`denoise: linear: bias is [${bias.shape}], needs [${rows}] (out_features)`);
  }
  if (
    residual &&
    (residual.shape.length !== yShape.length || residual.shape.some((d, i) => d !== yShape[i]))
  ) {
    throw new Error(
      `denoise: linear: residual is [${residual.shape}], needs the output's shape [${yShape}]`,
    );
  }
  const inputs = [x, weight, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  const y = outTensor("linear", inputs, yShape, x.dtype, options.out);
  const problem: Problem = {
    batch: 1,
    m,
    n,
    k,
    aStride: 0,
    bStride: 0,
    transB: true,
    alpha: 1,
    act,
    bias,
    residual,
    nchwL: nchw ? nchw.height * nchw.width : undefined,
    geglu,
    layerNorm: ln,
  };
  const label = () =>
    `${ln ? "layerNorm→" : ""}linear${geglu ? "+geglu" : ""}${nchw ? "→nchw" : ""} [${yShape}]`;
  record(y, x, weight, problem, options.variant ?? "auto", label);
  return y;
}

/**
 * Batched matrix product y = alpha · a·b: a [Bt, M, K] with b [Bt, K, N] (or [Bt, N, K] with
 * `transB`), y [Bt, M, N]. 2-D operands are one batch; a b with batch 1 is shared by every batch of
 * a. Both share one dtype; f16 accumulates in f32.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { matmul } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const q = rt.upload(new Float32Array(2 * 4 * 8).fill(1), [2, 4, 8]); // [Bt, M, K]
 * const k = rt.upload(new Float32Array(2 * 5 * 8).fill(1), [2, 5, 8]); // [Bt, N, K]
 * const scores = matmul(q, k, { transB: true, alpha: 8 ** -0.5 }); // [2, 4, 5]
 * console.log(await scores.read());
 * ```
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transB = options.transB ?? false;
  const rank = (t: Tensor) => t.shape.length === 2 || t.shape.length === 3;
  if (!rank(a) || !rank(b)) {
    throw new Error(
      `denoise: matmul takes [Bt, M, K] or [M, K] operands, got [${a.shape}] and [${b.shape}]; ` +
        `reshape other leading dims into Bt`,
    );
  }
  checkDType("matmul", a, [["b", b]]);
  const [batch, m, k] = a.shape.length === 3 ? a.shape : [1, ...a.shape];
  const [bBatch, b1, b2] = b.shape.length === 3 ? b.shape : [1, ...b.shape];
  const [bk, n] = transB ? [b2, b1] : [b1, b2];
  if (bk !== k || (bBatch !== batch && bBatch !== 1)) {
    const want = transB ? `[${batch} or 1, N, ${k}]` : `[${batch} or 1, ${k}, N]`;
    throw new Error(
      `denoise: matmul: a is [${a.shape}] and b is [${b.shape}]${transB ? " (transB)" : ""}; ` +
        `b must be ${want}`,
    );
  }
  const yShape = a.shape.length === 3 ? [batch, m, n] : [m, n];
  const y = outTensor("matmul", [a, b], yShape, a.dtype, options.out);
  const problem: Problem = {
    batch,
    m,
    n,
    k,
    aStride: m * k,
    bStride: bBatch === 1 ? 0 : n * k,
    transB,
    alpha: options.alpha ?? 1,
    act: "none",
  };
  record(y, a, b, problem, options.variant ?? "auto", () => `matmul [${yShape}]`);
  return y;
}
