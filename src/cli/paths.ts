/**
 * File-system errors in words a user can act on: Deno's permission sandbox (`--allow-read`,
 * `--allow-write`) is told apart from the operating system's permissions, a missing path from an
 * unreadable one, and a path from an environment variable is named as such.
 *
 * @example
 * ```ts no-run
 * import { checkReadable } from "./paths.ts";
 * await checkReadable("models/sd15", "--model").catch((e) => console.log(e.message));
 * ```
 *
 * @module
 */
import { UsageError } from "./flags.ts";

/**
 * A file-system error as a {@link UsageError} that names `what` (`"-o out/"`) and the fix;
 * `access` is what Deno's sandbox must allow.
 *
 * @example
 * ```ts
 * import { explainFsError } from "./paths.ts";
 * const e = explainFsError(new Deno.errors.PermissionDenied("EACCES"), "-o out/");
 * console.log(e.message); // -o out/: permission denied (a read-only folder?)
 * ```
 */
export function explainFsError(
  e: unknown,
  what: string,
  access: "read" | "write" = "write",
): UsageError {
  if (e instanceof Deno.errors.NotCapable) {
    return new UsageError(
      `${what}: deno was not given ${access} access: run with -A or --allow-${access}`,
      { cause: e },
    );
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    const hint = access === "write" ? "a read-only folder?" : "check its owner and mode";
    return new UsageError(`${what}: permission denied (${hint})`, { cause: e });
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (/os error 30\b|read-only file system/i.test(msg)) {
    return new UsageError(`${what}: the file system is read-only`, { cause: e });
  }
  if (e instanceof Deno.errors.NotADirectory || /os error 20\b/.test(msg)) {
    return new UsageError(`${what}: a part of the path is a file, not a folder`, { cause: e });
  }
  if (e instanceof Deno.errors.NotFound) {
    return new UsageError(`${what}: no such file or folder`, { cause: e });
  }
  return new UsageError(`${what}: ${msg}`, { cause: e });
}

/**
 * Checks that `path` exists and can be read (a file opened, a folder listed), throwing a
 * {@link UsageError} that quotes how it was given: `--model x`, `-m x`, or `DENOISE_MODEL=x`.
 *
 * @example
 * ```ts no-run
 * import { checkReadable } from "./paths.ts";
 * await checkReadable("tests/fixtures/models/tiny-sd15", "DENOISE_MODEL");
 * ```
 */
export async function checkReadable(path: string, spelled: string): Promise<void> {
  const what = spelled.startsWith("-") ? `${spelled} ${path}` : `${spelled}=${path}`;
  try {
    const info = await Deno.stat(path);
    if (info.isDirectory) {
      for await (const _ of Deno.readDir(path)) break;
    } else {
      (await Deno.open(path, { read: true })).close();
    }
  } catch (e) {
    throw explainFsError(e, what, "read");
  }
}
