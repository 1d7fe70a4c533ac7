/**
 * Fused multi-head attention (flash-attention style online softmax, f32 scores and accumulation)
 * on the token layouts the linear projections produce: no permutes, no Lq×Lk score matrix in
 * memory. Host side of `kernels/attention.wgsl.jinja`.
 *
 * Layouts: q [B, Lq, Cq], k [B, Lk, Ck], v [B, Lk, Cv]; head h of q reads the columns
 * `qOffset + h·d … qOffset + h·d + d − 1` of each row (row stride Cq), likewise k and v with their
 * offsets. With the offsets at 0 and C = heads·d these are the plain `to_q`/`to_k`/`to_v` outputs; a
 * fused projection output is read in place by passing the same tensor with offsets (or with
 * {@link attentionQkv} for [B, L, 3·heads·d]). The output is [B, Lq, heads·d].
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d, type Runtime } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Kernel versions, slowest first: the op uses "tiled" unless told otherwise. */
export type AttentionVariant = "naive" | "tiled";

/** Template parameters of the attention kernels (the pipeline cache key's `params`). */
export interface AttentionParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** "attn": the attention itself; "probs": the head-averaged softmax probabilities. */
  mode: "attn" | "probs";
  /** Kernel version (ignored by mode "probs"). */
  variant: AttentionVariant;
  /** Storage dtype of q, k, v and out. */
  dtype: DType;
  /** Head dimension. */
  d: number;
  /** Mask keys j > query i. */
  causal: boolean;
  /** Invocations per workgroup. */
  wg: number;
  /** naive: output columns per invocation; tiled: padded columns of the V tile (c·tcv). */
  dv: number;
  /** naive: slices per head (⌈d / dv⌉). */
  ns: number;
  /** naive, probs: dot-product unroll (divides d). */
  du: number;
  /** naive: accumulator-update unroll (divides dv). */
  cu: number;
  /** tiled: queries per workgroup. */
  bq: number;
  /** tiled: keys per tile. */
  bk: number;
  /** tiled: head-dim chunk staged for Q·Kᵀ. */
  dk: number;
  /** tiled: number of head-dim chunks (1 keeps Q resident in workgroup memory). */
  ndc: number;
  /** tiled: keys per V sub-tile. */
  bkv: number;
  /** tiled: output rows per invocation (a multiple of 4). */
  r: number;
  /** tiled: output columns per invocation. */
  c: number;
  /** tiled: invocations across the output columns. */
  tcv: number;
}

/** Options of {@link attention}. */
export interface AttentionOptions {
  /** Keys `[B, Lk, Ck]` (token layout; head h at columns kOffset + h·d). */
  k: Tensor;
  /** Values `[B, Lk, Cv]` (token layout; head h at columns vOffset + h·d). */
  v: Tensor;
  /** Number of heads. */
  heads: number;
  /** Head dimension d (default: q's channels / heads; required when offsets make that wrong). */
  headDim?: number;
  /** Mask keys after the query (key j > query i), as in the CLIP text encoder. */
  causal?: boolean;
  /** Score scale (default 1/√d). */
  scale?: number;
  /** Column of q's rows where head 0 starts (default 0). */
  qOffset?: number;
  /** Column of k's rows where head 0 starts (default 0). */
  kOffset?: number;
  /** Column of v's rows where head 0 starts (default 0). */
  vOffset?: number;
  /** Write the result here ([B, Lq, heads·d], q's dtype) instead of a new tensor. */
  out?: Tensor;
  /**
   * Opt-in: also write the softmax probabilities averaged over heads into this f32 tensor
   * [B, Lq, Lk] (one extra dispatch that recomputes the scores; meant for small Lk such as 77).
   */
  probs?: Tensor;
  /** Kernel version (default "tiled"; "naive" where the tiled kernel does not fit the device). */
  variant?: AttentionVariant;
}

/**
 * The largest head dimension the tiled kernel takes (its per-invocation accumulators grow with d);
 * larger heads use the naive kernel.
 *
 * @example
 * ```ts
 * import { MAX_TILED_HEAD_DIM } from "@denoise/sd/ops";
 * const variant = 512 <= MAX_TILED_HEAD_DIM ? "tiled" : "naive";
 * ```
 */
export const MAX_TILED_HEAD_DIM = 1024;

/**
 * Workgroup memory the tiled kernel needs for head dimension `d`, in bytes (≤ 32 KiB for d ≤ 1024).
 *
 * @example
 * ```ts
 * import { tiledWorkgroupBytes } from "@denoise/sd/ops";
 * tiledWorkgroupBytes(40); // 30976
 * ```
 */
export function tiledWorkgroupBytes(d: number): number {
  const t = tiledConfig(d);
  return 4 * (t.dk * t.bq + t.dk * t.bk + t.bk * t.bq + t.bk * t.bq / 4 + t.bq + t.bkv * t.dv);
}

