/**
 * Strict parameter import onto the GPU. A model's constructor asks a {@link ParamScope} for every
 * parameter by its diffusers key and expected shape; each one is uploaded in the model's dtype, and
 * `finish()` throws one error naming every missing key and wrong shape, and returns the unused keys.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import { keepTensors } from "../gpu/scope.ts";
import type { Runtime } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { LoadedTensor } from "../weights/source.ts";
import { type ShapeMismatch, StrictImportError } from "../weights/strict.ts";

/**
 * Uploads one host tensor (F32, F16 or BF16 bytes, or float32 values) as `dtype`, into a buffer
 * of exactly its size (a parameter lives as long as its model: pool size-class slack would waste
 * up to a quarter of it).
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { uploadLoaded } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const t = uploadLoaded(rt, { shape: [2], dtype: "F32", data: new Float32Array([1, 2]) }, {
 *   dtype: "f32",
 * });
 * ```
 */
export function uploadLoaded(rt: Runtime, t: LoadedTensor, options: { dtype: DType }): Tensor {
  const d = t.data;
  const upload = { dtype: options.dtype, exact: true }; // long-lived: no size-class slack
  if (d instanceof Float32Array) return rt.upload(d, t.shape, upload);
  switch (t.dtype) {
    case "F32":
      return rt.upload(
        new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4),
        t.shape,
        upload,
      );
    case "F16":
      return rt.upload(new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2), t.shape, upload);
    case "BF16":
      return rt.upload(new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2), t.shape, {
        ...upload,
        srcDType: "bf16",
      });
    default:
      throw new Error(`denoise: a ${t.dtype} tensor cannot be a floating-point parameter`);
  }
}

/** Writes one host tensor (F32, F16 or BF16 bytes, or float32 values) into `dst`, converting. */
function writeLoaded(rt: Runtime, dst: Tensor, t: LoadedTensor): void {
  const d = t.data;
  if (d instanceof Float32Array) return rt.write(dst, d);
  switch (t.dtype) {
    case "F32":
      return rt.write(dst, new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4));
    case "F16":
      return rt.write(dst, new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2));
    case "BF16":
      return rt.write(dst, new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2), {
        srcDType: "bf16",
      });
    default:
      throw new Error(`denoise: a ${t.dtype} tensor cannot be a floating-point parameter`);
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Uploaded bytes after which {@link ParamStore} submits the queue. Written data waits in the
 * driver's staging memory until the next submit (and is freed once the GPU has copied it), so
 * without this a whole model's worth of staging copies would pile up in host memory during
 * loading; submitting right after each large tensor keeps only the last few in flight.
 */
const SUBMIT_EVERY_BYTES = 1024 * 1024;

/**
 * The parameters of one component (`unet`, `vae`, `text_encoder`), taken by key. Uploads are
 * submitted every MiB, so the driver's staging copies are recycled while a model loads, and an
 * `owned` host tensor is freed as soon as it is uploaded: with a map that reads each tensor on
 * demand (`openComponent`), host memory stays near a few tensors whatever the model's size.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { ParamStore } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const tensors = new Map([["proj.weight", { shape: [2, 2], dtype: "F32" as const, data: new Float32Array(4) }]]);
 * const store = new ParamStore(rt, tensors, { dtype: "f32", component: "demo" });
 * const w = store.scope("proj").take("weight", [2, 2]);
 * store.finish(); // [] (no unused keys)
 * ```
 */
export class ParamStore {
  readonly #used = new Set<string>();
  readonly #missing: string[] = [];
  readonly #mismatched: ShapeMismatch[] = [];
  readonly #owned: Tensor[] = [];
  readonly #params = new Map<string, Tensor>();
  /** Parts of joined parameters, handed out by `take` (see {@link ParamStore.join}). */
  readonly #joined = new Map<string, Tensor>();
  /** Each joined key's joined tensor and first row (see {@link ParamStore.joinedRows}). */
  readonly #rowOf = new Map<string, { whole: Tensor; row: number; rows: number }>();
  #unsubmitted = 0;
  /** The dtype parameters are uploaded in. */
  readonly dtype: DType;
  /** The component's name, used in errors. */
  readonly component: string;

  /** Wraps the host tensors of one component. */
  constructor(
    readonly rt: Runtime,
    readonly tensors: ReadonlyMap<string, LoadedTensor>,
    options: { dtype: DType; component: string },
  ) {
    this.dtype = options.dtype;
    this.component = options.component;
  }

