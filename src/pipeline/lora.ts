/**
 * LoRA on a loaded pipeline: any number of LoRAs, each with its own weight (separately for the
 * text encoder and the U-Net, as A1111's `<lora:name:te:unet>`), merged into the weights on the GPU
 * as W' = W + Σ weight·(alpha/rank)·up·down — conv layers through the `[out, in·k·k]` view, as
 * diffusers and A1111 do. Switching LoRAs or weights needs no reload: the first time a weight is
 * adapted its original bytes are kept on the host (as A1111 does), and every change recomputes W'
 * from them (one GEMM per layer, all LoRAs of a layer in one product, one rounding), so weight 0 or
 * removing a LoRA gives back the base weights bit for bit.
 *
 * Merging is chosen over on-the-fly adapters (two extra GEMMs per adapted layer in every U-Net
 * call): at SD 1.5 size on llvmpipe a rank-32 LoRA's switch cost 50 s once, while on the fly it
 * added 102 s to every 512² CFG call (45 GFLOP, 384 dispatches) — a switch pays for itself within
 * half a U-Net call (`bench/lora.ts`).
 *
 * @module
 */
import type { Runtime } from "../gpu/runtime.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { linear } from "../ops/gemm.ts";
import {
  loadLora,
  type Lora,
  type LoraFactor,
  type LoraModelInfo,
  matchLora,
} from "../weights/lora.ts";
import type { Pipeline } from "./load.ts";

/**
 * A LoRA to apply, with its weight: `{ lora, weight: 0.8 }`; `te` and `unet` override the weight
 * for the text encoder and the U-Net (A1111's `<lora:name:te:unet>`).
 *
 * @example
 * ```ts no-run
 * import { applyLoras, loadLora, loadPipeline, type LoraSpec } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15.safetensors", { tokenizer: "bpe_simple_vocab_16e6.txt.gz" });
 * const specs: LoraSpec[] = [{ lora: await loadLora("loras/style.safetensors"), weight: 0.7 }];
 * await applyLoras(pipe, specs);
 * ```
 */
export interface LoraSpec {
  /** A loaded LoRA, or the path of a `.safetensors` LoRA. */
  lora: Lora | string;
  /** The multiplier of both parts (default 1). */
  weight?: number;
  /** The text encoder's multiplier (default: `weight`). */
  te?: number;
  /** The U-Net's multiplier (default: `te`, as A1111). */
  unet?: number;
  /** The name infotexts record (default: the file name); A1111 records the name the prompt used. */
  name?: string;
}

/** A LoRA as applied: loaded, with its resolved multipliers. */
export interface ActiveLora {
  /** The LoRA. */
  lora: Lora;
  /** The text encoder's multiplier. */
  te: number;
  /** The U-Net's multiplier. */
  unet: number;
  /** The name infotexts record. */
  name: string;
}

/** A contribution to one weight: `scale · up · down`. */
export interface LoraContribution {
  /** `[rank, in]` or `[rank, in, k, k]`. */
  down: LoraFactor;
  /** `[out, rank]` or `[out, rank, 1, 1]`. */
  up: LoraFactor;
  /** multiplier · alpha / rank. */
  scale: number;
}

interface LoraState {
  /** Original bytes of every weight that is currently adapted, by `component:key`. */
  backups: Map<string, Uint8Array>;
  /** What is merged into each adapted weight (a signature of its contributions). */
  merged: Map<string, string>;
  /** The LoRAs applied by `applyLoras` / `loadPipeline` (prompt tags come on top). */
  pinned: ActiveLora[];
  /** The set merged now. */
  active: ActiveLora[];
  /** Resolved matches by LoRA id. */
  matches: Map<number, ReturnType<typeof matchLora>>;
  /** Loaded files by path, with their modification time. */
  files: Map<string, { mtime: number; lora: Lora }>;
  /** The shapes LoRAs are matched against. */
  info: LoraModelInfo;
}

const states = new WeakMap<Pipeline, LoraState>();

