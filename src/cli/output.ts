/**
 * Where `gen.ts` writes, settled before the model loads: `--out NAME.png` is that file (numbered
 * `NAME-0001.png`, … for several images), an existing folder or a name ending in `/` or without an
 * extension is a folder of numbered `NNNNN-SEED.png` files, anything else (`image.jpg`, an
 * existing `notes.txt`) is refused with the fix. The folder is created and probed for writing
 * up front; names that do not fit the file system are refused; the numbers in a folder are unique
 * even when several runs write into it at once; folders this run created are removed again when
 * it fails before writing into them.
 *
 * @example
 * ```ts
 * import { prepareOutput } from "./output.ts";
 * const out = await prepareOutput("out/", { count: 1, flag: "--out" });
 * const path = await out.write(new Uint8Array([1, 2, 3]), { seed: 42n, index: 0 });
 * console.log(path); // out/00000-42.png (or the next free number)
 * ```
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { tempName, writeFileExclusive } from "../io/files.ts";
import { UsageError } from "./flags.ts";
import { explainFsError } from "./paths.ts";

/** Options of {@link prepareOutput}. */
export interface PrepareOutputOptions {
  /** How many images the run writes. */
  count: number;
  /** Replace an existing NAME.png. */
  overwrite?: boolean;
  /** The flag as the user spelled it, for messages (`-o`, `--out`). */
  flag: string;
}

/** A checked destination. */
export interface OutputTarget {
  /** `"file"` for NAME.png, `"folder"` for numbered files. */
  readonly kind: "file" | "folder";
  /** The file or the folder. */
  readonly path: string;
  /**
   * Writes one image's bytes exclusively and returns the path: the next free number in a folder;
   * the given name for a file (if another program created that name meanwhile, `NAME (1).png`
   * rather than losing the image; `notice` is called to say so).
   */
  write(
    bytes: Uint8Array,
    options: { seed: bigint; index: number; notice?: (message: string) => void },
  ): Promise<string>;
  /** Removes the folders this run created that are still empty (synchronous: signal-safe). */
  abandon(): void;
}

const NAME_MAX = 255;
const IMAGE_EXT = /\.(jpe?g|webp|gif|bmp|tiff?|avif|heic|jxl|ppm|exr|qoi)$/i;
const OTHER_EXT = /\.[a-z][a-z0-9]{0,4}$/i;

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

function byteLength(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** `mkdir -p` that remembers which folders it made, outermost first. */
async function makeFolders(dir: string, made: string[], what: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir;; d = dirname(d)) {
    const info = await statOrNull(d).catch((e) => {
      throw explainFsError(e, what);
    });
    if (info) {
      if (!info.isDirectory) throw new UsageError(`${what}: ${d} is a file, not a folder`);
      break;
    }
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      await Deno.mkdir(d);
      made.push(d);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw explainFsError(e, what);
    }
  }
}

/** Creates and removes a temporary file in `dir`: the write permission, checked for real. */
async function probe(dir: string, what: string): Promise<void> {
  const temp = tempName(dir);
  try {
    (await Deno.open(temp, { write: true, createNew: true })).close();
  } catch (e) {
    throw explainFsError(e, `${what}: cannot write in ${dir}`);
  }
  await Deno.remove(temp).catch(() => {});
}

function checkNameLength(name: string, what: string): void {
  const bytes = byteLength(name);
  if (bytes > NAME_MAX) {
    throw new UsageError(
      `${what}: the file name ${name.slice(0, 24)}… is ${bytes} bytes; file systems allow ` +
        `${NAME_MAX}: choose a shorter name`,
    );
  }
}

function pad5(n: number): string {
  return String(n).padStart(5, "0");
}

/** The numbers of `NNNNN-….png` files in a folder, by name. */
async function numbered(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of Deno.readDir(dir)) {
    const m = /^(\d+)-/.exec(e.name);
    if (m) out.set(e.name, Number(m[1]));
  }
  return out;
}

