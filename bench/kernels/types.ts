/**
 * Shared types of the kernel benchmark.
 *
 * @module
 */
import type { Runtime } from "../../src/gpu/runtime.ts";

/** One measured kernel case. */
export interface BenchRow {
  /** Op family, for example `gemm`. */
  op: string;
  /** Kernel version (ladder rung), for example `v2 tiled 64×64`. */
  variant: string;
  /** The case's shape, for example `M=8192 N=320 K=320 f16`. */
  shape: string;
  /** Median milliseconds per call. */
  ms: number;
  /** Achieved GFLOP/s for compute-bound ops. */
  gflops?: number;
  /** Achieved GB/s for memory-bound ops. */
  gbps?: number;
  /** Whether the correctness check before timing passed. */
  ok: boolean;
  /** Worst error of the correctness check, relative to the reference's scale. */
  maxErr?: number;
}

/** Options every op's benchmark takes. */
export interface BenchOptions {
  /** Small shapes for the software adapter. */
  quick: boolean;
  /** Timed repetitions (median reported). */
  reps?: number;
}

/** A benchmark of one op family. */
export type OpBench = (rt: Runtime, opts: BenchOptions) => Promise<BenchRow[]>;

/**
 * Times `fn` (which records GPU work): warm-up, then the median of `reps` synced runs, in ms.
 */
export async function timeMedian(rt: Runtime, fn: () => void, reps = 5): Promise<number> {
  fn();
  await rt.sync();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    await rt.sync();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
