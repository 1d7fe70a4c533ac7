/**
 * `Tensor`: a GPU buffer with a shape and a dtype. Created and read through a {@link Runtime}.
 *
 * @module
 */
import type { DType } from "./device.ts";
import type { Runtime } from "./runtime.ts";
import { releaseTensor } from "./scope.ts";

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return dtype === "f16" ? 2 : 4;
}

/** The number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A tensor on the GPU: row-major (C order) storage of `shape` in `dtype`.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * using t = rt.upload(new Float32Array([1, 2, 3, 4]), [2, 2]); // freed at the end of the block
 * console.log(await t.read()); // Float32Array [1, 2, 3, 4]
 * ```
 */
export class Tensor {
  #buffer: GPUBuffer | null;
  readonly #owned: boolean;
  #parent: Tensor | null;
  /** Where the elements start in the buffer, in bytes (non-zero only for a {@link Tensor.view}). */
  readonly byteOffset: number;

  /** Wraps `buffer`; `owned` tensors return it to the pool on `dispose()`. */
  constructor(
    readonly rt: Runtime,
    buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    options: { owned?: boolean; parent?: Tensor; byteOffset?: number } = {},
  ) {
    this.#buffer = buffer;
    this.#owned = options.owned ?? true;
    this.#parent = options.parent ?? null;
    this.byteOffset = options.byteOffset ?? 0;
  }

  /** The number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** The bytes the elements occupy (the buffer may be larger). */
  get byteSize(): number {
    return this.size * dtypeBytes(this.dtype);
  }

  /** Whether `dispose()` was called (on this tensor or the tensor it views). */
  get disposed(): boolean {
    return this.#buffer === null || (this.#parent?.disposed ?? false);
  }

  /** The tensor that owns the storage: this one, or for a view (`reshape`, `view`) the tensor it views. */
  get base(): Tensor {
    return this.#parent?.base ?? this;
  }

  /** The GPU buffer; throws if the tensor was disposed. */
  get buffer(): GPUBuffer {
    if (this.disposed || !this.#buffer) {
      throw new Error(`denoise: tensor [${this.shape}] was used after dispose()`);
    }
    return this.#buffer;
  }

  /** A tensor sharing this storage with another shape of the same element count. */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new Error(`denoise: cannot reshape [${this.shape}] (${this.size}) to [${shape}]`);
    }
    return new Tensor(this.rt, this.buffer, shape, this.dtype, {
      owned: false,
      parent: this,
      byteOffset: this.byteOffset,
    });
  }

  /**
   * A tensor of `shape` sharing this storage from element `offset` on (a batch item, one part of
   * a joined parameter). A view that ops bind must start on a multiple of the GPU's
   * `minStorageBufferOffsetAlignment` (256 bytes on most GPUs); the runtime says so otherwise.
   *
   * @example
   * ```ts
   * import { Runtime } from "@denoise/sd/gpu";
   * const rt = await Runtime.create();
   * using t = rt.upload(new Float32Array(128).map((_, i) => i), [2, 64]);
   * console.log(await t.view([64], 64).read()); // 64 … 127
   * ```
   */
  view(shape: readonly number[], offset = 0): Tensor {
    const n = numel(shape);
    if (!Number.isInteger(offset) || offset < 0 || offset + n > this.size) {
      throw new Error(
        `denoise: a view of [${shape}] at element ${offset} does not fit in [${this.shape}]`,
      );
    }
    return new Tensor(this.rt, this.buffer, shape, this.dtype, {
      owned: false,
      parent: this,
      byteOffset: this.byteOffset + offset * dtypeBytes(this.dtype),
    });
  }

  /** Copies the values to the CPU (f16 is widened to f32). Submits pending work first. */
  read(): Promise<Float32Array> {
    return this.rt.read(this);
  }

  /**
   * Frees the storage (stream-ordered: work already recorded still sees the data). Disposing a
   * view ends the view only, unless a scope handed it the storage (see `scope.ts`); disposing
   * twice is harmless.
   */
  dispose(): void {
    if (this.#buffer && this.#owned) this.rt.pool.release(this.#buffer);
    this.#buffer = null;
    releaseTensor(this);
  }

  /** `using t = …` frees the tensor at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