/**
 * Checks `out` and prepares it, before any long work: classifies it (file or folder), creates the
 * folder, proves it writable, refuses an existing NAME.png without `overwrite`, and refuses names
 * longer than the file system allows. Throws a {@link UsageError} naming the problem and the fix.
 *
 * @example
 * ```ts
 * import { prepareOutput } from "./output.ts";
 * await prepareOutput("image.jpg", { count: 1, flag: "-o" }).catch((e) => console.log(e.message));
 * // -o image.jpg: denoise writes PNG files: use -o image.png, or -o image.jpg/ for a folder
 * ```
 */
export async function prepareOutput(
  out: string,
  options: PrepareOutputOptions,
): Promise<OutputTarget> {
  const { count, overwrite = false, flag } = options;
  const what = `${flag} ${out}`;
  checkNameLength(basename(out), what);
  const info = await statOrNull(out).catch((e) => {
    throw explainFsError(e, what);
  });
  const made: string[] = [];
  const abandon = () => {
    for (const d of [...made].reverse()) {
      try {
        Deno.removeSync(d);
      } catch { /* not empty, or gone */ }
    }
    made.length = 0;
  };
  const isPng = /\.png$/i.test(out);
  if (info?.isDirectory || (!info && !isPng && (out.endsWith("/") || !OTHER_EXT.test(out)))) {
    const dir = out.replace(/(.)\/+$/, "$1");
    await makeFolders(dir, made, what);
    try {
      await probe(dir, what);
    } catch (e) {
      abandon();
      throw e;
    }
    return { kind: "folder", path: dir, write: (b, o) => writeNumbered(dir, b, o.seed), abandon };
  }
  if (info && !isPng) {
    throw new UsageError(
      `${what} is an existing file, not a folder or a .png: give ${flag} NAME.png or a folder`,
    );
  }
  if (!isPng) {
    const hint = IMAGE_EXT.test(out) ? "denoise writes PNG files" : "not a .png file nor a folder";
    const stem = out.replace(OTHER_EXT, "");
    throw new UsageError(
      `${what}: ${hint}: use ${flag} ${stem}.png, or ${flag} ${out}/ for a folder`,
    );
  }
  const names = count === 1
    ? [out]
    : Array.from({ length: count }, (_, i) =>
      `${out.slice(0, -4)}-${String(i + 1).padStart(4, "0")}.png`);
  checkNameLength(basename(names.at(-1)!), what);
  if (!overwrite) {
    for (const name of names) {
      if (await statOrNull(name)) {
        throw new UsageError(
          `${name} exists: pass --overwrite to replace it, or choose another ${flag}`,
        );
      }
    }
  }
  const dir = dirname(out);
  await makeFolders(dir, made, what);
  try {
    await probe(dir, what);
  } catch (e) {
    abandon();
    throw e;
  }
  return {
    kind: "file",
    path: out,
    write: (bytes, o) => writeFile(names[o.index], bytes, overwrite, o.notice),
    abandon,
  };
}

async function writeFile(
  path: string,
  bytes: Uint8Array,
  overwrite: boolean,
  notice?: (message: string) => void,
): Promise<string> {
  for (let k = 0;; k++) {
    const name = k === 0 ? path : `${path.slice(0, -4)} (${k}).png`;
    try {
      await writeFileExclusive(name, bytes, { overwrite });
      if (k > 0) notice?.(`${path} appeared while this run worked; wrote ${name} instead`);
      return name;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists) || k >= 1000) throw e;
    }
  }
}

/**
 * Writes `NNNNN-SEED.png` with the next number in `dir`: the name is created exclusively, then the
 * folder is read again; if another run took the same number meanwhile, this one gives it up and
 * tries the next (of two runs that race, the later always sees the earlier, so a number is never
 * shared).
 */
async function writeNumbered(dir: string, bytes: Uint8Array, seed: bigint): Promise<string> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const taken = await numbered(dir);
    const n = Math.max(-1, ...taken.values()) + 1;
    const name = `${pad5(n)}-${seed}.png`;
    const path = join(dir, name);
    try {
      await writeFileExclusive(path, bytes);
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) continue;
      throw e;
    }
    const now = await numbered(dir);
    if ([...now].every(([other, m]) => other === name || m !== n)) return path;
    await Deno.remove(path).catch(() => {});
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 40 * Math.min(attempt + 1, 5)));
  }
  throw new Error(`could not find a free number in ${dir} after 1000 tries`);
}