interface TiledConfig {
  bq: number;
  bk: number;
  wg: number;
  dk: number;
  ndc: number;
  bkv: number;
  r: number;
  c: number;
  tcv: number;
  dv: number;
}

/**
 * Tile sizes of the tiled kernel: d ≤ 160 (SD's 40/80/160, 64, the test models' small dims) uses
 * 64 queries × 32 keys per tile over 128 invocations; larger d (the VAE's 512) uses 16 × 128 so the
 * O accumulators (16 × d over 128 invocations) stay in registers. Both stay under 32 KiB of
 * workgroup memory.
 */
function tiledConfig(d: number): TiledConfig {
  const wide = d > 160;
  const bq = wide ? 16 : 64, bk = wide ? 128 : 32, wg = 128;
  const r = wide || d <= 40 ? 4 : 8;
  const ndc = Math.ceil(d / (wide ? 16 : 40));
  const dk = Math.ceil(d / ndc);
  const tcv = wg / (bq / r);
  const c = Math.ceil(d / tcv);
  const dv = c * tcv;
  const fixed = 4 * (dk * bq + dk * bk + bk * bq + bk * bq / 4 + bq);
  let bkv = bk;
  while (bkv > 1 && (bkv * dv * 4 > 8192 || fixed + bkv * dv * 4 > 32768)) bkv /= 2;
  return { bq, bk, wg, dk, ndc, bkv, r, c, tcv, dv };
}

const NAIVE_WG = 64;
const PROBS_WG = 128;
const UNUSED_TILE = { bq: 0, bk: 0, dk: 0, ndc: 0, bkv: 0, r: 0, c: 0, tcv: 0 };

/** The largest divisor of n that is ≤ max. */
function divisorUpTo(n: number, max: number): number {
  for (let u = Math.min(n, max); u > 1; u--) if (n % u === 0) return u;
  return 1;
}

function kernelParams(
  kind: AttentionVariant | "probs",
  dtype: DType,
  d: number,
  causal: boolean,
): AttentionParams {
  const du = divisorUpTo(d, 16);
  if (kind === "tiled") {
    return {
      mode: "attn",
      variant: kind,
      dtype,
      d,
      causal,
      ns: 1,
      du: 0,
      cu: 0,
      ...tiledConfig(d),
    };
  }
  const dv = kind === "probs" ? 0 : d <= 128 ? d : 64;
  return {
    mode: kind === "probs" ? "probs" : "attn",
    variant: "naive",
    dtype,
    d,
    causal,
    wg: kind === "probs" ? PROBS_WG : NAIVE_WG,
    dv,
    ns: dv ? Math.ceil(d / dv) : 0,
    du,
    cu: dv ? divisorUpTo(dv, 16) : 0,
    ...UNUSED_TILE,
  };
}

/**
 * Software adapters (Mesa's llvmpipe) silently end a shader loop after this many iterations per
 * invocation, counted over every entry of a nested loop; {@link attention} refuses longer runs there.
 */
export const SOFTWARE_LOOP_LIMIT = 65535;

/**
 * The most iterations any one loop of an attention kernel runs per invocation (mirrors the loops of
 * `kernels/attention.wgsl.jinja`), to compare with {@link SOFTWARE_LOOP_LIMIT}.
 *
 * @example
 * ```ts
 * import { attentionLoopIterations } from "@denoise/sd/ops";
 * attentionLoopIterations("tiled", { d: 40, lk: 4096, heads: 8 }); // 5120
 * ```
 */
export function attentionLoopIterations(
  kind: AttentionVariant | "probs",
  shape: { d: number; lk: number; heads: number },
): number {
  const { d, lk, heads } = shape;
  const p = kernelParams(kind, "f32", d, false);
  if (kind === "probs") {
    return heads * Math.max(2 * Math.ceil(lk / p.wg) * (d / p.du), Math.ceil(d / p.wg));
  }
  if (kind === "naive") return lk * Math.max(1, d / p.du, p.dv / p.cu);
  const tiles = Math.ceil(lk / p.bk);
  const chunks = tiles * p.ndc;
  const qLoads = (p.ndc === 1 ? 1 : chunks) * Math.ceil(p.dk * p.bq / 4 / p.wg);
  const kLoads = chunks * Math.ceil(p.dk * p.bk / 4 / p.wg);
  const vLoads = tiles * (p.bk / p.bkv) * Math.ceil(p.bkv * p.dv / p.wg);
  return Math.max(chunks * p.dk, qLoads, kLoads, vLoads, tiles * p.bk);
}

function intOption(name: string, v: number | undefined, fallback: number, min = 0): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min) {
    throw new Error(`denoise: attention ${name} must be an integer ≥ ${min}, got ${x}`);
  }
  return x;
}