function stateOf(pipe: Pipeline): LoraState {
  let s = states.get(pipe);
  if (s === undefined) {
    const shapes = (params: ReadonlyMap<string, Tensor>) =>
      new Map([...params].map(([k, t]) => [k, t.shape]));
    s = {
      backups: new Map(),
      merged: new Map(),
      pinned: [],
      active: [],
      matches: new Map(),
      files: new Map(),
      info: {
        unet: shapes(pipe.unet.params),
        textEncoder: shapes(pipe.textEncoder.params),
        unetConfig: pipe.configs.unet,
      },
    };
    states.set(pipe, s);
  }
  return s;
}

/**
 * Records `W ← base + Σ scale·up·down` for one weight (`[out, in]` or `[out, in, k, k]`, viewed as
 * `[out, in·k·k]`): the contributions are concatenated along the rank so all LoRAs of a layer are
 * one GEMM (`linear` with `base` as the residual, f32 accumulation, one rounding to the weight's
 * dtype). `base` has the weight's shape and dtype and must not be the weight itself.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { mergeLoraInto } from "@denoise/sd/pipeline";
 * const rt = await Runtime.create();
 * const base = rt.upload(new Float32Array(6), [2, 3]);
 * const weight = rt.empty([2, 3]);
 * mergeLoraInto(weight, base, [{
 *   down: { shape: [1, 3], data: new Float32Array([1, 2, 3]) },
 *   up: { shape: [2, 1], data: new Float32Array([1, -1]) },
 *   scale: 0.5,
 * }]);
 * console.log(await weight.read()); // [0.5, 1, 1.5, -0.5, -1, -1.5]
 * ```
 */
export function mergeLoraInto(weight: Tensor, base: Tensor, parts: LoraContribution[]): void {
  const out = weight.shape[0], cols = weight.size / out;
  const rank = parts.reduce((a, p) => a + p.down.shape[0], 0);
  const upCat = new Float32Array(out * rank); // [out, R], columns scaled
  const downT = new Float32Array(cols * rank); // [in·k·k, R]
  let at = 0;
  for (const { down, up, scale } of parts) {
    const r = down.shape[0];
    if (up.data.length !== out * r || down.data.length !== r * cols) {
      throw new Error(
        `denoise: LoRA factors down [${down.shape}] and up [${up.shape}] do not fit the ` +
          `weight [${weight.shape}]`,
      );
    }
    for (let o = 0; o < out; o++) {
      for (let j = 0; j < r; j++) upCat[o * rank + at + j] = scale * up.data[o * r + j];
    }
    for (let j = 0; j < r; j++) {
      for (let c = 0; c < cols; c++) downT[c * rank + at + j] = down.data[j * cols + c];
    }
    at += r;
  }
  const rt = weight.rt, dtype = weight.dtype;
  const x = rt.upload(upCat, [out, rank], { dtype }); // [out, R]
  const w = rt.upload(downT, [cols, rank], { dtype }); // [in·k·k, R]
  linear(x, w, { residual: base.reshape([out, cols]), out: weight.reshape([out, cols]) }); // [out, in·k·k]
  x.dispose();
  w.dispose();
}

async function resolveSpec(state: LoraState, spec: LoraSpec): Promise<ActiveLora> {
  const lora = typeof spec.lora === "string" ? await loadCached(state, spec.lora) : spec.lora;
  const weight = spec.weight ?? 1;
  const te = spec.te ?? weight;
  const unet = spec.unet ?? te;
  for (const [what, v] of [["weight", weight], ["te", te], ["unet", unet]] as const) {
    if (!Number.isFinite(v)) {
      throw new Error(`LoRA ${lora.name}: ${what} must be a number, got ${v}`);
    }
  }
  return { lora, te, unet, name: spec.name ?? lora.name };
}

/** Loads a LoRA file, reusing an earlier load while the file is unchanged. */
async function loadCached(state: LoraState, path: string): Promise<Lora> {
  const stat = await Deno.stat(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) throw new Error(`LoRA ${path} does not exist`);
    throw e;
  });
  const mtime = stat.mtime?.getTime() ?? 0;
  const hit = state.files.get(path);
  if (hit !== undefined && hit.mtime === mtime) return hit.lora;
  const lora = await loadLora(path);
  state.files.set(path, { mtime, lora });
  return lora;
}

