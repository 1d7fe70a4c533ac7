/**
 * The recorder's host-side caches, which keep the CPU cost of a dispatch low:
 *
 * - {@link UniformStore}: uniform blocks live in a few large buffers, one 256-byte slot per
 *   distinct content. A slot is written once and reused by every later dispatch with the same
 *   bytes (shapes repeat every step), so a step rewrites only the uniforms that changed.
 * - {@link BindGroupCache}: bind groups by (pipeline, uniform slot, bound buffer ranges). Weights
 *   never move and the pool hands out the same activation buffers in the same order every step,
 *   so after the first step a dispatch finds its bind group instead of creating one.
 * - {@link StagingArena}: host data uploaded while commands are being recorded is staged and
 *   copied in stream order, so an upload in the middle of a step no longer submits the step early.
 *
 * Every write these make reaches the GPU with `queue.writeBuffer` just before the submit that
 * uses it; queue order makes that safe while earlier submits still run.
 *
 * @module
 */

/** Switches of the recorder's caches, for measuring each one against the plain path. */
export interface RecorderOptions {
  /** Reuse bind groups across dispatches and steps (else one `createBindGroup` per dispatch). */
  cacheBindGroups: boolean;
  /** Keep uniform blocks in slots by content (else a fresh slot per dispatch, rewritten per submit). */
  reuseUniforms: boolean;
  /** Stage uploads made while recording (else an upload submits the recorded work first). */
  stageUploads: boolean;
}

/** The defaults: every cache on. */
export const DEFAULT_RECORDER: Readonly<RecorderOptions> = {
  cacheBindGroups: true,
  reuseUniforms: true,
  stageUploads: true,
};

/** Host-side counters of a runtime, cumulative since it was created. */
export interface RecorderStats {
  /** Compute dispatches recorded. */
  dispatches: number;
  /** Bind groups created (cache misses). */
  bindGroups: number;
  /** Uniform bytes written to the GPU. */
  uniformBytes: number;
  /** Uploads staged in the command stream. */
  stagedUploads: number;
  /** Queue submits. */
  submits: number;
}

/** A uniform slot: where a uniform block lives, with an id for cache keys. */
export interface UniformSlot {
  /** Unique per (buffer, offset) for the store's lifetime. */
  id: number;
  /** The uniform buffer. */
  buffer: GPUBuffer;
  /** Byte offset in the buffer. */
  offset: number;
  /** Byte size of the block (a multiple of 16). */
  size: number;
}

const CHUNK = 65536;
/** Slots after which the store starts over at the next submit (4 MiB at 256-byte alignment). */
const MAX_SLOTS = 16384;

interface Chunk {
  buffer: GPUBuffer;
  data: Uint8Array<ArrayBuffer>;
  lo: number;
  hi: number;
}

