/**
 * Float64 references of `linear` and `matmul` (plain loops), for tests and the benchmark's checks.
 *
 * @module
 */
import { ACTIVATIONS } from "./elementwise.ts";

/** Options of {@link linearRef}. */
export interface LinearRefOptions {
  /** Bias [N]. */
  bias?: ArrayLike<number>;
  /** Activation name (`none`, `gelu`, `gelu_tanh`, `quick_gelu`, `silu`). */
  activation?: string;
  /** Residual [M, N], added after the activation. */
  residual?: ArrayLike<number>;
  /** Compute only these rows (the result is [rows.length, N]); default: all M rows. */
  rows?: readonly number[];
}

/**
 * y = act(x·Wᵀ + bias) + residual in float64; x [M, K], w [N, K] (PyTorch's [out, in]).
 *
 * @example
 * ```ts
 * import { linearRef } from "./gemm.ts";
 * linearRef([1, 2, 3, 4], [1, 1, 0, 1], { m: 2, n: 2, k: 2 }); // [3, 2, 7, 4]
 * ```
 */
export function linearRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  shape: { m: number; n: number; k: number } & LinearRefOptions,
): Float64Array {
  const { m, n, k, bias, residual } = shape;
  const act =
    ACTIVATIONS[shape.activation === "none" ? "identity" : shape.activation ?? "identity"];
  if (!act) throw new Error(`linearRef: unknown activation "${shape.activation}"`);
  const rows = shape.rows ?? Array.from({ length: m }, (_, i) => i);
  const y = new Float64Array(rows.length * n);
  rows.forEach((row, r) => {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < k; i++) s += x[row * k + i] * w[j * k + i];
      if (bias) s += bias[j];
      s = act(s);
      if (residual) s += residual[row * n + j];
      y[r * n + j] = s;
    }
  });
  return y;
}

/**
 * y[z] = alpha · a[z]·b[z] in float64; a [Bt, M, K], b [Bt, K, N] (or [Bt, N, K] with `transB`);
 * `bBatch: 1` shares b across batches.
 *
 * @example
 * ```ts
 * import { matmulRef } from "./gemm.ts";
 * matmulRef([1, 2, 3, 4], [1, 0, 0, 1], { batch: 1, m: 2, n: 2, k: 2 }); // [1, 2, 3, 4]
 * ```
 */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  shape: { batch: number; m: number; n: number; k: number },
  options: { transB?: boolean; alpha?: number; bBatch?: number } = {},
): Float64Array {
  const { batch, m, n, k } = shape;
  const alpha = options.alpha ?? 1;
  const shared = (options.bBatch ?? batch) === 1;
  const y = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const ao = z * m * k, bo = shared ? 0 : z * n * k;
    for (let r = 0; r < m; r++) {
      for (let c = 0; c < n; c++) {
        let s = 0;
        for (let i = 0; i < k; i++) {
          s += a[ao + r * k + i] * (options.transB ? b[bo + c * k + i] : b[bo + i * n + c]);
        }
        y[(z * m + r) * n + c] = alpha * s;
      }
    }
  }
  return y;
}
