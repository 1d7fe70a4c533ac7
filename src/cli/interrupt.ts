/**
 * Ctrl-C and `kill` while `gen.ts` runs: remove the temporary file being written, the empty
 * folders the run made, move the cursor to a fresh line, and exit with the shell's status for the
 * signal (130 for SIGINT, 143 for SIGTERM).
 *
 * @example
 * ```ts
 * import { onInterrupt } from "./interrupt.ts";
 * using _ = onInterrupt([() => console.error("cleaning up")]);
 * ```
 *
 * @module
 */
import { removePendingTempFiles } from "../io/files.ts";

const CODES = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * Installs SIGINT and SIGTERM handlers that remove pending temporary files
 * ({@link removePendingTempFiles}), run `cleanups` (synchronously, in order, each one's failure
 * ignored), print "interrupted" and exit. Dispose the result to uninstall them.
 *
 * @example
 * ```ts
 * import { onInterrupt } from "./interrupt.ts";
 * const handlers = onInterrupt([]);
 * handlers[Symbol.dispose]();
 * ```
 */
export function onInterrupt(cleanups: (() => void)[]): Disposable {
  const installed: [Deno.Signal, () => void][] = [];
  for (const signal of Object.keys(CODES) as (keyof typeof CODES)[]) {
    const handler = () => {
      removePendingTempFiles();
      for (const c of cleanups) {
        try {
          c();
        } catch { /* keep cleaning */ }
      }
      Deno.stderr.writeSync(new TextEncoder().encode(`interrupted (${signal})\n`));
      Deno.exit(CODES[signal]);
    };
    try {
      Deno.addSignalListener(signal, handler);
      installed.push([signal, handler]);
    } catch { /* SIGTERM cannot be listened to on Windows */ }
  }
  return {
    [Symbol.dispose]() {
      for (const [signal, handler] of installed) Deno.removeSignalListener(signal, handler);
    },
  };
}