/** Mixes `v` into the 32-bit hash `h` (a murmur3-style step). */
export function mix(h: number, v: number): number {
  let k = Math.imul(v | 0, 0xcc9e2d51);
  k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** The 32-bit words of a uniform block (its length is a multiple of 4). */
function words(data: ArrayBufferView): Uint32Array {
  return new Uint32Array(data.buffer, data.byteOffset, data.byteLength >> 2);
}

/** A slot with the words it holds, for finding it by content. */
interface Held {
  slot: UniformSlot;
  words: Uint32Array;
}

/**
 * Uniform blocks in 64 KiB buffers, one aligned slot per block.
 *
 * @example
 * ```ts
 * import { getGpu } from "@denoise/sd/gpu";
 * import { UniformStore } from "./recorder.ts";
 * const { device } = await getGpu();
 * const store = new UniformStore(device, 256);
 * const a = store.slot(new Uint32Array([1, 2, 3, 4]), true);
 * console.log(store.slot(new Uint32Array([1, 2, 3, 4]), true) === a); // true
 * store.upload(device.queue);
 * ```
 */
export class UniformStore {
  #chunks: Chunk[] = [];
  #byContent = new Map<number, Held[]>();
  #held = 0;
  #chunk = 0;
  #cursor = 0;
  #ids = 0;
  #slotIds = new Map<number, number>();
  /** Bytes written to the GPU so far. */
  bytesWritten = 0;

  /** A store on `device` with slots aligned to `align` bytes. */
  constructor(readonly device: GPUDevice, readonly align: number) {}

  /** The slot holding `data`; with `reuse`, an existing slot with the same bytes. */
  slot(data: ArrayBufferView, reuse: boolean): UniformSlot {
    let hash = 0;
    let w: Uint32Array | undefined;
    if (reuse) {
      w = words(data);
      hash = w.length;
      for (let i = 0; i < w.length; i++) hash = mix(hash, w[i]);
      const bucket = this.#byContent.get(hash);
      if (bucket) {
        for (const held of bucket) if (sameWords(held.words, w)) return held.slot;
      }
    }
    const size = Math.ceil(data.byteLength / 16) * 16;
    if (size > CHUNK) throw new Error(`denoise: uniform block of ${size} bytes is too big`);
    if (this.#cursor + size > CHUNK) {
      this.#chunk++;
      this.#cursor = 0;
    }
    let chunk = this.#chunks[this.#chunk];
    if (!chunk) {
      chunk = {
        buffer: this.device.createBuffer({
          size: CHUNK,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
          label: "uniforms",
        }),
        data: new Uint8Array(CHUNK),
        lo: CHUNK,
        hi: 0,
      };
      this.#chunks.push(chunk);
    }
    const offset = this.#cursor;
    chunk.data.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    chunk.data.fill(0, offset + data.byteLength, offset + size);
    chunk.lo = Math.min(chunk.lo, offset);
    chunk.hi = Math.max(chunk.hi, offset + size);
    this.#cursor = Math.ceil((offset + size) / this.align) * this.align;
    const where = this.#chunk * CHUNK + offset;
    let id = this.#slotIds.get(where);
    if (id === undefined) this.#slotIds.set(where, id = this.#ids++);
    const slot = { id, buffer: chunk.buffer, offset, size };
    if (w) {
      const held = { slot, words: w.slice() };
      const bucket = this.#byContent.get(hash);
      if (bucket) bucket.push(held);
      else this.#byContent.set(hash, [held]);
      this.#held++;
    }
    return slot;
  }

  /** Writes the slots filled since the last call; call just before submitting. */
  upload(queue: GPUQueue): void {
    for (const c of this.#chunks) {
      if (c.hi <= c.lo) continue;
      queue.writeBuffer(c.buffer, c.lo, c.data, c.lo, c.hi - c.lo);
      this.bytesWritten += c.hi - c.lo;
      c.lo = CHUNK;
      c.hi = 0;
    }
  }

  /**
   * Called after a submit: without reuse every slot is free again; with reuse the store starts
   * over only when it holds too many slots (contents that change every step accumulate).
   */
  submitted(reuse: boolean): void {
    if (reuse && this.#held < MAX_SLOTS) return;
    this.#byContent.clear();
    this.#held = 0;
    this.#chunk = 0;
    this.#cursor = 0;
  }
}

/**
 * Bind groups by pipeline, uniform slot and bound buffer ranges.
 *
 * @example
 * ```ts
 * import { BindGroupCache } from "./recorder.ts";
 * const cache = new BindGroupCache();
 * console.log(cache.size); // 0
 * ```
 */
export class BindGroupCache {
  #map = new Map<number, { key: number[]; group: GPUBindGroup }[]>();
  #entries = 0;
  #bufferIds = new WeakMap<GPUBuffer, number>();
  #next = 1;
  /** Entries after which the cache starts over. */
  readonly capacity: number;

  /** A cache of at most `capacity` bind groups (default 16384). */
  constructor(capacity = 16384) {
    this.capacity = capacity;
  }

  /** Cached bind groups. */
  get size(): number {
    return this.#entries;
  }

  /** A small number that names `buffer` for the cache's lifetime. */
  bufferId(buffer: GPUBuffer): number {
    let id = this.#bufferIds.get(buffer);
    if (id === undefined) this.#bufferIds.set(buffer, id = this.#next++);
    return id;
  }

  /** The bind group cached for the numbers `key` (a scratch array the caller may reuse). */
  get(key: readonly number[], length: number): GPUBindGroup | undefined {
    const bucket = this.#map.get(hashOf(key, length));
    if (!bucket) return undefined;
    for (const e of bucket) {
      if (e.key.length !== length) continue;
      let same = true;
      for (let i = 0; i < length && same; i++) same = e.key[i] === key[i];
      if (same) return e.group;
    }
    return undefined;
  }

  /** Caches `group` under the first `length` numbers of `key`. */
  set(key: readonly number[], length: number, group: GPUBindGroup): void {
    if (this.#entries >= this.capacity) this.clear();
    const h = hashOf(key, length);
    const e = { key: key.slice(0, length), group };
    const bucket = this.#map.get(h);
    if (bucket) bucket.push(e);
    else this.#map.set(h, [e]);
    this.#entries++;
  }

  /** Forgets every bind group (after buffers they reference were destroyed). */
  clear(): void {
    this.#map.clear();
    this.#entries = 0;
  }
}

function hashOf(key: readonly number[], length: number): number {
  let h = length;
  for (let i = 0; i < length; i++) h = mix(h, key[i]);
  return h;
}

function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Host data staged for in-stream copies: filled while recording, written before the submit.
 *
 * @example
 * ```ts
 * import { getGpu } from "@denoise/sd/gpu";
 * import { StagingArena } from "./recorder.ts";
 * const { device } = await getGpu();
 * const arena = new StagingArena(device);
 * const { buffer, offset } = arena.stage(new Uint8Array(16));
 * arena.upload(device.queue);
 * ```
 */
export class StagingArena {
  #chunks: Chunk[] = [];
  #chunk = 0;
  #cursor = 0;
  #large: { buffer: GPUBuffer; data: Uint8Array }[] = [];

  /** An arena on `device`. */
  constructor(readonly device: GPUDevice, readonly chunkBytes = 1 << 20) {}

  /** Copies `bytes` (a multiple of 4 long) into the arena; returns where they will be. */
  stage(bytes: Uint8Array): { buffer: GPUBuffer; offset: number } {
    const size = Math.ceil(bytes.byteLength / 4) * 4;
    if (size > this.chunkBytes / 4) {
      const buffer = this.device.createBuffer({
        size,
        usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        label: "staged upload",
      });
      this.#large.push({ buffer, data: bytes });
      return { buffer, offset: 0 };
    }
    if (this.#cursor + size > this.chunkBytes) {
      this.#chunk++;
      this.#cursor = 0;
    }
    let chunk = this.#chunks[this.#chunk];
    if (!chunk) {
      chunk = {
        buffer: this.device.createBuffer({
          size: this.chunkBytes,
          usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          label: "staging",
        }),
        data: new Uint8Array(this.chunkBytes),
        lo: 0,
        hi: 0,
      };
      this.#chunks.push(chunk);
    }
    const offset = this.#cursor;
    chunk.data.set(bytes, offset);
    chunk.hi = offset + size;
    this.#cursor = Math.ceil((offset + size) / 256) * 256;
    return { buffer: chunk.buffer, offset };
  }

  /** Writes the staged bytes; call just before submitting. */
  upload(queue: GPUQueue): void {
    for (const c of this.#chunks) {
      if (c.hi > 0) queue.writeBuffer(c.buffer, 0, c.data, 0, c.hi);
      c.hi = 0;
    }
    for (const l of this.#large) queue.writeBuffer(l.buffer, 0, padTo4(l.data));
  }

  /** Frees the arena for the next recording (after a submit, or when the recording is dropped). */
  reset(): void {
    for (const c of this.#chunks) c.hi = 0;
    for (const l of this.#large) l.buffer.destroy(); // freed once the submitted copies ran
    this.#large = [];
    this.#chunk = 0;
    this.#cursor = 0;
  }
}

/** `bytes` padded with zeros to a multiple of 4 bytes (a copy only when needed). */
export function padTo4(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  if (bytes.byteLength % 4 === 0 && bytes.buffer instanceof ArrayBuffer) {
    return bytes as Uint8Array<ArrayBuffer>;
  }
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}
