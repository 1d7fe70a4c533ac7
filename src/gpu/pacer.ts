/**
 * Waiting for the GPU without starving the event loop.
 *
 * Deno's WebGPU (2.9) has no way to learn that submitted work finished without blocking:
 * `queue.onSubmittedWorkDone()` and `buffer.mapAsync()` poll the device with a blocking wait on
 * the JavaScript thread until everything submitted is done (the call itself blocks), and on Mesa's
 * software Vulkan a `queue.submit` made while earlier work still runs blocks the same way. A loop
 * that submits a step while the previous one runs therefore freezes timers, signal handlers and
 * other tasks for the whole GPU time of a step.
 *
 * The pacer predicts when the work will be done from how long earlier batches of the same kind
 * took, sleeps on a timer until shortly before (the event loop runs meanwhile: timers fire, an
 * abort lands), and only then makes the blocking call, which then blocks for the short remainder.
 * How long that call blocked corrects the prediction: a call that returns at once means the sleep
 * was too long and the prediction shrinks.
 *
 * @module
 */

/** Sleeps `ms` on a timer (a macrotask: pending timers and I/O run first). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/** What the pacer learnt about one kind of batch. */
interface Estimate {
  ms: number;
}

/**
 * Predicts GPU completion per kind of batch and waits for it with the event loop free.
 *
 * @example
 * ```ts
 * import { getGpu } from "@denoise/sd/gpu";
 * import { GpuPacer } from "./pacer.ts";
 * const { device } = await getGpu();
 * const pacer = new GpuPacer();
 * pacer.submitted();
 * await pacer.settle(device, "step");
 * ```
 */
export class GpuPacer {
  #estimates = new Map<string, Estimate>();
  #start: number | null = null;
  /** Milliseconds the last {@link GpuPacer.settle} blocked the thread. */
  lastBlockedMs = 0;
  /** Milliseconds the last {@link GpuPacer.settle} slept with the event loop free. */
  lastSleptMs = 0;

  /** Notes a submit (the first since the last settle starts the clock). */
  submitted(): void {
    this.#start ??= performance.now();
  }

  /** The predicted GPU milliseconds of a batch of `kind`, if any batch of it was measured. */
  estimate(kind: string): number | undefined {
    return this.#estimates.get(kind)?.ms;
  }

  /**
   * Resolves once the GPU has finished everything submitted, a batch of `kind` (the work since the
   * last settle). Sleeps on a timer until just before the predicted end, then waits with a
   * blocking call for the rest; always yields to the event loop at least once. `signal` cuts the
   * sleep short (the caller then checks it; the GPU may still be busy).
   */
  async settle(device: GPUDevice, kind: string, signal?: AbortSignal): Promise<void> {
    const start = this.#start;
    this.lastBlockedMs = this.lastSleptMs = 0;
    if (start === null) return await sleep(0);
    const est = this.#estimates.get(kind);
    const t0 = performance.now();
    const wake = est ? start + est.ms * 0.95 - 1 : t0;
    await sleepUnless(wake - t0, signal);
    const t1 = performance.now();
    this.lastSleptMs = t1 - t0;
    if (signal?.aborted) return;
    // In Deno this call blocks until the GPU is idle; the promise itself resolves ~10 ms later,
    // so it is not awaited. (A runtime whose call does not block only loses the pacing.)
    device.queue.onSubmittedWorkDone().catch(() => {});
    const t2 = performance.now();
    this.lastBlockedMs = t2 - t1;
    this.#learn(kind, t2 - start, this.lastBlockedMs > 0.5, est);
    this.#start = null;
  }

  /** Forgets the running batch (its work was dropped before it was submitted, or is unknown). */
  reset(): void {
    this.#start = null;
  }

  #learn(kind: string, elapsed: number, blocked: boolean, est: Estimate | undefined): void {
    if (!est) {
      if (blocked) this.#estimates.set(kind, { ms: elapsed });
      return;
    }
    // blocked: the GPU finished just now, so `elapsed` is its time; else it finished earlier.
    est.ms = blocked ? 0.5 * est.ms + 0.5 * elapsed : Math.min(est.ms, elapsed) * 0.9;
  }
}

function sleepUnless(ms: number, signal?: AbortSignal): Promise<void> {
  if (!signal || ms <= 0) return sleep(ms);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
