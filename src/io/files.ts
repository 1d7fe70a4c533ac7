/**
 * Safe file output: the bytes go to a hidden temporary file beside the target, are flushed to disk
 * (`fsync`), and only then appear under the final name — by an exclusive hard link, so an existing
 * file (even one created a moment ago by another process) is never replaced, or by a rename when
 * replacing was asked for. A temporary file that is still being written is listed by
 * {@link pendingTempFiles}, so an interrupt handler can remove it.
 *
 * @example
 * ```ts no-run
 * import { writeFileExclusive } from "@denoise/sd/io";
 * await writeFileExclusive("hello.txt", new TextEncoder().encode("hello\n"));
 * ```
 *
 * @module
 */
import { dirname, join } from "node:path";

/** Options of {@link writeFileExclusive}. */
export interface WriteFileExclusiveOptions {
  /** Replace an existing file (by an atomic rename); without it an existing file is an error. */
  overwrite?: boolean;
}

const pending = new Set<string>();

/**
 * The temporary files being written right now (absolute or as given), for an interrupt handler:
 * remove them with {@link removePendingTempFiles}.
 *
 * @example
 * ```ts
 * import { pendingTempFiles } from "@denoise/sd/io";
 * console.log(pendingTempFiles()); // [] when nothing is being written
 * ```
 */
export function pendingTempFiles(): string[] {
  return [...pending];
}

/**
 * Removes every temporary file still being written (synchronously, so a signal handler can call it
 * right before exiting).
 *
 * @example
 * ```ts
 * import { removePendingTempFiles } from "@denoise/sd/io";
 * Deno.addSignalListener("SIGINT", () => {
 *   removePendingTempFiles();
 *   Deno.exit(130);
 * });
 * ```
 */
export function removePendingTempFiles(): void {
  for (const path of pending) {
    try {
      Deno.removeSync(path);
    } catch { /* already gone */ }
    pending.delete(path);
  }
}

/** A hidden temporary name in `dir` of fixed length (so any legal target name fits beside it). */
export function tempName(dir: string): string {
  return join(dir, `.denoise-${crypto.randomUUID().slice(0, 8)}.tmp`);
}

/**
 * Writes `data` to `path` without ever replacing an existing file (unless `overwrite`): a temporary
 * file is written and fsynced, then hard-linked to `path` (which fails atomically when `path`
 * exists) and removed; where the file system has no hard links the final name is created with
 * `createNew` instead. With `overwrite` the temporary file is renamed over `path`. A stream is
 * written as it arrives.
 *
 * @example
 * ```ts no-run
 * import { writeFileExclusive } from "@denoise/sd/io";
 * const bytes = new TextEncoder().encode("once\n");
 * await writeFileExclusive("once.txt", bytes);
 * await writeFileExclusive("once.txt", bytes).catch((e) => console.log(e.name)); // AlreadyExists
 * ```
 */
export async function writeFileExclusive(
  path: string,
  data: Uint8Array | ReadableStream<Uint8Array>,
  options: WriteFileExclusiveOptions = {},
): Promise<void> {
  const dir = dirname(path);
  const temp = tempName(dir);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`cannot write ${path}: folder ${dir} does not exist`);
    }
    throw e;
  }
  pending.add(temp);
  try {
    try {
      if (data instanceof Uint8Array) {
        for (let off = 0; off < data.length;) off += await file.write(data.subarray(off));
      } else {
        for await (const chunk of data) {
          for (let off = 0; off < chunk.length;) off += await file.write(chunk.subarray(off));
        }
      }
      await file.sync();
    } finally {
      file.close();
    }
    if (options.overwrite) await Deno.rename(temp, path);
    else await linkExclusive(temp, path);
    await syncDir(dir);
  } finally {
    await Deno.remove(temp).catch(() => {});
    pending.delete(temp);
  }
}

async function linkExclusive(temp: string, path: string): Promise<void> {
  try {
    await Deno.link(temp, path);
    return;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Deno.errors.AlreadyExists(
        `${path} already exists: pass { overwrite: true } to replace it, or choose another name`,
      );
    }
    if (
      !(e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotSupported ||
        (e as { code?: string }).code === "EXDEV")
    ) throw e;
  }
  // no hard links here (FAT, some network mounts): create the final name exclusively instead
  const bytes = await Deno.readFile(temp);
  const out = await Deno.open(path, { write: true, createNew: true }).catch((e) => {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Deno.errors.AlreadyExists(
        `${path} already exists: pass { overwrite: true } to replace it, or choose another name`,
      );
    }
    throw e;
  });
  try {
    for (let off = 0; off < bytes.length;) off += await out.write(bytes.subarray(off));
    await out.sync();
  } finally {
    out.close();
  }
}

/** fsyncs a folder so a new name in it survives a crash; a no-op where folders cannot be opened. */
async function syncDir(dir: string): Promise<void> {
  try {
    using d = await Deno.open(dir, { read: true });
    await d.sync();
  } catch { /* Windows and some file systems do not sync folders */ }
}