function checkRank3(name: string, t: Tensor): void {
  if (t.shape.length !== 3) {
    throw new Error(
      `denoise: attention ${name} must be [B, L, C] (token layout), got [${t.shape}]; ` +
        `reshape [B, C, H, W] activations to tokens first`,
    );
  }
}

/**
 * Multi-head scaled dot-product attention, fused: out = softmax(scale·QKᵀ)·V per head, with an
 * optional causal mask. Inputs are [B, L, C] token tensors (see the module doc for the layouts and
 * offsets); f32 or f16 storage, f32 softmax and accumulation. Records the dispatch (no flush).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { attention } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const q = rt.upload(new Float32Array(2 * 7 * 16).fill(0.1), [2, 7, 16]);  // [B, Lq, heads·d]
 * const kv = rt.upload(new Float32Array(2 * 5 * 16).fill(0.2), [2, 5, 16]); // [B, Lk, heads·d]
 * const out = attention(q, { k: kv, v: kv, heads: 2 }); // [2, 7, 16]
 * console.log(await out.read());
 * ```
 */
export function attention(q: Tensor, options: AttentionOptions): Tensor {
  const { k, v } = options;
  checkRank3("q", q);
  checkRank3("k", k);
  checkRank3("v", v);
  const [batch, lq, cq] = q.shape;
  const [kb, lk, ck] = k.shape;
  const [vb, lv, cv] = v.shape;
  if (kb !== batch || vb !== batch) {
    throw new Error(
      `denoise: attention batch sizes differ: q [${q.shape}], k [${k.shape}], v [${v.shape}]`,
    );
  }
  if (lv !== lk) {
    throw new Error(
      `denoise: attention k [${k.shape}] and v [${v.shape}] must have the same length`,
    );
  }
  if (lq < 1 || lk < 1) {
    throw new Error(`denoise: attention needs Lq ≥ 1 and Lk ≥ 1, got ${lq}, ${lk}`);
  }
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) {
    throw new Error(
      `denoise: attention q, k, v dtypes differ (${q.dtype}, ${k.dtype}, ${v.dtype}); cast them to one dtype`,
    );
  }
  const heads = intOption("heads", options.heads, 0, 1);
  const qOffset = intOption("qOffset", options.qOffset, 0);
  const kOffset = intOption("kOffset", options.kOffset, 0);
  const vOffset = intOption("vOffset", options.vOffset, 0);
  const autoD = cq / heads;
  if (options.headDim === undefined && !Number.isInteger(autoD)) {
    throw new Error(
      `denoise: attention q has ${cq} channels, not a multiple of heads = ${heads}; pass headDim`,
    );
  }
  const d = intOption("headDim", options.headDim, autoD, 1);
  const hd = heads * d;
  for (
    const [name, off, c] of [["q", qOffset, cq], ["k", kOffset, ck], ["v", vOffset, cv]] as const
  ) {
    if (off + hd > c) {
      throw new Error(
        `denoise: attention ${name} has ${c} channels per token, but ${name}Offset ${off} + ` +
          `heads ${heads} × headDim ${d} = ${off + hd}; check heads/headDim/offsets`,
      );
    }
  }
  const outShape = [batch, lq, hd];
  const out = options.out ?? q.rt.empty(outShape, q.dtype);
  if (out.size !== batch * lq * hd || out.dtype !== q.dtype) {
    throw new Error(
      `denoise: attention out is [${out.shape}] ${out.dtype}, needs [${outShape}] ${q.dtype}`,
    );
  }
  for (const x of [q, k, v]) {
    if (x.buffer === out.buffer) {
      throw new Error("denoise: attention out must not share storage with q, k or v");
    }
  }
  const scale = options.scale ?? 1 / Math.sqrt(d);
  const causal = options.causal ?? false;
  const uniforms = packParams({
    batch,
    heads,
    lq,
    lk,
    strides: [cq, ck, cv, hd],
    offsets: [qOffset, kOffset, vOffset],
    scale,
  });
  const rt = q.rt;
  const maxShared = rt.gpu.limits.maxComputeWorkgroupStorageSize;
  const fitsTiled = d <= MAX_TILED_HEAD_DIM && tiledWorkgroupBytes(d) <= maxShared;
  const variant = options.variant ?? (fitsTiled ? "tiled" : "naive");
  if (variant === "tiled" && !fitsTiled) {
    throw new Error(
      `denoise: the tiled attention kernel does not fit head dim ${d} (max ${MAX_TILED_HEAD_DIM}, ` +
        `${
          tiledWorkgroupBytes(d)
        } bytes of workgroup memory, device has ${maxShared}); use variant "naive"`,
    );
  }
  const label = `attention [${q.shape}]x[${k.shape}] h=${heads}${causal ? " causal" : ""}`;
  const params = kernelParams(variant, q.dtype, d, causal);
  checkLoops(rt, variant, { d, lk, heads }, label);
  if (options.probs) checkProbs(q, k, options.probs, { d, heads, lq, lk, label });
  rt.dispatch({
    key: { kernel: "attention", params },
    bindings: [q, k, v, out],
    uniforms,
    grid: variant === "naive"
      ? [Math.ceil(lq / NAIVE_WG), heads * params.ns, batch]
      : [Math.ceil(lq / params.bq), heads, batch],
    label,
  });
  if (options.probs) {
    writeProbs(q, k, options.probs, { dtype: q.dtype, d, causal, lq, uniforms, label });
  }
  return out;
}

