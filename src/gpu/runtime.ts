/**
 * The runtime: one GPU device, its buffer pool, the pipeline cache, and the command recorder. Ops
 * record dispatches into one command encoder; `flush()` submits them at once (a model step submits
 * once), reading a tensor flushes first.
 *
 * @module
 */
import { assertNotLost, type DType, getGpu, type Gpu, type GpuOptions } from "./device.ts";
import { KERNEL_SOURCES } from "../../kernels/mod.ts";
import { type CompiledKernel, PipelineCache, type PipelineKey } from "./kernel.ts";
import { BufferPool } from "./pool.ts";
import { GpuPacer } from "./pacer.ts";
import type { Profiler } from "./profiler.ts";
import {
  BindGroupCache,
  DEFAULT_RECORDER,
  padTo4,
  type RecorderOptions,
  type RecorderStats,
  StagingArena,
  UniformStore,
} from "./recorder.ts";
import { keepTensors, tensorScope, trackTensor } from "./scope.ts";
import { dtypeBytes, numel, Tensor } from "./tensor.ts";

/** The stems of every kernel template the package ships (compiled into the module graph). */
export const KERNEL_TEMPLATES: readonly string[] = Object.keys(KERNEL_SOURCES);

/** One compute dispatch to record. */
export interface Dispatch {
  /** Which pipeline: kernel family + template parameters. */
  key: PipelineKey;
  /** Storage bindings 1…n, in the template's binding order. */
  bindings: (Tensor | GPUBuffer)[];
  /** The contents of the uniform at binding 0 (omit when the kernel has none). */
  uniforms?: ArrayBufferView;
  /** Workgroup counts [x, y, z]. */
  grid: readonly number[];
  /**
   * Profiler label (op name and shape), or a function making it (called only when a profiler or
   * an error needs it, so a dispatch builds no string); defaults to the kernel name.
   */
  label?: string | (() => string);
}

/** Options for {@link Runtime.create}. */
export interface RuntimeOptions extends GpuOptions {
  /** Pre-created GPU context (otherwise the shared device, or `device`). */
  gpu?: Gpu;
  /** Switch off recorder caches (to measure them; all are on by default). */
  recorder?: Partial<RecorderOptions>;
}

/** Timestamp queries of one submit: the set, the dispatches' labels, the resolve buffer. */
interface QueryBatch {
  set: GPUQuerySet;
  labels: { label: string; kernel: string }[];
  resolve?: GPUBuffer;
}

const QUERY_SET_SIZE = 4096;

/** Splits a 1-D workgroup count over x and y so each stays within the per-dimension limit. */
export function grid1d(workgroups: number, maxPerDim = 65535): [number, number, number] {
  if (workgroups <= maxPerDim) return [Math.max(workgroups, 1), 1, 1];
  const y = Math.ceil(workgroups / maxPerDim);
  return [Math.ceil(workgroups / y), y, 1];
}

/**
 * The denoise GPU runtime.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * const x = rt.upload(new Float32Array([1, -2, 3]), [3]);
 * console.log(rt.gpu.adapterName, await x.read());
 * ```
 */
export class Runtime {
  /** The buffer pool tensors are allocated from. */
  readonly pool: BufferPool;
  /** Compiled pipelines by key. */
  readonly cache: PipelineCache;
  /** Attach a {@link Profiler} to time dispatches; `null` turns profiling off. */
  profiler: Profiler | null = null;

  /** The recorder's switches (see {@link RecorderOptions}); may be changed between steps. */
  readonly recorder: RecorderOptions;

  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #passPipeline: GPUComputePipeline | null = null;
  #pending: Promise<string | undefined>[] = [];
  #seen = new WeakSet<CompiledKernel>();
  #layouts = new WeakMap<CompiledKernel, { layout: GPUBindGroupLayout; id: number }>();
  #uniforms: UniformStore;
  #bindGroups = new BindGroupCache();
  #staging: StagingArena;
  #pacer = new GpuPacer();
  #queries: QueryBatch[] = [];
  #submittedQueries: QueryBatch[] = [];
  #submitErrors: Promise<string[]>[] = [];
  #stats = { dispatches: 0, bindGroups: 0, stagedUploads: 0, submits: 0 };
  #layoutIds = 0;
  /** Scratch numbers of a bind-group cache key. */
  #key: number[] = [];