/** Options for {@link applyLoras}. */
export interface ApplyLorasOptions {
  /** Called once per LoRA with the module names and keys that match nothing (default: `console.warn`). */
  onUnmatched?: (lora: Lora, unmatched: string[]) => void;
}

/**
 * Sets the LoRAs of a pipeline: exactly `specs` are merged afterwards (an empty list restores the
 * base model). LoRAs named in a prompt (`<lora:name:weight>`) are added on top of these for that
 * prompt. Only the weights whose contributions change are recomputed. Returns the applied set.
 *
 * @example
 * ```ts no-run
 * import { applyLoras, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15");
 * await applyLoras(pipe, [{ lora: "loras/style.safetensors", weight: 0.8 }]);
 * await applyLoras(pipe, []); // back to the base weights, exactly
 * ```
 */
export async function applyLoras(
  pipe: Pipeline,
  specs: readonly LoraSpec[],
  options: ApplyLorasOptions = {},
): Promise<ActiveLora[]> {
  const state = stateOf(pipe);
  const active = await Promise.all(specs.map((s) => resolveSpec(state, s)));
  await mergeSet(pipe, active, options);
  state.pinned = active;
  return active;
}

/**
 * Merges the pipeline's LoRAs (`applyLoras`) plus `extra` (a prompt's) and returns that set: what
 * `encodePrompt` records in its result.
 *
 * @example
 * ```ts no-run
 * import { activateLoras } from "@denoise/sd/pipeline";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15");
 * const set = await activateLoras(pipe, [{ lora: "loras/ink.safetensors", weight: 0.6 }]);
 * ```
 */
export async function activateLoras(
  pipe: Pipeline,
  extra: readonly LoraSpec[],
  options: ApplyLorasOptions = {},
): Promise<ActiveLora[]> {
  if (extra.length === 0 && !states.has(pipe)) return []; // no LoRA was ever applied
  const state = stateOf(pipe);
  const added = await Promise.all(extra.map((s) => resolveSpec(state, s)));
  const active = [...state.pinned, ...added];
  await mergeSet(pipe, active, options);
  return active;
}

/**
 * The LoRAs merged into the pipeline now.
 *
 * @example
 * ```ts no-run
 * import { activeLoras, loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { loras: [{ lora: "loras/ink.safetensors" }] });
 * console.log(activeLoras(pipe).map((l) => `${l.name}: ${l.unet}`)); // ["ink: 1"]
 * ```
 */
export function activeLoras(pipe: Pipeline): readonly ActiveLora[] {
  return states.get(pipe)?.active ?? [];
}

/**
 * Makes the merged set equal `active` (a no-op when it already is): `sampleLatents` calls it with
 * the set its prompt embeddings were made with.
 *
 * @example
 * ```ts no-run
 * import { syncLoras } from "@denoise/sd/pipeline";
 * import { encodePrompt } from "@denoise/sd";
 * import { loadPipeline } from "@denoise/sd";
 * const pipe = await loadPipeline("models/sd15", { loraDir: "loras/" });
 * const embeds = await encodePrompt(pipe, "a fox <lora:ink:1>");
 * await syncLoras(pipe, embeds.loras ?? []);
 * ```
 */
export async function syncLoras(pipe: Pipeline, active: readonly ActiveLora[]): Promise<void> {
  if (active.length === 0 && !states.has(pipe)) return;
  await mergeSet(pipe, active, {});
}

/** The contributions of `active` to every adapted weight, by `component:key`. */
function contributions(
  state: LoraState,
  active: readonly ActiveLora[],
  options: ApplyLorasOptions,
): Map<string, { parts: LoraContribution[]; signature: string }> {
  const out = new Map<string, { parts: LoraContribution[]; signature: string }>();
  for (const a of active) {
    let match = state.matches.get(a.lora.id);
    if (match === undefined) {
      match = matchLora(a.lora, state.info);
      state.matches.set(a.lora.id, match);
      if (match.unmatched.length > 0) {
        (options.onUnmatched ?? warnUnmatched)(a.lora, match.unmatched);
      }
    }
    for (const t of match.targets) {
      const multiplier = t.component === "unet" ? a.unet : a.te;
      if (multiplier === 0) continue;
      const m = t.module;
      const scale = multiplier * (m.alpha === undefined ? 1 : m.alpha / m.rank);
      const id = `${t.component}:${t.key}`;
      const entry = out.get(id) ?? { parts: [], signature: "" };
      entry.parts.push({ down: m.down, up: m.up, scale });
      entry.signature += `${a.lora.id}:${m.name}:${scale};`;
      out.set(id, entry);
    }
  }
  return out;
}

