/**
 * Float64 reference of the conv2d op family (plain loops), for tests and the benchmark's checks.
 *
 * @module
 */
import { ACTIVATIONS } from "./elementwise.ts";

/** A host array with its shape (row-major). */
export interface HostTensor {
  /** The values, row-major. */
  data: ArrayLike<number>;
  /** The shape, outermost axis first. */
  shape: readonly number[];
}

/** Options of {@link conv2dRef}; the same meaning as the GPU op's options. */
export interface Conv2dRefOptions {
  /** Per-output-channel bias. */
  bias?: ArrayLike<number>;
  /** Stride (default 1). */
  stride?: number;
  /** Zero padding (default `floor(kh / 2)`). */
  padding?: number;
  /** Second input concatenated after x along channels. */
  skip?: HostTensor;
  /**
   * Nearest upsample of the input before the conv: 2×, or to `[H', W']` (torch's
   * `F.interpolate(size=…, mode="nearest")`: source index `floor(i·in/out)`).
   */
  upsample?: boolean | readonly [number, number];
  /** Feed `c·tanh(input / c)`. */
  softClamp?: number;
  /** Activation applied last (a name in {@link ACTIVATIONS}). */
  activation?: string;
  /** Added after the bias (the output's shape). */
  residual?: ArrayLike<number>;
  /** A per-sample channel shift: `values[b, column + co] + bias[co]` (`values` is `[B, S]`). */
  temb?: { values: HostTensor; column?: number; bias?: ArrayLike<number> };
  /** Compute only these flat output indices (`data` then holds their values in this order). */
  indices?: readonly number[];
}

/**
 * y = act(conv2d(cat([x, skip], 1), weight) + bias + temb + residual) in float64: x `[B, Cx, H, W]`,
 * weight `[Cout, Cin, kh, kw]`, result `[B, Cout, Ho, Wo]` (or the values at `indices` only, for
 * spot checks of large shapes).
 *
 * @example
 * ```ts
 * import { conv2dRef } from "./conv2d.ts";
 * const y = conv2dRef(
 *   { data: [1, 2, 3, 4], shape: [1, 1, 2, 2] },
 *   { data: [1], shape: [1, 1, 1, 1] },
 *   { bias: [0.5] },
 * );
 * console.log(y.data); // Float64Array [1.5, 2.5, 3.5, 4.5]
 * ```
 */
export function conv2dRef(
  x: HostTensor,
  weight: HostTensor,
  options: Conv2dRefOptions = {},
): { data: Float64Array; shape: number[] } {
  const [b, cx, hs, ws] = x.shape;
  const [cout, cin, kh, kw] = weight.shape;
  const cs = options.skip ? options.skip.shape[1] : 0;
  if (cx + cs !== cin) {
    throw new Error(`conv2dRef: ${cx} + ${cs} input channels, weight has ${cin}`);
  }
  const stride = options.stride ?? 1;
  const pad = options.padding ?? Math.floor(kh / 2);
  const [h, w] = options.upsample === true
    ? [2 * hs, 2 * ws]
    : options.upsample
    ? options.upsample
    : [hs, ws];
  const ho = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const wo = Math.floor((w + 2 * pad - kw) / stride) + 1;
  const c = options.softClamp;
  const input = (n: number, ci: number, ih: number, iw: number): number => {
    const sh = Math.min(Math.floor((ih * hs) / h), hs - 1);
    const sw = Math.min(Math.floor((iw * ws) / w), ws - 1);
    const v = ci < cx
      ? x.data[((n * cx + ci) * hs + sh) * ws + sw]
      : options.skip!.data[((n * cs + ci - cx) * hs + sh) * ws + sw];
    return c === undefined ? v : c * Math.tanh(v / c);
  };
  const name = !options.activation || options.activation === "none"
    ? "identity"
    : options.activation;
  const act = ACTIVATIONS[name];
  if (!act) throw new Error(`conv2dRef: unknown activation "${options.activation}"`);
  const value = (i: number): number => {
    const ow = i % wo, oh = Math.floor(i / wo) % ho;
    const co = Math.floor(i / (wo * ho)) % cout, n = Math.floor(i / (wo * ho * cout));
    let acc = 0;
    for (let ci = 0; ci < cin; ci++) {
      for (let r = 0; r < kh; r++) {
        const ih = oh * stride - pad + r;
        if (ih < 0 || ih >= h) continue;
        for (let s = 0; s < kw; s++) {
          const iw = ow * stride - pad + s;
          if (iw < 0 || iw >= w) continue;
          acc += weight.data[((co * cin + ci) * kh + r) * kw + s] * input(n, ci, ih, iw);
        }
      }
    }
    const t = options.temb;
    const shift = t
      ? t.values.data[n * t.values.shape[1] + (t.column ?? 0) + co] + (t.bias ? t.bias[co] : 0)
      : 0;
    const v = acc + (options.bias ? options.bias[co] : 0) + shift +
      (options.residual ? options.residual[i] : 0);
    return act(v);
  };
  const indices = options.indices;
  const out = new Float64Array(indices ? indices.length : b * cout * ho * wo);
  for (let j = 0; j < out.length; j++) out[j] = value(indices ? indices[j] : j);
  return { data: out, shape: [b, cout, ho, wo] };
}
