/**
 * A GPU buffer pool: freed buffers are kept by size class and handed out again, so a diffusion loop
 * allocates nothing after its first step. Reuse is stream-ordered: a buffer released while recorded
 * commands still use it may be given to a later command of the same queue, which runs after them.
 *
 * The pool is deterministic: of the free buffers of a size class it hands out the oldest, whatever
 * order they were freed in, so a step that allocates and frees the same sizes as the step before
 * gets the same buffers (which lets the recorder reuse its bind groups).
 *
 * @module
 */

/** Memory counters of a {@link BufferPool}, in bytes. */
export interface PoolStats {
  /** Bytes in buffers handed out and not yet released. */
  inUseBytes: number;
  /** The most `inUseBytes` has been since creation or the last `resetPeak()`. */
  peakBytes: number;
  /** Bytes held in free lists for reuse. */
  pooledBytes: number;
  /** Bytes of every live GPU buffer the pool owns (in use + pooled). */
  totalBytes: number;
}

const USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * Rounds a byte size up to its size class: multiples of 256 B up to 4 KiB, then four classes per
 * power of two (at most 25 % slack).
 *
 * @example
 * ```ts
 * import { sizeClass } from "@denoise/sd/gpu";
 * sizeClass(5000); // 5120
 * ```
 */
export function sizeClass(bytes: number): number {
  const b = Math.max(bytes, 4);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const octave = 2 ** Math.floor(Math.log2(b));
  const step = octave / 4;
  return Math.ceil(b / step) * step;
}

/**
 * A pool of storage buffers keyed by size class.
 *
 * @example
 * ```ts
 * import { BufferPool } from "@denoise/sd/gpu";
 * import { getGpu } from "@denoise/sd/gpu";
 * const pool = new BufferPool((await getGpu()).device);
 * const buf = pool.acquire(1024);
 * pool.release(buf);
 * console.log(pool.stats());
 * ```
 */
export class BufferPool {
  /** Free buffers by size class, newest first (the oldest is popped). */
  #free = new Map<number, GPUBuffer[]>();
  #age = new WeakMap<GPUBuffer, number>();
  #created = 0;
  #exact = new WeakSet<GPUBuffer>();
  #inUse = 0;
  #peak = 0;
  #pooled = 0;
  #total = 0;

  /** Creates a pool on `device`. */
  constructor(readonly device: GPUDevice) {}

  /**
   * Returns a buffer of at least `bytes` bytes (usage STORAGE | COPY_SRC | COPY_DST). With
   * `exact`, the buffer has just `bytes` (rounded up to 4) and is destroyed, not pooled, on
   * release: for long-lived tensors such as weights, where size-class slack would be wasted.
   */
  acquire(bytes: number, options: { exact?: boolean } = {}): GPUBuffer {
    const size = options.exact ? Math.max(4, Math.ceil(bytes / 4) * 4) : sizeClass(bytes);
    const list = options.exact ? undefined : this.#free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.#pooled -= size;
    } else {
      const max = this.device.limits.maxBufferSize;
      if (size > max) {
        throw new Error(
          `denoise: a ${bytes}-byte tensor exceeds this GPU's maxBufferSize (${max} bytes); ` +
            "use a smaller image size or batch",
        );
      }
      buf = this.device.createBuffer({ size, usage: USAGE, label: `pool-${size}` });
      this.#age.set(buf, this.#created++);
      this.#total += size;
      if (options.exact) this.#exact.add(buf);
    }
    this.#inUse += size;
    this.#peak = Math.max(this.#peak, this.#inUse);
    return buf;
  }

  /** Returns a buffer to the pool for reuse. */
  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.#inUse -= size;
    if (this.#exact.has(buf)) {
      this.#exact.delete(buf);
      this.#total -= size;
      buf.destroy();
      return;
    }
    this.#pooled += size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    const age = this.#age.get(buf) ?? 0;
    let i = list.length;
    while (i > 0 && (this.#age.get(list[i - 1]) ?? 0) < age) i--;
    list.splice(i, 0, buf);
  }

  /** Destroys every pooled (free) buffer, giving the memory back to the driver. */
  trim(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#total -= this.#pooled;
    this.#pooled = 0;
    this.#free.clear();
  }

  /** Starts a new peak measurement from the current in-use bytes. */
  resetPeak(): void {
    this.#peak = this.#inUse;
  }

  /** The pool's memory counters. */
  stats(): PoolStats {
    return {
      inUseBytes: this.#inUse,
      peakBytes: this.#peak,
      pooledBytes: this.#pooled,
      totalBytes: this.#total,
    };
  }
}