function warnUnmatched(lora: Lora, unmatched: string[]): void {
  const shown = unmatched.slice(0, 8).join(", ");
  const more = unmatched.length > 8 ? ` and ${unmatched.length - 8} more` : "";
  console.warn(
    `denoise: LoRA ${lora.name}: ${unmatched.length} entries match no layer of this model and ` +
      `are not applied: ${shown}${more}`,
  );
}

async function mergeSet(
  pipe: Pipeline,
  active: readonly ActiveLora[],
  options: ApplyLorasOptions,
): Promise<void> {
  const state = stateOf(pipe);
  const wanted = contributions(state, active, options);
  const weightOf = (id: string) => {
    const [component, key] = id.split(/:(.*)/s);
    return (component === "unet" ? pipe.unet : pipe.textEncoder).params.get(key)!;
  };
  const changed = [...new Set([...state.merged.keys(), ...wanted.keys()])]
    .filter((id) => state.merged.get(id) !== wanted.get(id)?.signature);
  const fresh = changed.filter((id) => !state.backups.has(id));
  const bytes = await readBytes(pipe.rt, fresh.map(weightOf));
  fresh.forEach((id, i) => state.backups.set(id, bytes[i]));
  for (const id of changed) {
    const want = wanted.get(id);
    const weight = weightOf(id);
    const backup = state.backups.get(id)!;
    const host = weight.dtype === "f16"
      ? new Uint16Array(backup.buffer, backup.byteOffset, backup.byteLength / 2)
      : new Float32Array(backup.buffer, backup.byteOffset, backup.byteLength / 4);
    const base = pipe.rt.upload(host, weight.shape, { dtype: weight.dtype });
    if (want === undefined) {
      pipe.rt.copy(base, weight);
      state.merged.delete(id);
      state.backups.delete(id); // the weight holds its original values again
    } else {
      mergeLoraInto(weight, base, want.parts);
      state.merged.set(id, want.signature);
    }
    base.dispose();
  }
  state.active = [...active];
  if (changed.length > 0) await pipe.rt.flush("LoRA merge");
}

/** Bytes read back per staging buffer. */
const READ_CHUNK = 64 << 20;

/**
 * The stored bytes of many tensors (f16 stays f16: no widening and narrowing per element), read
 * back through a few large staging buffers after the recorded work is submitted.
 */
async function readBytes(rt: Runtime, tensors: Tensor[]): Promise<Uint8Array[]> {
  if (tensors.length === 0) return [];
  await rt.flush("LoRA backup");
  const out: Uint8Array[] = [];
  for (let i = 0; i < tensors.length;) {
    const group: Tensor[] = [];
    let size = 0;
    while (i < tensors.length && (group.length === 0 || size + tensors[i].byteSize <= READ_CHUNK)) {
      size += Math.ceil(tensors[i].byteSize / 4) * 4;
      group.push(tensors[i++]);
    }
    const staging = rt.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = rt.device.createCommandEncoder();
    let at = 0;
    for (const t of group) {
      const n = Math.ceil(t.byteSize / 4) * 4;
      encoder.copyBufferToBuffer(t.buffer, t.byteOffset, staging, at, n);
      at += n;
    }
    rt.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const mapped = new Uint8Array(staging.getMappedRange());
    at = 0;
    for (const t of group) {
      out.push(mapped.slice(at, at + t.byteSize));
      at += Math.ceil(t.byteSize / 4) * 4;
    }
    staging.unmap();
    staging.destroy();
  }
  return out;
}