  /** A scope whose keys start with `prefix.` (or the root with `""`). */
  scope(prefix = ""): ParamScope {
    return new ParamScope(this, prefix);
  }

  /** Takes the parameter `key` of `shape`; a problem is recorded and reported by `finish()`. */
  take(key: string, shape: readonly number[], options: { dtype?: DType } = {}): Tensor {
    const dtype = options.dtype ?? this.dtype;
    const part = this.#joined.get(key);
    if (part && dtype === this.dtype && sameShape(part.shape, shape)) {
      this.#joined.delete(key);
      return part;
    }
    const found = this.tensors.get(key);
    if (!found) {
      this.#missing.push(key);
      return this.#keep(this.rt.empty(shape, dtype));
    }
    this.#used.add(key);
    if (found.shape.length !== shape.length || found.shape.some((d, i) => d !== shape[i])) {
      this.#mismatched.push({ key, expected: [...shape], found: found.shape.slice() });
      return this.#keep(this.rt.empty(shape, dtype));
    }
    const t = uploadLoaded(this.rt, found, { dtype });
    this.#uploaded(found, t.byteSize);
    this.#params.set(key, t);
    return this.#keep(t);
  }

  /**
   * Uploads the parameters `keys` (of `shapes`) one after the other into one buffer, so that one
   * GEMM can read them as the rows of a single weight (q, k and v; every resnet's
   * `time_emb_proj`). Each part stays a parameter under its own key: `take(key)` returns a view of
   * the joined buffer, which LoRA merging writes into like any other. Returns the joined tensor
   * `[Σ rows, …]`, or `undefined` (then `take` uploads each part alone and reports problems as
   * usual) when a part is missing or mis-shaped, or does not end on the GPU's storage offset
   * alignment.
   *
   * @example
   * ```ts no-run
   * import type { ParamStore } from "@denoise/sd/models";
   * declare const store: ParamStore;
   * const qkv = store.join(["to_q.weight", "to_k.weight", "to_v.weight"], [[320, 320], [320, 320], [320, 320]]);
   * ```
   */
  join(keys: string[], shapes: (readonly number[])[]): Tensor | undefined {
    const found = keys.map((k) => this.tensors.get(k));
    const bytes = this.dtype === "f16" ? 2 : 4;
    const align = this.rt.gpu.limits.minStorageBufferOffsetAlignment;
    const inner = shapes[0].slice(1);
    const ok = keys.length > 1 &&
      found.every((f, i) =>
        f !== undefined && sameShape(f.shape, shapes[i]) && sameShape(shapes[i].slice(1), inner) &&
        (shapes[i].reduce((a, b) => a * b, 1) * bytes) % align === 0 && !this.#joined.has(keys[i])
      );
    if (!ok) return undefined;
    const rows = shapes.reduce((a, s) => a + s[0], 0);
    const joined = this.#keep(this.rt.empty([rows, ...inner], this.dtype, { exact: true }));
    let at = 0, row = 0;
    keys.forEach((key, i) => {
      const f = found[i]!;
      const part = joined.view(shapes[i], at);
      at += part.size;
      this.#rowOf.set(key, { whole: joined, row, rows: shapes[i][0] });
      row += shapes[i][0];
      writeLoaded(this.rt, part, f);
      this.#used.add(key);
      this.#uploaded(f, part.byteSize);
      this.#params.set(key, part);
      this.#joined.set(key, part);
    });
    return joined;
  }

  /**
   * Where `keys`, joined one after the other by an earlier {@link ParamStore.join} (for one GEMM
   * over several modules, like every cross-attention's k and v), sit in it: the joined tensor, the
   * row the first key starts at, and a view of their rows; `undefined` when they were not.
   *
   * @example
   * ```ts no-run
   * import type { ParamStore } from "@denoise/sd/models";
   * declare const store: ParamStore;
   * const kv = store.joinedRows(["attn2.to_k.weight", "attn2.to_v.weight"]);
   * console.log(kv?.row, kv?.rows.shape);
   * ```
   */
  joinedRows(keys: string[]): { whole: Tensor; row: number; rows: Tensor } | undefined {
    const first = this.#rowOf.get(keys[0]);
    if (!first) return undefined;
    let rows = 0;
    for (const key of keys) {
      const at = this.#rowOf.get(key);
      if (at?.whole !== first.whole || at.row !== first.row + rows) return undefined;
      rows += at.rows;
    }
    const inner = first.whole.shape.slice(1);
    const size = inner.reduce((a, b) => a * b, 1);
    return { ...first, rows: first.whole.view([rows, ...inner], first.row * size) };
  }

