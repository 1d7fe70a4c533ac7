/**
 * How `gen.ts` ends on an error: a usage mistake exits 2 (as getopt tools), a problem with the
 * model, the files or the GPU exits 1 with its message, and an internal error — a bug, such as a
 * `TypeError` from reading a field that is not there — exits 70 (`EX_SOFTWARE`) with its stack, so
 * it is neither mistaken for the user's fault nor hidden.
 *
 * @example
 * ```ts
 * import { describeError } from "./errors.ts";
 * const { code, text } = describeError(new Error("model.safetensors is truncated"));
 * console.log(code, text); // 1 "error: model.safetensors is truncated"
 * ```
 *
 * @module
 */
import { UsageError } from "./flags.ts";

/** JavaScript's own errors: a program mistake, not the user's. */
const INTERNAL = [TypeError, ReferenceError, SyntaxError, EvalError] as const;

/**
 * The exit code and the text to print for an error that ended a run.
 *
 * @example
 * ```ts
 * import { describeError } from "./errors.ts";
 * import { UsageError } from "./flags.ts";
 * console.log(describeError(new UsageError("--steps 0: use 1 or more")).code); // 2
 * console.log(describeError(new TypeError("x is undefined")).code); // 70
 * ```
 */
export function describeError(e: unknown): { code: number; text: string } {
  if (e instanceof UsageError) return { code: 2, text: `error: ${e.message}` };
  if (INTERNAL.some((k) => e instanceof k)) {
    const err = e as Error;
    return {
      code: 70,
      text: `internal error (a bug in denoise; please report it with this text):\n${
        err.stack ?? `${err.name}: ${err.message}`
      }`,
    };
  }
  return { code: 1, text: `error: ${e instanceof Error ? e.message : String(e)}` };
}
