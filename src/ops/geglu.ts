/**
 * GEGLU, the gated activation of the U-Net transformer feed-forward (diffusers `GEGLU`): the
 * projection's output is split in half along the last axis, `hidden, gate = x.chunk(2, -1)`, and
 * `hidden · gelu(gate)` is returned, with the exact (erf) GELU. Host side of
 * `kernels/geglu.wgsl.jinja`.
 *
 * Kernel ladder (the `variant` option): `scalar` (one output per invocation) and `vec4` (four per
 * invocation with vec4 loads, needs F % 4 == 0; chosen by default when possible).
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { grid1d } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** GEGLU kernel versions; `auto` takes `vec4` when F % 4 == 0. */
export type GegluVariant = "auto" | "scalar" | "vec4";

/** Template parameters of the geglu kernel (the pipeline cache key's `params`). */
export interface GegluParams {
  /** Every template parameter is a string, number or boolean. */
  [k: string]: string | number | boolean;
  /** Storage dtype of x and y (the math is f32). */
  dtype: DType;
  /** Four outputs per invocation. */
  vec: boolean;
  /** Invocations per workgroup. */
  wg: number;
}

const WG = 256;

/**
 * `[..., 2F]` → `[..., F]`: the first half of the last axis times the exact GELU of the second
 * half.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { geglu } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * const hg = rt.upload(new Float32Array(2 * 77 * 2560), [2, 77, 2560]); // proj output
 * const g = geglu(hg); // [2, 77, 1280]
 * ```
 */
export function geglu(
  x: Tensor,
  options: { variant?: GegluVariant; out?: Tensor } = {},
): Tensor {
  const last = x.shape[x.shape.length - 1];
  if (x.shape.length < 1 || last % 2 !== 0 || x.size === 0) {
    throw new Error(
      `denoise: geglu takes x as [..., 2F] (hidden and gate halves), got [${x.shape}]; ` +
        `the last axis must be even`,
    );
  }
  const f = last / 2;
  const shape = [...x.shape.slice(0, -1), f];
  const n = x.size / 2;
  const out = options.out ?? x.rt.empty(shape, x.dtype);
  if (out === x || out.size !== n || out.dtype !== x.dtype) {
    throw new Error(
      `denoise: geglu: out must be a separate ${x.dtype} tensor of shape [${shape}], ` +
        `got [${out.shape}] ${out.dtype}`,
    );
  }
  const variant = options.variant ?? "auto";
  if (variant === "vec4" && f % 4 !== 0) {
    throw new Error(`denoise: geglu variant vec4 needs F % 4 == 0, got F = ${f}; use "auto"`);
  }
  const vec = variant === "vec4" || (variant === "auto" && f % 4 === 0);
  const per = vec ? 4 : 1;
  const p: GegluParams = { dtype: x.dtype, vec, wg: WG };
  x.rt.dispatch({
    key: { kernel: "geglu", params: p },
    bindings: [x, out],
    uniforms: new Uint32Array([n / per, f / per, 0, 0]),
    grid: grid1d(Math.ceil(n / per / WG)),
    label: () => `geglu [${x.shape}]`,
  });
  return out;
}
