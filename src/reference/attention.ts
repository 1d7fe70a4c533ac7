/**
 * Float64 reference of multi-head attention on token layouts (plain loops), for tests and the
 * benchmark's checks.
 *
 * @module
 */

/** Shapes and layout of {@link attentionRef}'s inputs. */
export interface AttentionRefOptions {
  /** Batch size B. */
  batch: number;
  /** Number of heads. */
  heads: number;
  /** Query length. */
  lq: number;
  /** Key/value length. */
  lk: number;
  /** Head dimension d. */
  headDim: number;
  /** Mask keys j > query i. */
  causal?: boolean;
  /** Score scale (default 1/√d). */
  scale?: number;
  /** Row strides of q, k, v (default heads·d each). */
  strides?: [number, number, number];
  /** Column offsets of head 0 in q, k, v rows (default 0). */
  offsets?: [number, number, number];
}

/** Result of {@link attentionRef}. */
export interface AttentionRefResult {
  /** [B, Lq, heads·d]. */
  out: Float64Array;
  /** Softmax probabilities averaged over heads, [B, Lq, Lk]. */
  probs: Float64Array;
}

/**
 * Multi-head attention in float64: out[b, i, h·d + c] = Σ_j softmax_j(scale·q_i·k_j)·v[b, j, h·d + c]
 * per head, where q_i = q[b, i, qOffset + h·d …] (row stride strides[0]); also returns the
 * probabilities averaged over heads.
 *
 * @example
 * ```ts
 * import { attentionRef } from "./attention.ts";
 * const q = [1, 0], k = [1, 0, 0, 1], v = [1, 2, 3, 4]; // B=1, Lq=1, Lk=2, one head, d=2
 * const { out } = attentionRef({ q, k, v }, { batch: 1, heads: 1, lq: 1, lk: 2, headDim: 2 });
 * ```
 */
export function attentionRef(
  inputs: { q: ArrayLike<number>; k: ArrayLike<number>; v: ArrayLike<number> },
  options: AttentionRefOptions,
): AttentionRefResult {
  const { batch, heads, lq, lk, headDim: d } = options;
  const { q, k, v } = inputs;
  const hd = heads * d;
  const [qs, ks, vs] = options.strides ?? [hd, hd, hd];
  const [qo, ko, vo] = options.offsets ?? [0, 0, 0];
  const scale = options.scale ?? 1 / Math.sqrt(d);
  const out = new Float64Array(batch * lq * hd);
  const probs = new Float64Array(batch * lq * lk);
  const s = new Float64Array(lk);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < lq; i++) {
        const qRow = (b * lq + i) * qs + qo + h * d;
        const end = options.causal ? Math.min(lk, i + 1) : lk;
        let max = -Infinity;
        for (let j = 0; j < end; j++) {
          const kRow = (b * lk + j) * ks + ko + h * d;
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[qRow + c] * k[kRow + c];
          s[j] = dot * scale;
          if (s[j] > max) max = s[j];
        }
        let sum = 0;
        for (let j = 0; j < end; j++) sum += s[j] = Math.exp(s[j] - max);
        const oRow = (b * lq + i) * hd + h * d;
        for (let j = 0; j < end; j++) {
          const p = s[j] / sum;
          probs[(b * lq + i) * lk + j] += p / heads;
          const vRow = (b * lk + j) * vs + vo + h * d;
          for (let c = 0; c < d; c++) out[oRow + c] += p * v[vRow + c];
        }
      }
    }
  }
  return { out, probs };
}