  /**
   * The uploaded parameters by key (what LoRA merging writes into; a model's forward never looks
   * them up by key).
   */
  get params(): ReadonlyMap<string, Tensor> {
    return this.#params;
  }

  /** Host values of a parameter as float32 (for CPU-side use such as embedding tables). */
  hostF32(key: string, shape: readonly number[]): Float32Array {
    const found = this.tensors.get(key);
    if (!found) {
      this.#missing.push(key);
      return new Float32Array(shape.reduce((a, b) => a * b, 1));
    }
    this.#used.add(key);
    if (found.shape.length !== shape.length || found.shape.some((d, i) => d !== shape[i])) {
      this.#mismatched.push({ key, expected: [...shape], found: found.shape.slice() });
      return new Float32Array(shape.reduce((a, b) => a * b, 1));
    }
    const d = found.data;
    if (d instanceof Float32Array) return d;
    if (found.dtype === "F32") {
      return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4).slice();
    }
    const u = new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
    if (found.dtype === "F16") {
      return Float32Array.from(new Float16Array(u.buffer, u.byteOffset, u.length));
    }
    const out = new Float32Array(u.length);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < u.length; i++) bits[i] = u[i] << 16;
    return out;
  }

  /**
   * Ends the import: throws {@link StrictImportError} (freeing what was uploaded) when any key was
   * missing or had the wrong shape; otherwise returns the checkpoint keys nothing used.
   */
  finish(): string[] {
    const unused = [...this.tensors.keys()].filter((k) => !this.#used.has(k));
    if (this.#missing.length > 0 || this.#mismatched.length > 0) {
      this.rt.device.queue.submit([]); // pending writes must not outlive their destroyed buffers
      this.dispose();
      throw new StrictImportError(this.component, {
        missing: this.#missing,
        mismatched: this.#mismatched,
        unused,
      });
    }
    return unused;
  }

  /** Frees every tensor this store uploaded. */
  dispose(): void {
    for (const t of this.#owned) t.dispose();
    this.#owned.length = 0;
    this.#params.clear();
  }

  #uploaded(found: LoadedTensor, bytes: number): void {
    if (found.owned) (found.data.buffer as ArrayBuffer).transfer(0); // free the host copy now
    this.#unsubmitted += bytes;
    if (this.#unsubmitted >= SUBMIT_EVERY_BYTES) {
      this.rt.device.queue.submit([]); // hands the pending writes to the GPU, freeing staging
      this.#unsubmitted = 0;
    }
  }

  #keep(t: Tensor): Tensor {
    this.#owned.push(keepTensors(t)); // a parameter outlives any scope it is loaded in
    return t;
  }
}

/**
 * A key prefix inside a {@link ParamStore}: `scope.child("resnets").child(0).take("weight", …)`
 * takes `resnets.0.weight` under the scope's prefix.
 *
 * @example
 * ```ts no-run
 * import type { ParamStore } from "@denoise/sd/models";
 * declare const store: ParamStore;
 * const norm = store.scope("down_blocks.0").child("resnets").child(0).child("norm1");
 * norm.key("weight"); // "down_blocks.0.resnets.0.norm1.weight"
 * ```
 */
export class ParamScope {
  /** Creates a scope; prefer `store.scope(prefix)`. */
  constructor(readonly store: ParamStore, readonly prefix: string) {}

  /** The full key of `name` in this scope. */
  key(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  /** A nested scope. */
  child(name: string | number): ParamScope {
    return new ParamScope(this.store, this.key(String(name)));
  }

  /** Joins parameters of this scope into one buffer (see {@link ParamStore.join}). */
  join(names: string[], shapes: (readonly number[])[]): Tensor | undefined {
    return this.store.join(names.map((n) => this.key(n)), shapes);
  }

  /** {@link ParamStore.joinedRows} for names of this scope. */
  joinedRows(names: string[]): { whole: Tensor; row: number; rows: Tensor } | undefined {
    return this.store.joinedRows(names.map((n) => this.key(n)));
  }

  /** Takes a parameter of this scope (see {@link ParamStore.take}). */
  take(name: string, shape: readonly number[], options: { dtype?: DType } = {}): Tensor {
    return this.store.take(this.key(name), shape, options);
  }

  /** Whether the checkpoint has `name` in this scope (for optional parameters). */
  has(name: string): boolean {
    return this.store.tensors.has(this.key(name));
  }
}
