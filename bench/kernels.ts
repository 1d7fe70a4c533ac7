/**
 * The kernel benchmark: for each op family at Stable Diffusion shapes (SD 1.5 512² batch 2 and
 * SD 2.x), every kernel version (the ladder) is checked against the float64 reference, then timed.
 * Prints a table and writes JSON with the adapter's name and the date.
 *
 * usage: deno run -A bench/kernels.ts [--quick] [--only gemm,conv2d] [--json FILE] [--reps N]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Runtime } from "../src/gpu/runtime.ts";
import { benchAttention } from "./kernels/attention.ts";
import { benchConv2d } from "./kernels/conv2d.ts";
import { benchGemm } from "./kernels/gemm.ts";
import { benchLayout } from "./kernels/layout.ts";
import { benchNorm } from "./kernels/norm.ts";
import type { BenchRow, OpBench } from "./kernels/types.ts";

/** Every op family's benchmark, by name. */
export const BENCHES: Record<string, OpBench> = {
  gemm: benchGemm,
  conv2d: benchConv2d,
  attention: benchAttention,
  norm: benchNorm,
  layout: benchLayout,
};

/** Formats rows as a fixed-width table. */
export function formatRows(rows: BenchRow[]): string {
  const head = ["op", "variant", "shape", "ok", "ms", "GFLOP/s", "GB/s", "maxErr"];
  const cells = rows.map((r) => [
    r.op,
    r.variant,
    r.shape,
    r.ok ? "ok" : "FAIL",
    r.ms.toFixed(3),
    r.gflops === undefined ? "" : r.gflops.toFixed(1),
    r.gbps === undefined ? "" : r.gbps.toFixed(1),
    r.maxErr === undefined ? "" : r.maxErr.toExponential(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((v, i) => (i >= 3 ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join("  ");
  return [line(head), ...cells.map(line)].join("\n");
}

/** Runs the selected benchmarks and returns their rows. */
export async function runKernelBench(
  rt: Runtime,
  options: { quick?: boolean; only?: string[]; reps?: number } = {},
): Promise<BenchRow[]> {
  const names = options.only ?? Object.keys(BENCHES);
  const rows: BenchRow[] = [];
  for (const name of names) {
    const bench = BENCHES[name];
    if (!bench) {
      throw new Error(`unknown op family ${name}: use ${Object.keys(BENCHES).join(", ")}`);
    }
    rows.push(...await bench(rt, { quick: options.quick ?? false, reps: options.reps }));
  }
  return rows;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string" },
      reps: { type: "string" },
    },
  });
  const rt = await Runtime.create();
  const rows = await runKernelBench(rt, {
    quick: values.quick,
    only: values.only?.split(","),
    reps: values.reps ? Number(values.reps) : undefined,
  });
  console.log(
    `adapter: ${rt.gpu.adapterName}  date: ${new Date().toISOString()}  quick: ${values.quick}`,
  );
  console.log(formatRows(rows));
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify(
        { adapter: rt.gpu.adapterName, date: new Date().toISOString(), quick: values.quick, rows },
        null,
        2,
      ),
    );
  }
  if (rows.some((r) => !r.ok)) Deno.exit(1);
}
