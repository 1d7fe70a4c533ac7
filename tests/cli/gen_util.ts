/**
 * Helpers of the CLI tests: run `gen.ts` as a user would (a child process, stdout and stderr
 * piped, so stderr is not a terminal) and check its exit.
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodePng } from "../../src/io/png.ts";
import { modelDir } from "../util.ts";

/** The repository root. */
export const ROOT: string = decodeURIComponent(new URL("../../", import.meta.url).pathname);
/** The tiny SD 1.5 model folder, or undefined (the test skips) when absent. */
export const MODEL: string | undefined = modelDir("tiny-sd15");

/** What a run of gen.ts printed and how it ended. */
export interface GenResult {
  /** Exit status. */
  code: number;
  /** Standard output (the written paths). */
  stdout: string;
  /** Standard error (progress, messages). */
  stderr: string;
}

/** Options of {@link gen}. */
export interface GenOptions {
  /** Extra environment variables (DENOISE_MODEL is empty unless set here). */
  env?: Record<string, string>;
  /** The working directory (the repository root by default). */
  cwd?: string;
  /** Deno permission flags instead of `-A`. */
  permissions?: string[];
}

/** Runs `deno run -A gen.ts …args` with stdout and stderr piped (no TTY). */
export async function gen(args: string[], options: GenOptions = {}): Promise<GenResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.permissions ?? ["-A"]), `${ROOT}gen.ts`, ...args],
    cwd: options.cwd ?? ROOT,
    env: { DENOISE_MODEL: "", NO_COLOR: "1", ...options.env },
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Asserts a run succeeded, with its output in the message when it did not. */
export function ok(r: GenResult): void {
  assert.equal(r.code, 0, `gen.ts failed:\n${r.stdout}\n${r.stderr}`);
}

/** A usage error: exit code 2 and the message on stderr. */
export function usage(r: GenResult, message: RegExp): void {
  assert.equal(r.code, 2, `exit code 2 expected:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, message);
}

/** A PNG's A1111 `parameters` text, width and pixels. */
export async function parameters(
  path: string,
): Promise<{ text: string; width: number; data: Uint8Array }> {
  const png = decodePng(await Deno.readFile(path));
  return { text: png.text.parameters, width: png.width, data: png.data };
}
