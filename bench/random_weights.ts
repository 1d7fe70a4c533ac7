/**
 * Deterministic random weights for benchmarking a model without downloading it: every parameter of
 * a shape table is generated on demand from a seeded generator (the same key and seed always give
 * the same values, whatever the order of access), scaled so activations stay finite in f16 —
 * weights uniform with variance `1/fan_in`, norm scales 1, biases within ±0.01.
 *
 * @module
 */
import type { DType } from "../src/gpu/device.ts";
import type { LoadedTensor } from "../src/weights/source.ts";

/** Levels of the quantised uniform distribution the weights are drawn from. */
const LEVELS = 4096;

/**
 * The mulberry32 generator: 32 random bits per call.
 *
 * @example
 * ```ts
 * import { mulberry32 } from "./random_weights.ts";
 * const next = mulberry32(42);
 * console.log(next() >>> 0);
 * ```
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** FNV-1a hash of a string, mixed with `seed`. */
function hashKey(key: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Standard-normal values from a seeded generator (Box–Muller), for model inputs.
 *
 * @example
 * ```ts
 * import { randomNormal } from "./random_weights.ts";
 * const latents = randomNormal(2 * 4 * 64 * 64, 1);
 * ```
 */
export function randomNormal(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = (next() + 1) / 4294967297;
    const v = next() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * How a parameter is initialised: `"one"` (norm scales), `"uniform"` with half-width `bound`.
 *
 * @example
 * ```ts
 * import { initFor } from "./random_weights.ts";
 * initFor("conv_in.weight", [320, 4, 3, 3]); // { kind: "uniform", bound: 0.288… }
 * ```
 */
export function initFor(
  key: string,
  shape: readonly number[],
): { kind: "one" } | { kind: "uniform"; bound: number } {
  if (shape.length >= 2) {
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    return { kind: "uniform", bound: Math.sqrt(3 / fanIn) };
  }
  if (key.endsWith(".weight")) return { kind: "one" };
  return { kind: "uniform", bound: 0.01 };
}

/**
 * One parameter's values: f16 bits (`F16`) or float32 (`F32`).
 *
 * @example
 * ```ts
 * import { randomTensor } from "./random_weights.ts";
 * const t = randomTensor("conv_in.weight", [320, 4, 3, 3], { seed: 0, dtype: "f16" });
 * console.log(t.dtype, t.data.byteLength); // F16 23040
 * ```
 */
export function randomTensor(
  key: string,
  shape: readonly number[],
  options: { seed: number; dtype: DType },
): LoadedTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const init = initFor(key, shape);
  const table = new Float32Array(LEVELS);
  for (let k = 0; k < LEVELS; k++) {
    table[k] = init.kind === "one" ? 1 : init.bound * ((2 * k + 1) / LEVELS - 1);
  }
  const next = mulberry32(hashKey(key, options.seed));
  const fill = (set: (i: number, k: number) => void) => {
    for (let i = 0; i < n; i += 2) {
      const r = next();
      set(i, r & (LEVELS - 1));
      if (i + 1 < n) set(i + 1, (r >>> 16) & (LEVELS - 1));
    }
  };
  if (options.dtype === "f32") {
    const data = new Float32Array(n);
    fill((i, k) => data[i] = table[k]);
    return { shape: [...shape], dtype: "F32", data };
  }
  const bits = new Uint16Array(new Float16Array(table).buffer);
  const data = new Uint16Array(n);
  fill((i, k) => data[i] = bits[k]);
  return { shape: [...shape], dtype: "F16", data: new Uint8Array(data.buffer) };
}

/**
 * A read-only map of diffusers key → random tensor for a parameter-shape table; each value is
 * generated when it is read (nothing is kept), so a 1.7 GB U-Net never sits in host memory.
 *
 * @example
 * ```ts
 * import { SD15 } from "../src/weights/configs.ts";
 * import { paramShapes, unetLayers } from "./flops.ts";
 * import { RandomWeights } from "./random_weights.ts";
 * const shapes = paramShapes(unetLayers(SD15.unet, { height: 8, width: 8 }));
 * const weights = new RandomWeights(shapes, { seed: 0, dtype: "f16" });
 * console.log(weights.get("conv_in.weight")?.shape); // [320, 4, 3, 3]
 * ```
 */
export class RandomWeights implements ReadonlyMap<string, LoadedTensor> {
  readonly #shapes: ReadonlyMap<string, readonly number[]>;
  readonly #options: { seed: number; dtype: DType };

  /** Serves `shapes` with values from `seed` in `dtype`'s storage type. */
  constructor(
    shapes: ReadonlyMap<string, readonly number[]>,
    options: { seed: number; dtype: DType },
  ) {
    this.#shapes = shapes;
    this.#options = { ...options };
  }

  /** How many parameters. */
  get size(): number {
    return this.#shapes.size;
  }

  /** The generated tensor of `key`, or `undefined` when the table has no such key. */
  get(key: string): LoadedTensor | undefined {
    const shape = this.#shapes.get(key);
    return shape ? randomTensor(key, shape, this.#options) : undefined;
  }

  /** Whether the table has `key`. */
  has(key: string): boolean {
    return this.#shapes.has(key);
  }

  /** The keys, in table order. */
  keys(): MapIterator<string> {
    return this.#shapes.keys();
  }

  /** Every tensor, generated one by one. */
  *values(): MapIterator<LoadedTensor> {
    for (const key of this.#shapes.keys()) yield this.get(key)!;
  }

  /** Every key with its tensor. */
  *entries(): MapIterator<[string, LoadedTensor]> {
    for (const key of this.#shapes.keys()) yield [key, this.get(key)!];
  }

  /** Same as {@link RandomWeights.entries}. */
  [Symbol.iterator](): MapIterator<[string, LoadedTensor]> {
    return this.entries();
  }

  /** Calls `fn` with each tensor. */
  forEach(
    fn: (value: LoadedTensor, key: string, map: ReadonlyMap<string, LoadedTensor>) => void,
  ): void {
    for (const [k, v] of this.entries()) fn(v, k, this);
  }
}
