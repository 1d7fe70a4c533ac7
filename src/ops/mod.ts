/**
 * The GPU ops, one module per kernel family (the host side of `kernels/<stem>.wgsl.jinja`).
 *
 * @example
 * ```ts
 * import { linear } from "@denoise/sd/ops";
 * console.log(typeof linear);
 * ```
 *
 * @module
 */
export * from "./attention.ts";
export * from "./conv2d.ts";
export * from "./elementwise.ts";
export * from "./geglu.ts";
export * from "./gemm.ts";
export * from "./layout.ts";
export * from "./norm.ts";
