/**
 * The checkpoint-loading benchmark: `loadPipeline` on one single-file (or folder) checkpoint in
 * this fresh process, then one prompt encoded and everything disposed. Reports the wall time of
 * each phase, the process's peak resident memory (the larger of `VmHWM` from `/proc/self/status`
 * and `VmRSS` sampled every 10 ms by a worker thread, which keeps sampling while loading blocks
 * the main thread), and the GPU pool's bytes. On a software adapter the "GPU" buffers live in host memory,
 * so the resident set includes the uploaded weights: the host overhead of loading is the peak
 * resident memory minus the pool's bytes.
 *
 * usage: deno run -A bench/load_checkpoint.ts --file /tmp/sd15.safetensors [--dtype f16|f32]
 *   [--tokenizer PATH] [--prompt TEXT] [--json FILE]
 *
 * Make a full-size file first with `bench/make_checkpoint.ts` (outside the repository).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { DType } from "../src/gpu/device.ts";
import type { PoolStats } from "../src/gpu/pool.ts";
import { Runtime } from "../src/gpu/runtime.ts";
import { encodePrompt } from "../src/pipeline/encode.ts";
import { loadPipeline } from "../src/pipeline/load.ts";

const DEFAULT_TOKENIZER = new URL(
  "../../shared/data/clip/bpe_simple_vocab_16e6.txt.gz",
  import.meta.url,
);

/** One load measurement. */
export interface LoadReport {
  /** The checkpoint path. */
  file: string;
  /** Its size in bytes (a folder: 0). */
  fileBytes: number;
  /** The compute dtype the models were loaded in. */
  dtype: DType;
  /** The GPU adapter. */
  adapter: string;
  /** Wall times in milliseconds. */
  ms: { runtime: number; load: number; encode: number; dispose: number };
  /** Resident memory in bytes. */
  rss: {
    /** Before loading (Deno, the GPU runtime and the sampler thread). */
    baseline: number;
    /** The highest `VmRSS` sample. */
    peakSampled: number;
    /** `VmHWM` at the end (the kernel's high-water mark, which may lag `VmRSS` by a few pages). */
    hwm: number;
    /** The peak: the larger of `hwm` and `peakSampled`. */
    peak: number;
    /** Right after `loadPipeline` returned. */
    afterLoad: number;
    /** After `dispose()`. */
    afterDispose: number;
  };
  /** The GPU pool's counters right after loading. */
  pool: PoolStats;
  /** Peak resident memory minus the pool's bytes (host memory the loading itself used). */
  hostOverhead: number;
  /** Unused checkpoint keys per component (the VAE's encoder when only the decoder loads). */
  unused: Record<string, number>;
  /** `[ms since start, VmRSS bytes]` samples, one per 100 ms. */
  timeline: [number, number][];
}

/** Reads one `kB` field of `/proc/self/status` in bytes. */
function procStatus(field: "VmRSS" | "VmHWM"): number {
  const text = Deno.readTextFileSync("/proc/self/status");
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  if (m === null) throw new Error(`/proc/self/status has no ${field}: Linux is required`);
  return Number(m[1]) * 1024;
}

const SAMPLER = `
let samples = [];
const t0 = performance.now();
const rss = () => Number(/^VmRSS:\\s+(\\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"))[1]) * 1024;
const id = setInterval(() => samples.push([performance.now() - t0, rss()]), 10);
self.onmessage = () => { clearInterval(id); samples.push([performance.now() - t0, rss()]); self.postMessage(samples); self.close(); };
`;

/** Starts a worker thread that samples `VmRSS` every 10 ms; `stop()` returns the samples. */
function startSampler(): { stop(): Promise<[number, number][]> } {
  const url = `data:application/javascript,${encodeURIComponent(SAMPLER)}`;
  const worker = new Worker(url, { type: "module" });
  return {
    stop() {
      return new Promise((resolve) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.postMessage("stop");
      });
    },
  };
}

/**
 * Loads `file` with `loadPipeline`, encodes one prompt, disposes, and measures time and memory.
 * Run it once per process: `VmHWM` is the peak of the whole process.
 *
 * @example
 * ```ts
 * import { benchLoadCheckpoint, formatLoadReport } from "./load_checkpoint.ts";
 * const report = await benchLoadCheckpoint("/tmp/sd15-f16.safetensors", { dtype: "f16" });
 * console.log(formatLoadReport(report));
 * ```
 */
