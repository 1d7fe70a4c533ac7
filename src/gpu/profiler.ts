/**
 * The profiler: per-dispatch GPU times from timestamp queries when the device has
 * `timestamp-query`, otherwise wall-clock time per submit. Reports as a table or JSON.
 *
 * @module
 */

/** One timed entry: a labelled dispatch (GPU time) or a submit (wall clock). */
export interface ProfileEntry {
  /** The op label, for example `conv2d [2,320,64,64]`. */
  label: string;
  /** The kernel family (template stem), or `submit` for wall-clock entries. */
  kernel: string;
  /** Milliseconds. */
  ms: number;
}

/** Per-label aggregate of a profile. */
export interface ProfileRow {
  /** The op label. */
  label: string;
  /** The kernel family. */
  kernel: string;
  /** How many times it ran. */
  count: number;
  /** Total milliseconds. */
  totalMs: number;
  /** Share of all time, 0–1. */
  share: number;
}

/**
 * Collects timings; attach it with `runtime.profiler = new Profiler()`.
 *
 * @example
 * ```ts
 * import { Profiler } from "@denoise/sd/gpu";
 * const p = new Profiler();
 * p.add({ label: "silu [8]", kernel: "elementwise", ms: 0.1 });
 * console.log(p.table());
 * ```
 */
export class Profiler {
  /** Every entry in the order recorded. */
  readonly entries: ProfileEntry[] = [];
  /** `gpu` when entries are per-dispatch timestamps, `wall` when they are per submit. */
  mode: "gpu" | "wall" = "gpu";

  /** Adds an entry. */
  add(entry: ProfileEntry): void {
    this.entries.push(entry);
  }

  /** Forgets every entry. */
  clear(): void {
    this.entries.length = 0;
  }

  /** Total milliseconds over every entry. */
  get totalMs(): number {
    return this.entries.reduce((s, e) => s + e.ms, 0);
  }

  /** Entries aggregated by label, longest total first. */
  rows(): ProfileRow[] {
    const map = new Map<string, ProfileRow>();
    for (const e of this.entries) {
      let r = map.get(e.label);
      if (!r) {
        map.set(e.label, r = { label: e.label, kernel: e.kernel, count: 0, totalMs: 0, share: 0 });
      }
      r.count++;
      r.totalMs += e.ms;
    }
    const total = this.totalMs || 1;
    const rows = [...map.values()];
    for (const r of rows) r.share = r.totalMs / total;
    return rows.sort((a, b) => b.totalMs - a.totalMs);
  }

  /** A fixed-width text table of the top `limit` rows. */
  table(limit = 30): string {
    const rows = this.rows().slice(0, limit);
    const w = Math.max(5, ...rows.map((r) => r.label.length));
    const head = `${"op".padEnd(w)}  ${"kernel".padEnd(12)} ${"count".padStart(6)} ${
      "total ms".padStart(10)
    } ${"avg ms".padStart(9)} ${"share".padStart(6)}`;
    const lines = rows.map((r) =>
      `${r.label.padEnd(w)}  ${r.kernel.padEnd(12)} ${String(r.count).padStart(6)} ${
        r.totalMs.toFixed(3).padStart(10)
      } ${(r.totalMs / r.count).toFixed(4).padStart(9)} ${(r.share * 100).toFixed(1).padStart(5)}%`
    );
    const mode = this.mode === "gpu" ? "GPU timestamps per dispatch" : "wall clock per submit";
    return [`profile (${mode}), total ${this.totalMs.toFixed(3)} ms`, head, ...lines].join("\n");
  }

  /** A JSON-ready summary. */
  toJSON(): { mode: string; totalMs: number; rows: ProfileRow[] } {
    return { mode: this.mode, totalMs: this.totalMs, rows: this.rows() };
  }
}
