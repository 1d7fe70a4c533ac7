/**
 * The table `gpu_suite.sh` ends with: denoise beside PyTorch's diffusers on the same adapter, read
 * from the suite's JSON reports (`unet_*.json` of `unet_step.ts`, `peer_*.json` of
 * `torch_peer.py`, `pipeline_512.json` of `pipeline.ts`, `adapter.json` of `gpu_adapter.ts`), with
 * the goals beside the measured values. A report that is missing shows as `–`.
 *
 * usage: deno run -A bench/gpu_summary.ts DIR
 *
 * @module
 */

/** One row of the summary: what, denoise's value, PyTorch's, the goal. */
export interface SummaryRow {
  /** What is measured. */
  what: string;
  /** denoise's value, formatted, or `–`. */
  denoise: string;
  /** PyTorch's value, formatted, or `–`. */
  torch: string;
  /** The goal or the ratio, as text. */
  note: string;
}

type Json = Record<string, unknown>;

async function readJson(path: string): Promise<Json | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return undefined;
  }
}

const get = (o: Json | undefined, ...path: (string | number)[]): number | undefined => {
  let v: unknown = o;
  for (const k of path) v = (v as Record<string | number, unknown> | undefined)?.[k];
  return typeof v === "number" ? v : undefined;
};
const fmt = (v: number | undefined, digits = 1, unit = "") =>
  v === undefined ? "–" : `${v.toFixed(digits)}${unit}`;
const ratio = (a: number | undefined, b: number | undefined) =>
  a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}× PyTorch` : "";

/**
 * The summary rows from the JSON reports in `dir`.
 *
 * @example
 * ```ts
 * import { summarize } from "./gpu_summary.ts";
 * for (const r of await summarize("out/gpu/gpu_suite")) console.log(r.what, r.denoise, r.torch);
 * ```
 */
export async function summarize(dir: string): Promise<SummaryRow[]> {
  const [sd15, sd21, p15, p21, pipe] = await Promise.all(
    ["unet_sd15_f16_b2", "unet_sd21_768_b2", "peer_sd15", "peer_sd21", "pipeline_512"].map((n) =>
      readJson(`${dir}/${n}.json`)
    ),
  );
  const rows: SummaryRow[] = [];
  const step = (what: string, d: Json | undefined, t: Json | undefined, goal: string) => {
    const dm = get(d, "step", "medianMs"), tm = get(t, "unet_step_ms_median");
    rows.push({ what, denoise: fmt(dm, 2, " ms"), torch: fmt(tm, 2, " ms"), note: goal });
    rows.push({
      what: "  effective TFLOP/s",
      denoise: fmt(get(d, "tflops")),
      torch: fmt(get(t, "unet_tflops")),
      note: ratio(dm, tm),
    });
    const peak = get(d, "memory", "peakBytes");
    rows.push({
      what: "  peak memory, U-Net alone",
      denoise: fmt(peak === undefined ? undefined : peak / 2 ** 30, 2, " GiB"),
      torch: fmt(get(t, "peak_mem_gb_unet"), 2, " GiB"),
      note: "",
    });
  };
  step("SD 1.5 512² CFG step (f16, batch 2)", sd15, p15, "goal < 40 ms and ≤ 1.5× PyTorch");
  step("SD 2.1 768² CFG step (f16, batch 2)", sd21, p21, "");
  const runs = (pipe?.runs ?? []) as Json[];
  const warm = runs.filter((r, i) => i > 0 && r.synced !== false);
  const free = runs.filter((r) => r.synced === false);
  const best = (rs: Json[], k: string) =>
    rs.length ? Math.min(...rs.map((r) => get(r, k) ?? Infinity)) : undefined;
  const decode = best(warm.length ? warm : runs, "decodeMs");
  rows.push({
    what: "VAE decode 512² (f16)",
    denoise: fmt(decode, 1, " ms"),
    torch: fmt(get(p15, "vae_decode_ms_median"), 1, " ms"),
    note: ratio(decode, get(p15, "vae_decode_ms_median")),
  });
  rows.push({
    what: "20-step 512² image, end to end",
    denoise: fmt(best(free.length ? free : warm, "totalMs"), 0, " ms"),
    torch: "–",
    note: `goal < 1500 ms (${free.length ? "free run" : "steps synced"})`,
  });
  const peak = get(pipe, "peakBytes");
  rows.push({
    what: "peak memory, whole pipeline",
    denoise: fmt(peak === undefined ? undefined : peak / 2 ** 30, 2, " GiB"),
    torch: fmt(get(p15, "peak_mem_gb_total"), 2, " GiB"),
    note: "goal < 2.5 GB (PyTorch: U-Net + VAE only)",
  });
  return rows;
}

/**
 * The rows as a text table, under the adapter's name.
 *
 * @example
 * ```ts
 * import { formatSummary, summarize } from "./gpu_summary.ts";
 * console.log(formatSummary(await summarize("out/gpu/gpu_suite"), "NVIDIA H100"));
 * ```
 */
export function formatSummary(rows: SummaryRow[], adapter: string): string {
  const head: SummaryRow = { what: "", denoise: "denoise", torch: "PyTorch", note: "" };
  const all = [head, ...rows];
  const w = (k: keyof SummaryRow) => Math.max(...all.map((r) => r[k].length));
  const line = (r: SummaryRow) =>
    `${r.what.padEnd(w("what"))}  ${r.denoise.padStart(w("denoise"))}  ` +
    `${r.torch.padStart(w("torch"))}  ${r.note}`.trimEnd();
  return [`denoise beside PyTorch on ${adapter}`, ...all.map(line)].join("\n");
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno run -A bench/gpu_summary.ts DIR");
    Deno.exit(2);
  }
  const adapter = await readJson(`${dir}/adapter.json`);
  const name = (adapter?.device as Json | undefined)?.adapterName;
  console.log(formatSummary(await summarize(dir), typeof name === "string" ? name : "?"));
}