export async function benchLoadCheckpoint(
  file: string,
  options: { dtype?: DType; tokenizer?: string; prompt?: string } = {},
): Promise<LoadReport> {
  const sampler = startSampler();
  const t0 = performance.now();
  const rt = await Runtime.create();
  const t1 = performance.now();
  const baseline = procStatus("VmRSS");
  const pipe = await loadPipeline(file, {
    dtype: options.dtype ?? "f16",
    runtime: rt,
    tokenizer: options.tokenizer ?? decodeURIComponent(DEFAULT_TOKENIZER.pathname),
  });
  const t2 = performance.now();
  const afterLoad = procStatus("VmRSS");
  const pool = rt.pool.stats();
  const embeds = await encodePrompt(pipe, options.prompt ?? "a photograph of an astronaut", {
    negativePrompt: "blurry",
  });
  await rt.read(embeds.cond);
  const t3 = performance.now();
  embeds.dispose();
  pipe.dispose();
  await rt.sync();
  const t4 = performance.now();
  const afterDispose = procStatus("VmRSS");
  const samples = await sampler.stop();
  const hwm = procStatus("VmHWM");
  const peakSampled = Math.max(...samples.map((s) => s[1]));
  const peak = Math.max(hwm, peakSampled);
  const info = await Deno.stat(file);
  const timeline: [number, number][] = [];
  for (const s of samples) {
    if (timeline.length === 0 || s[0] - timeline[timeline.length - 1][0] >= 100) timeline.push(s);
  }
  return {
    file,
    fileBytes: info.isFile ? info.size : 0,
    dtype: pipe.dtype,
    adapter: rt.gpu.adapterName,
    ms: { runtime: t1 - t0, load: t2 - t1, encode: t3 - t2, dispose: t4 - t3 },
    rss: {
      baseline,
      peakSampled,
      hwm,
      peak,
      afterLoad,
      afterDispose,
    },
    pool,
    hostOverhead: peak - pool.totalBytes,
    unused: Object.fromEntries(Object.entries(pipe.unused).map(([k, v]) => [k, v.length])),
    timeline,
  };
}

const GB = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

/**
 * Formats a {@link LoadReport} as a table (sizes in GB = 10⁹ bytes, ratios to the file size).
 *
 * @example
 * ```ts
 * import { benchLoadCheckpoint, formatLoadReport } from "./load_checkpoint.ts";
 * console.log(formatLoadReport(await benchLoadCheckpoint("/tmp/sd15.safetensors")));
 * ```
 */
export function formatLoadReport(r: LoadReport): string {
  const ratio = (n: number) => (r.fileBytes > 0 ? ` (${(n / r.fileBytes).toFixed(2)}× file)` : "");
  const rows: [string, string][] = [
    ["file", `${r.file} (${GB(r.fileBytes)})`],
    ["adapter", r.adapter],
    ["dtype", r.dtype],
    ["runtime create", `${(r.ms.runtime / 1000).toFixed(2)} s`],
    ["loadPipeline", `${(r.ms.load / 1000).toFixed(2)} s`],
    ["encode prompt", `${(r.ms.encode / 1000).toFixed(2)} s`],
    ["dispose", `${(r.ms.dispose / 1000).toFixed(2)} s`],
    ["RSS baseline", GB(r.rss.baseline)],
    ["RSS after load", GB(r.rss.afterLoad)],
    ["RSS peak", GB(r.rss.peak) + ratio(r.rss.peak)],
    ["  VmHWM / sampled VmRSS", `${GB(r.rss.hwm)} / ${GB(r.rss.peakSampled)}`],
    ["RSS after dispose", GB(r.rss.afterDispose)],
    ["GPU pool (total)", GB(r.pool.totalBytes)],
    ["host overhead (peak − pool)", GB(r.hostOverhead) + ratio(r.hostOverhead)],
    ["unused keys", Object.entries(r.unused).map(([k, v]) => `${k} ${v}`).join(", ")],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      file: { type: "string" },
      dtype: { type: "string", default: "f16" },
      tokenizer: { type: "string" },
      prompt: { type: "string" },
      json: { type: "string" },
    },
  });
  if (values.file === undefined) {
    throw new Error("--file is required: a single-file checkpoint (see bench/make_checkpoint.ts)");
  }
  if (values.dtype !== "f16" && values.dtype !== "f32") {
    throw new Error(`--dtype must be f16 or f32, got ${values.dtype}`);
  }
  const report = await benchLoadCheckpoint(values.file, {
    dtype: values.dtype,
    tokenizer: values.tokenizer,
    prompt: values.prompt,
  });
  console.log(formatLoadReport(report));
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
}