function checkLoops(
  rt: Runtime,
  kind: AttentionVariant | "probs",
  shape: { d: number; lk: number; heads: number },
  label: string,
): void {
  const n = attentionLoopIterations(kind, shape);
  if (!rt.gpu.isFallback || n <= SOFTWARE_LOOP_LIMIT) return;
  const hint = kind === "naive"
    ? 'use variant "tiled"'
    : kind === "probs"
    ? "the probs hook is meant for short key sequences such as 77 text tokens"
    : "use shorter sequences or a hardware GPU";
  throw new Error(
    `denoise: ${label}${kind === "probs" ? " probs" : ""} would run a shader loop ${n} times, ` +
      `but the software adapter ${rt.gpu.adapterName} silently stops loops after ` +
      `${SOFTWARE_LOOP_LIMIT} iterations; ${hint}`,
  );
}

function checkProbs(
  q: Tensor,
  k: Tensor,
  probs: Tensor,
  o: { d: number; heads: number; lq: number; lk: number; label: string },
): void {
  const batch = q.shape[0];
  if (probs.dtype !== "f32" || probs.size !== batch * o.lq * o.lk) {
    throw new Error(
      `denoise: attention probs is [${probs.shape}] ${probs.dtype}, needs [${batch}, ${o.lq}, ${o.lk}] f32`,
    );
  }
  if (probs.buffer === q.buffer || probs.buffer === k.buffer) {
    throw new Error("denoise: attention probs must not share storage with q or k");
  }
  checkLoops(q.rt, "probs", o, o.label);
}

function writeProbs(
  q: Tensor,
  k: Tensor,
  probs: Tensor,
  o: {
    dtype: DType;
    d: number;
    causal: boolean;
    lq: number;
    uniforms: Uint32Array;
    label: string;
  },
): void {
  q.rt.dispatch({
    key: { kernel: "attention", params: kernelParams("probs", o.dtype, o.d, o.causal) },
    bindings: [q, k, probs],
    uniforms: o.uniforms,
    grid: grid1d(q.shape[0] * o.lq),
    label: `${o.label} probs`,
  });
}

function packParams(p: {
  batch: number;
  heads: number;
  lq: number;
  lk: number;
  strides: number[];
  offsets: number[];
  scale: number;
}): Uint32Array {
  const buf = new ArrayBuffer(48);
  const u = new Uint32Array(buf);
  u.set([p.batch, p.heads, p.lq, p.lk, ...p.strides, ...p.offsets]);
  new Float32Array(buf)[11] = p.scale * Math.LOG2E;
  return u;
}

/** Options of {@link attentionQkv}: those of {@link attention} without the offsets and head dim. */
export type AttentionQkvOptions = Omit<
  AttentionOptions,
  "qOffset" | "kOffset" | "vOffset" | "headDim" | "k" | "v"
>;

/**
 * Self-attention reading q, k and v in place from one fused projection output
 * qkv [B, L, 3·heads·d] whose columns are [q | k | v] (the concatenated `to_q`, `to_k`, `to_v`
 * weights). Returns [B, L, heads·d].
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { attentionQkv } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const qkv = rt.upload(new Float32Array(1 * 77 * 3 * 64).fill(0.1), [1, 77, 3 * 64]);
 * const out = attentionQkv(qkv, { heads: 1, causal: true }); // [1, 77, 64]
 * ```
 */
export function attentionQkv(qkv: Tensor, options: AttentionQkvOptions): Tensor {
  checkRank3("qkv", qkv);
  const c = qkv.shape[2];
  const d = c / (3 * options.heads);
  if (!Number.isInteger(d) || d < 1) {
    throw new Error(
      `denoise: attentionQkv needs [B, L, 3·heads·d], got [${qkv.shape}] with heads = ${options.heads}`,
    );
  }
  const hd = options.heads * d;
  return attention(qkv, {
    ...options,
    k: qkv,
    v: qkv,
    headDim: d,
    qOffset: 0,
    kOffset: hd,
    vOffset: 2 * hd,
  });
}
