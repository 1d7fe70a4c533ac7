/**
 * Text output of the U-Net step benchmark: the report as tables, and the change against an
 * earlier JSON report.
 *
 * @module
 */
import type { UnetStepReport } from "./unet_step.ts";

const GB = 1e9;

/** Right-aligned columns after a left-aligned first one. */
function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), ...rows.map(line)].join("\n");
}

const ms = (v: number) => v.toFixed(v >= 100 ? 1 : v >= 1 ? 2 : 3);
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const tf = (v: number) => v.toFixed(v >= 1 ? 2 : 4);

/**
 * The report as text: step times, TFLOP/s, memory, per-block and per-kernel GPU time.
 *
 * @example
 * ```ts
 * import { Runtime } from "../src/gpu/runtime.ts";
 * import { benchUnetStep } from "./unet_step.ts";
 * import { formatReport } from "./unet_step_report.ts";
 * const rt = await Runtime.create();
 * console.log(formatReport(await benchUnetStep(rt, { arch: "tiny", steps: 2, warmup: 1 })));
 * ```
 */
export function formatReport(r: UnetStepReport): string {
  const f = r.flops;
  const tera = (v: number) => (v / 1e12).toFixed(4);
  const lines = [
    `U-Net step: ${r.model}, ${r.weights} · ${r.res}² (latent ${r.latent}²) · batch ${r.batch} · ` +
    `${r.dtype} · ${r.adapter} · ${r.date}`,
    `FLOPs per call: ${tera(f.total)} TFLOP (conv ${tera(f.byKind.conv)}, linear ` +
    `${tera(f.byKind.linear)}, attention ${tera(f.byKind.attention)})`,
    `weights: ${(r.memory.paramBytes / GB).toFixed(3)} GB of parameters in ` +
    `${(r.memory.weightsBytes / GB).toFixed(3)} GB of pool buffers, built in ` +
    `${r.loadSeconds.toFixed(1)} s`,
    ...(r.steps > 0
      ? [
        `step (${r.steps} timed after ${r.warmup} warm-up, wall clock with rt.sync()): median ` +
        `${ms(r.step.medianMs)} ms · p90 ${ms(r.step.p90Ms)} ms · min ${ms(r.step.minMs)} ms · ` +
        `CPU: recording ${ms(r.step.recordMs)} ms, submit ${ms(r.step.submitMs)} ms`,
        `effective: ${tf(r.tflops)} TFLOP/s`,
      ]
      : ["no timed steps (--steps 0): host side only"]),
    ...(r.counters
      ? [
        `per step: ${r.counters.dispatches} dispatches · ${r.counters.bindGroups} bind groups ` +
        `created · ${r.counters.uniformBytes} uniform bytes written · ${r.counters.submits} ` +
        `submit${r.counters.submits === 1 ? "" : "s"}`,
      ]
      : []),
    `peak GPU memory (pool, weights included): ${(r.memory.peakBytes / GB).toFixed(3)} GB ` +
    `(activations ${((r.memory.peakBytes - r.memory.weightsBytes) / GB).toFixed(3)} GB)`,
    r.output === null
      ? "output not computed (--steps 0)"
      : r.output.nonFinite > 0
      ? `WARNING: the output has ${r.output.nonFinite} non-finite values`
      : `output finite, max |x| ${r.output.maxAbs.toPrecision(3)}`,
  ];
  lines.push("", formatHost(r));
  const p = r.profile;
  if (!p) {
    if (r.steps > 0) {
      lines.push("(no timestamp-query on this adapter: per-block and per-kernel times need it)");
    }
    return lines.join("\n");
  }
  lines.push(
    "",
    `profiled step: GPU ${ms(p.gpuMs)} ms in ${p.dispatches} dispatches (wall ${ms(p.wallMs)} ms ` +
      `with a pass per dispatch)`,
    table(
      [
        "block",
        "resnet ms",
        "attn ms",
        "sampler ms",
        "other ms",
        "total ms",
        "share",
        "GFLOP",
        "TFLOP/s",
      ],
      p.blocks.map((b) => [
        b.block,
        ms(b.parts.resnet),
        ms(b.parts.attention),
        ms(b.parts.sampler),
        ms(b.parts.other),
        ms(b.ms),
        pct(b.share),
        (b.flops / 1e9).toFixed(b.flops >= 1e10 ? 1 : 3),
        tf(b.tflops),
      ]),
    ),
  );
  const parts = { resnet: 0, attention: 0, sampler: 0, other: 0 };
  for (const b of p.blocks) {
    for (const k of Object.keys(parts) as (keyof typeof parts)[]) parts[k] += b.parts[k];
  }
  lines.push(
    `by part: ` +
      Object.entries(parts).map(([k, v]) => `${k} ${ms(v)} ms (${pct(v / (p.gpuMs || 1))})`).join(
        " · ",
      ),
    "",
    `top ${p.kernels.length} kernels by GPU time:`,
    table(
      ["op", "count", "total ms", "avg ms", "share"],
      p.kernels.map((
        k,
      ) => [k.label, String(k.count), ms(k.totalMs), ms(k.totalMs / k.count), pct(k.share)]),
    ),
    "",
    table(
      ["kernel family", "count", "total ms", "share"],
      p.families.map((k) => [k.kernel, String(k.count), ms(k.totalMs), pct(k.share)]),
    ),
  );
  return lines.join("\n");
}

