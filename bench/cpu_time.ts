/**
 * CPU time of the calling thread, for measuring what recording costs the host: the JavaScript
 * thread's own CPU time excludes the software adapter's worker threads and time spent waiting,
 * which wall-clock time on a loaded machine does not.
 *
 * @module
 */
import process from "node:process";

type Clock = () => number;

function ffiClock(): Clock | null {
  if (Deno.build.os !== "linux") return null;
  try {
    const lib = Deno.dlopen("libc.so.6", {
      clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
    });
    const ts = new BigInt64Array(2);
    const CLOCK_THREAD_CPUTIME_ID = 3;
    return () => {
      lib.symbols.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts);
      return Number(ts[0]) * 1e3 + Number(ts[1]) / 1e6;
    };
  } catch {
    return null;
  }
}

function nodeClock(): Clock | null {
  const p = process as unknown as { threadCpuUsage?: () => { user: number; system: number } };
  if (typeof p.threadCpuUsage !== "function") return null;
  return () => {
    const u = p.threadCpuUsage!();
    return (u.user + u.system) / 1000;
  };
}

let clock: { now: Clock; source: string } | undefined;

/**
 * Milliseconds of CPU time this thread has used (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)` through
 * FFI on Linux, else Node's `threadCpuUsage`, else wall clock); see {@link cpuClockSource}.
 *
 * @example
 * ```ts
 * import { threadCpuMs } from "./cpu_time.ts";
 * const t0 = threadCpuMs();
 * let s = 0;
 * for (let i = 0; i < 1e6; i++) s += i;
 * console.log(threadCpuMs() - t0, "ms of CPU");
 * ```
 */
export function threadCpuMs(): number {
  clock ??= pick();
  return clock.now();
}

/**
 * Which clock {@link threadCpuMs} uses.
 *
 * @example
 * ```ts
 * import { cpuClockSource } from "./cpu_time.ts";
 * console.log(cpuClockSource()); // "thread CPU (clock_gettime)"
 * ```
 */
export function cpuClockSource(): string {
  clock ??= pick();
  return clock.source;
}

function pick(): { now: Clock; source: string } {
  const ffi = ffiClock();
  if (ffi) return { now: ffi, source: "thread CPU (clock_gettime)" };
  const node = nodeClock();
  if (node) return { now: node, source: "thread CPU (threadCpuUsage, coarse)" };
  return { now: () => performance.now(), source: "wall clock (no CPU clock available)" };
}
