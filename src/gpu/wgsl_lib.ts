/**
 * WGSL functions shared by the kernel templates, injected into every template as
 * `{{ activations }}`: the activations a kernel may fuse, each `fn act_<name>(v: f32) -> f32`, so
 * every op computes them identically.
 *
 * @module
 */

/** The activation names with a WGSL `act_<name>` function. */
export const ACTIVATION_NAMES: readonly string[] = [
  "silu",
  "gelu",
  "gelu_tanh",
  "quick_gelu",
  "relu",
];

/**
 * The WGSL source of `act_silu`, `act_gelu` (exact, erf-based: within 4e-7 absolute of the
 * float64 GELU over [−10, 10]), `act_gelu_tanh`, `act_quick_gelu` and `act_relu`.
 *
 * @example
 * ```ts
 * import { ACTIVATIONS_WGSL } from "@denoise/sd/gpu";
 * console.log(ACTIVATIONS_WGSL.includes("fn act_gelu"));
 * ```
 */
export const ACTIVATIONS_WGSL: string = `
fn act_silu(v: f32) -> f32 {
  return v / (1.0 + exp(-v));
}

fn act_quick_gelu(v: f32) -> f32 {
  return v / (1.0 + exp(-1.702 * v));
}

fn act_relu(v: f32) -> f32 {
  return max(v, 0.0);
}

fn act_gelu_tanh(v: f32) -> f32 {
  let inner = 0.7978845608028654 * (v + 0.044715 * v * v * v);
  return 0.5 * v * (1.0 + tanh(clamp(inner, -15.0, 15.0)));
}

fn act_gelu(v: f32) -> f32 {
  let a = abs(v) * 0.7071067811865476;
  if (a < 0.75) {
    let u = a * a;
    var q = -0.00003170935941;
    q = q * u + 0.0001570149950;
    q = q * u - 0.0008837332859;
    q = q * u + 0.005235113096;
    q = q * u - 0.02686834307;
    q = q * u + 0.1128381144;
    q = q * u - 0.3761263954;
    q = q * u + 1.128379167;
    let e = a * q;
    return 0.5 * v * (1.0 + select(-e, e, v >= 0.0));
  }
  let s = (2.0 * min(a, 4.0) - 4.75) / 3.25;
  var r = 0.00005972048627;
  r = r * s - 0.0001436917645;
  r = r * s + 0.0001582780575;
  r = r * s - 0.0003770128938;
  r = r * s + 0.001076675403;
  r = r * s - 0.002371317059;
  r = r * s + 0.004966133249;
  r = r * s - 0.01032986400;
  r = r * s + 0.02077611884;
  r = r * s - 0.04015944330;
  r = r * s + 0.07442593336;
  r = r * s - 0.1315877612;
  r = r * s + 0.2205056933;
  let half_erfc = 0.5 * exp(-a * a) * r;
  return v * select(half_erfc, 1.0 - half_erfc, v >= 0.0);
}
`;