/**
 * The host-side table: per variant, dispatches and bind groups per call, the CPU time of
 * recording it and per dispatch, and the change against the row above.
 *
 * @example
 * ```ts
 * import type { UnetStepReport } from "./unet_step.ts";
 * import { formatHost } from "./unet_step_report.ts";
 * declare const report: UnetStepReport;
 * console.log(formatHost(report));
 * ```
 */
export function formatHost(r: UnetStepReport): string {
  const v = r.host.variants;
  return [
    `host side of one call (recording only, nothing submitted; ${r.host.clock}; median of ` +
    `${r.host.rounds} rounds, variants in turn):`,
    table(
      ["variant", "dispatches", "bind groups", "record ms", "µs/dispatch", "vs previous"],
      v.map((x, i) => [
        x.name,
        String(x.dispatches),
        String(x.bindGroups),
        ms(x.medianMs),
        x.usPerDispatch.toFixed(1),
        i === 0 ? "" : change(x.medianMs, v[i - 1].medianMs),
      ]),
    ),
  ].join("\n");
}

/** Signed relative change, e.g. `-12.3%`. */
function change(now: number, before: number): string {
  if (!Number.isFinite(before) || before === 0) return "n/a";
  const d = (now - before) / before;
  return `${d >= 0 ? "+" : ""}${(d * 100).toFixed(1)}%`;
}

/**
 * The change of `now` against an earlier report `before`: step time, TFLOP/s, memory, per-block
 * and per-family GPU time; warns when the runs differ in model, size, batch, dtype or adapter.
 *
 * @example
 * ```ts
 * import type { UnetStepReport } from "./unet_step.ts";
 * import { compareReports } from "./unet_step_report.ts";
 * declare const now: UnetStepReport, before: UnetStepReport;
 * console.log(compareReports(now, before));
 * ```
 */
export function compareReports(now: UnetStepReport, before: UnetStepReport): string {
  const lines = [`change against ${before.date} (${before.adapter}):`];
  for (const key of ["model", "res", "batch", "dtype", "adapter"] as const) {
    if (now[key] !== before[key]) {
      lines.push(`  note: ${key} differs: ${before[key]} → ${now[key]}`);
    }
  }
  const rows: string[][] = [];
  const add = (name: string, a: number | undefined, b: number | undefined, fmt = ms) => {
    if (a === undefined || b === undefined) return;
    rows.push([name, fmt(b), fmt(a), change(a, b)]);
  };
  add("step median ms", now.step.medianMs, before.step.medianMs);
  add("step p90 ms", now.step.p90Ms, before.step.p90Ms);
  add("recording CPU ms", now.step.recordMs, before.step.recordMs);
  add("submit CPU ms", now.step.submitMs, before.step.submitMs);
  const host = (x: UnetStepReport) => x.host?.variants.at(-1);
  add("host record ms", host(now)?.medianMs, host(before)?.medianMs);
  add(
    "host µs/dispatch",
    host(now)?.usPerDispatch,
    host(before)?.usPerDispatch,
    (x) => x.toFixed(1),
  );
  add("dispatches", host(now)?.dispatches, host(before)?.dispatches, String);
  add("TFLOP/s", now.tflops, before.tflops, tf);
  add("peak GB", now.memory.peakBytes / GB, before.memory.peakBytes / GB, (v) => v.toFixed(3));
  if (now.profile && before.profile) {
    add("profiled GPU ms", now.profile.gpuMs, before.profile.gpuMs);
    for (const b of now.profile.blocks) {
      add(`  ${b.block} ms`, b.ms, before.profile.blocks.find((x) => x.block === b.block)?.ms);
    }
    for (const k of now.profile.families) {
      const old = before.profile.families.find((x) => x.kernel === k.kernel)?.totalMs;
      add(`  ${k.kernel} ms`, k.totalMs, old);
    }
  }
  lines.push(table(["metric", "before", "now", "change"], rows));
  return lines.join("\n");
}