  private constructor(readonly gpu: Gpu, recorder: Partial<RecorderOptions> = {}) {
    this.pool = new BufferPool(gpu.device);
    this.cache = new PipelineCache(gpu.device);
    this.recorder = { ...DEFAULT_RECORDER, ...recorder };
    const align = Math.max(gpu.limits.minUniformBufferOffsetAlignment, 16);
    this.#uniforms = new UniformStore(gpu.device, align);
    this.#staging = new StagingArena(gpu.device);
  }

  /** Creates a runtime on the shared (or given) device. */
  static async create(options: RuntimeOptions = {}): Promise<Runtime> {
    return new Runtime(options.gpu ?? await getGpu(options), options.recorder);
  }

  /** The device. */
  get device(): GPUDevice {
    return this.gpu.device;
  }

  /** The dtype activations use by default: f16 where the device has it, else f32. */
  get preferredDType(): DType {
    return this.gpu.hasF16 ? "f16" : "f32";
  }

  /** Dispatches recorded since creation. */
  get dispatchCount(): number {
    return this.#stats.dispatches;
  }

  /** The recorder's counters since creation (diff two snapshots to count one step). */
  stats(): RecorderStats {
    return { ...this.#stats, uniformBytes: this.#uniforms.bytesWritten };
  }

  /** Checks that `dtype` is usable on this device. */
  assertDType(dtype: DType): void {
    if (dtype === "f16" && !this.gpu.hasF16) {
      throw new Error(
        `denoise: f16 needs the WebGPU feature shader-f16, which ${this.gpu.adapterName} lacks; use dtype "f32"`,
      );
    }
  }

  /**
   * An uninitialised tensor from the pool; `exact` allocates just its size outside the size
   * classes (for weights and other long-lived tensors).
   */
  empty(shape: readonly number[], dtype: DType = "f32", options: { exact?: boolean } = {}): Tensor {
    this.assertDType(dtype);
    const buf = this.pool.acquire(Math.max(4, numel(shape) * dtypeBytes(dtype)), options);
    const t = new Tensor(this, buf, [...shape], dtype);
    trackTensor(t);
    return t;
  }

  /**
   * Runs `fn` in a tensor scope: every tensor allocated while it runs (sync, or until its promise
   * settles) is freed when it ends, except the tensors its result holds (a tensor, or arrays and
   * plain objects of them), which the caller, or the enclosing scope, then owns. The ownership rule
   * and the details are in `scope.ts`.
   *
   * @example
   * ```ts
   * import { Runtime } from "@denoise/sd/gpu";
   * import { unary } from "@denoise/sd/ops";
   * const rt = await Runtime.create();
   * using x = rt.upload(new Float32Array([1, -2, 3]), [3]);
   * using y = rt.scope(() => unary(unary(x, "silu"), "gelu")); // the silu output is freed
   * console.log(await y.read());
   * ```
   */
  scope<T>(fn: () => T): T {
    return tensorScope(fn);
  }

  /**
   * Takes the tensors `value` holds out of their scopes, so that no scope frees them (weights,
   * caches, state kept across calls); returns `value`. Whoever keeps them disposes them.
   */
  keep<T>(value: T): T {
    return keepTensors(value);
  }

  /**
   * Uploads host data as a tensor of `dtype` (default: f32). A `Uint16Array` holds f16 bits, or
   * bf16 bits with `srcDType: "bf16"`; `exact` as in {@link Runtime.empty}.
   */
  upload(
    data: Float32Array | Float16Array | Uint16Array,
    shape: readonly number[],
    options: { dtype?: DType; srcDType?: "f16" | "bf16"; exact?: boolean } = {},
  ): Tensor {
    const dtype = options.dtype ?? "f32";
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`denoise: upload of ${data.length} values into shape [${shape}] (${n})`);
    }
    const t = this.empty(shape, dtype, { exact: options.exact });
    this.write(t, data, options);
    return t;
  }

  /**
   * Writes host data into an existing tensor (all of it), in stream order: recorded work before
   * the call still sees the old values. A `Uint16Array` holds f16 (or with `srcDType: "bf16"`,
   * bf16) bits.
   *
   * @example
   * ```ts
   * import { Runtime } from "@denoise/sd/gpu";
   * const rt = await Runtime.create();
   * using t = rt.empty([3]);
   * rt.write(t, new Float32Array([1, 2, 3]));
   * console.log(await t.read());
   * ```
   */
  write(
    dst: Tensor,
    data: Float32Array | Float16Array | Uint16Array,
    options: { srcDType?: "f16" | "bf16" } = {},
  ): void {
    if (data.length !== dst.size) {
      throw new Error(`denoise: write of ${data.length} values into [${dst.shape}] (${dst.size})`);
    }
    const host = convertHost(data, dst.dtype, options.srcDType ?? "f16");
    const bytes = new Uint8Array(host.buffer as ArrayBuffer, host.byteOffset, host.byteLength);
    const padded = padTo4(bytes);
    if (padded.byteLength !== bytes.byteLength && dst.base !== dst) {
      throw new Error(`denoise: an odd number of f16 values cannot be written into a view`);
    }
    if (this.#encoder && this.recorder.stageUploads) {
      // in stream order, after the commands recorded so far (which may still use this buffer)
      const staged = this.#staging.stage(bytes);
      this.#endPass();
      this.#encoder.copyBufferToBuffer(
        staged.buffer,
        staged.offset,
        dst.buffer,
        dst.byteOffset,
        padded.byteLength,
      );
      this.#stats.stagedUploads++;
      return;
    }
    this.#endPass();
    if (this.#encoder) this.#submittedQueries.push(...this.#submitRecorded());
    this.device.queue.writeBuffer(dst.buffer, dst.byteOffset, padded);
  }

  /** Records one compute dispatch. */
  dispatch(d: Dispatch): void {
    assertNotLost(this.device);
    const kernel = this.cache.get(d.key);
    if (!this.#seen.has(kernel)) {
      this.#seen.add(kernel);
      this.#pending.push(kernel.check);
    }
    const bindGroup = this.#bindGroup(kernel, d);
    const profiled = this.profiler !== null && this.gpu.hasTimestamps;
    const pass = profiled ? this.#beginProfiledPass(labelOf(d), d.key.kernel) : this.#beginPass();
    if (this.#passPipeline !== kernel.pipeline) {
      pass.setPipeline(kernel.pipeline);
      this.#passPipeline = kernel.pipeline;
    }
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(d.grid[0], d.grid[1] ?? 1, d.grid[2] ?? 1);
    this.#stats.dispatches++;
    if (profiled) this.#endPass();
  }

  /**
   * Records a buffer copy of `bytes` (default: all of `src`) from byte `srcOffset` of `src` to byte
   * `dstOffset` of `dst`; offsets and sizes must be multiples of 4.
   */
  copy(
    src: Tensor,
    dst: Tensor,
    options: { srcOffset?: number; dstOffset?: number; bytes?: number } = {},
  ): void {
    const srcOffset = (options.srcOffset ?? 0) + src.byteOffset;
    const dstOffset = (options.dstOffset ?? 0) + dst.byteOffset;
    const bytes = options.bytes ?? Math.ceil(src.byteSize / 4) * 4;
    if ((srcOffset | dstOffset | bytes) % 4 !== 0) {
      throw new Error(`denoise: copy offsets and size must be multiples of 4 bytes`);
    }
    if (srcOffset + bytes > src.buffer.size || dstOffset + bytes > dst.buffer.size) {
      throw new Error(`denoise: copy of ${bytes} bytes runs past the end of a tensor`);
    }
    this.#endPass();
    this.#encoder ??= this.device.createCommandEncoder();
    this.#encoder.copyBufferToBuffer(src.buffer, srcOffset, dst.buffer, dstOffset, bytes);
  }

  /** Submits everything recorded; rejects with the error if a kernel failed to compile. */
  async flush(label = "submit"): Promise<void> {
    const checks = this.#pending.splice(0);
    const errors = (await Promise.all(checks)).filter((e): e is string => e !== undefined);
    if (errors.length > 0) {
      this.discard();
      throw new Error(errors.join("\n"));
    }
    const queries = this.#submittedQueries.splice(0);
    const profiled = this.profiler && !this.gpu.hasTimestamps ? this.profiler : null;
    const t0 = performance.now();
    const submitted = this.#encoder !== null;
    if (submitted) queries.push(...this.#submitRecorded());
    const gpuErrors = (await Promise.all(this.#submitErrors.splice(0))).flat();
    if (gpuErrors.length > 0) {
      for (const q of queries) q.set.destroy();
      throw new Error(
        `denoise: the GPU refused the work submitted as "${label}": ${gpuErrors.join("; ")}`,
      );
    }
    if (profiled && submitted) {
      profiled.mode = "wall";
      await this.#wait(this.device.queue.onSubmittedWorkDone());
      profiled.add({ label, kernel: "submit", ms: performance.now() - t0 });
    }
    if (queries.length > 0) await this.#readQueries(queries);
  }

  /**
   * Drops everything recorded since the last submit (nothing of it reaches the GPU): for a step
   * abandoned after an abort. Tensors allocated meanwhile stay valid objects; free them as usual.
   */
  discard(): void {
    this.#pass?.end();
    this.#pass = null;
    this.#passPipeline = null;
    this.#encoder = null;
    for (const q of this.#queries) q.set.destroy();
    this.#queries = [];
    this.#staging.reset();
  }

  /**
   * Waits until the GPU has finished the work submitted so far, letting the event loop run: it
   * sleeps on a timer for as long as earlier batches of the same `kind` took and blocks only for
   * the rest (see `pacer.ts`: in Deno every GPU wait blocks the thread). Work recorded but not yet
   * submitted stays recorded, so a step can be recorded while the GPU runs the previous one and
   * submitted after this. `signal` ends the sleep early, leaving the GPU possibly still busy.
   *
   * @example
   * ```ts
   * import { Runtime } from "@denoise/sd/gpu";
   * const rt = await Runtime.create();
   * const x = rt.upload(new Float32Array(1024), [1024]);
   * await rt.flush();
   * await rt.idle("upload");
   * x.dispose();
   * ```
   */
  async idle(kind: string, signal?: AbortSignal): Promise<void> {
    await this.#pacer.settle(this.device, kind, signal);
  }

  /** What the last {@link Runtime.idle} did: milliseconds asleep and blocked. */
  get pacing(): { sleptMs: number; blockedMs: number } {
    return { sleptMs: this.#pacer.lastSleptMs, blockedMs: this.#pacer.lastBlockedMs };
  }

  /** Submits and waits until the GPU has finished all work. */
  async sync(): Promise<void> {
    await this.flush();
    await this.#wait(this.device.queue.onSubmittedWorkDone());
    this.#pacer.reset();
  }

  /** Copies a tensor to the CPU as float32 (submitting pending work first). */
  async read(t: Tensor): Promise<Float32Array> {
    const bytes = Math.ceil(t.byteSize / 4) * 4;
    const staging = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#endPass();
    this.#encoder ??= this.device.createCommandEncoder();
    this.#encoder.copyBufferToBuffer(t.buffer, t.byteOffset, staging, 0, bytes);
    await this.flush();
    await this.#wait(staging.mapAsync(GPUMapMode.READ));
    this.#pacer.reset(); // the map waited for everything submitted
    const raw = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    if (t.dtype === "f32") return new Float32Array(raw, 0, t.size);
    return Float32Array.from(new Float16Array(raw, 0, t.size));
  }

  /** Frees pooled buffers; in-use tensors stay valid. */
  trim(): void {
    this.pool.trim();
    this.#bindGroups.clear();
  }

  #beginPass(): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    this.#encoder ??= this.device.createCommandEncoder();
    this.#pass = this.#encoder.beginComputePass();
    this.#passPipeline = null;
    return this.#pass;
  }

  /** A pass of its own for one dispatch, with timestamps around it. */
  #beginProfiledPass(label: string, kernel: string): GPUComputePassEncoder {
    this.#endPass();
    this.#encoder ??= this.device.createCommandEncoder();
    this.profiler!.mode = "gpu";
    let q = this.#queries.at(-1);
    if (!q || q.labels.length * 2 >= QUERY_SET_SIZE) {
      q = {
        set: this.device.createQuerySet({ type: "timestamp", count: QUERY_SET_SIZE }),
        labels: [],
      };
      this.#queries.push(q);
    }
    const i = q.labels.length;
    q.labels.push({ label, kernel });
    this.#pass = this.#encoder.beginComputePass({
      timestampWrites: {
        querySet: q.set,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
    this.#passPipeline = null;
    return this.#pass;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
    this.#passPipeline = null;
  }

  /** The bind group of a dispatch: from the cache, or created (and cached). */
  #bindGroup(kernel: CompiledKernel, d: Dispatch): GPUBindGroup {
    let layout = this.#layouts.get(kernel);
    if (!layout) {
      layout = { layout: kernel.pipeline.getBindGroupLayout(0), id: this.#layoutIds++ };
      this.#layouts.set(kernel, layout);
    }
    const slot = d.uniforms ? this.#uniforms.slot(d.uniforms, this.recorder.reuseUniforms) : null;
    const cache = this.recorder.cacheBindGroups ? this.#bindGroups : null;
    const key = this.#key;
    let n = 0;
    if (cache) {
      key[n++] = layout.id;
      key[n++] = slot ? slot.id : -1;
      for (const b of d.bindings) {
        if (b instanceof Tensor) {
          key[n++] = cache.bufferId(b.buffer);
          key[n++] = b.byteOffset;
          key[n++] = b.byteSize;
        } else key[n++] = cache.bufferId(b);
      }
      const hit = cache.get(key, n);
      if (hit) return hit;
    }
    const entries: GPUBindGroupEntry[] = [];
    if (slot) {
      entries.push({
        binding: 0,
        resource: { buffer: slot.buffer, offset: slot.offset, size: slot.size },
      });
    }
    for (let i = 0; i < d.bindings.length; i++) {
      const b = d.bindings[i];
      if (!(b instanceof Tensor)) {
        entries.push({ binding: i + 1, resource: { buffer: b, size: b.size } });
        continue;
      }
      if (b.byteOffset % this.gpu.limits.minStorageBufferOffsetAlignment !== 0) {
        throw new Error(
          `denoise: ${labelOf(d)}: a view of [${b.shape}] starts at byte ` +
            `${b.byteOffset}, not a multiple of this GPU's minStorageBufferOffsetAlignment ` +
            `(${this.gpu.limits.minStorageBufferOffsetAlignment}); copy it to a tensor of its own`,
        );
      }
      const size = Math.ceil(b.byteSize / 4) * 4;
      entries.push({ binding: i + 1, resource: { buffer: b.buffer, offset: b.byteOffset, size } });
    }
    const group = this.device.createBindGroup({ layout: layout.layout, entries });
    this.#stats.bindGroups++;
    cache?.set(key, n, group);
    return group;
  }

  #submitRecorded(): QueryBatch[] {
    this.#endPass();
    const encoder = this.#encoder!;
    this.#encoder = null;
    const queries = this.#queries.splice(0);
    const resolved: QueryBatch[] = [];
    for (const q of queries) {
      const buf = this.device.createBuffer({
        size: q.labels.length * 16,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      encoder.resolveQuerySet(q.set, 0, q.labels.length * 2, buf, 0);
      q.resolve = buf;
      resolved.push(q);
    }
    this.#uniforms.upload(this.device.queue);
    this.#staging.upload(this.device.queue);
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    this.device.queue.submit([encoder.finish()]);
    this.#stats.submits++;
    this.#pacer.submitted();
    this.#uniforms.submitted(this.recorder.reuseUniforms);
    this.#staging.reset();
    const validation = this.device.popErrorScope();
    const memory = this.device.popErrorScope();
    this.#submitErrors.push(
      Promise.all([validation, memory]).then(([v, m]) =>
        [v, m].filter((e): e is GPUError => e !== null).map((e) => e.message)
      ),
    );
    return resolved;
  }

  async #readQueries(queries: QueryBatch[]) {
    for (const q of queries) {
      const src = q.resolve!;
      const staging = this.device.createBuffer({
        size: src.size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, 0, staging, 0, src.size);
      this.device.queue.submit([enc.finish()]);
      await this.#wait(staging.mapAsync(GPUMapMode.READ));
      const ts = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      q.labels.forEach((l, i) => {
        const ns = Number(ts[2 * i + 1] - ts[2 * i]);
        this.profiler?.add({ ...l, ms: Math.max(ns, 0) / 1e6 });
      });
      staging.destroy();
      src.destroy();
      q.set.destroy();
    }
  }

  async #wait<T>(p: Promise<T>): Promise<T> {
    const lost = this.device.lost.then((info) => {
      throw new Error(
        `denoise: the GPU device was lost (${info.reason}: ${info.message}); create a new runtime`,
      );
    });
    return await Promise.race([p, lost]);
  }
}

function labelOf(d: Dispatch): string {
  return typeof d.label === "function" ? d.label() : d.label ?? d.key.kernel;
}

/** Converts host data to the storage type of `dtype` (bf16 and f16 bits are decoded). */
function convertHost(
  data: Float32Array | Float16Array | Uint16Array,
  dtype: DType,
  bits: "f16" | "bf16",
): Float32Array | Float16Array {
  let src: Float32Array | Float16Array;
  if (data instanceof Uint16Array) {
    if (bits === "bf16") {
      const f = new Float32Array(data.length);
      const u = new Uint32Array(f.buffer);
      for (let i = 0; i < data.length; i++) u[i] = data[i] << 16;
      src = f;
    } else {
      src = new Float16Array(data.buffer, data.byteOffset, data.length);
    }
  } else {
    src = data;
  }
  if (dtype === "f32") return src instanceof Float32Array ? src : Float32Array.from(src);
  return src instanceof Float16Array ? src : Float16Array.from(src);
}
