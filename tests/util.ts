/**
 * Shared test helpers: fixture paths, tolerance checks that print the worst mismatches, seeded
 * random inputs.
 *
 * @module
 */
import { readNpy } from "../src/io/npy.ts";

/** The repository's `tests/fixtures/` folder. */
export const FIXTURES = new URL("./fixtures/", import.meta.url);
/** The shared folder beside the checkout (`../shared`), which holds data that is never committed. */
export const SHARED = new URL("../../shared/", import.meta.url);

/**
 * The folder of a tiny diffusers model: `tests/fixtures/models/<name>` when copied there (tiny-sd15),
 * else `../shared/fixtures/models/<name>`; `undefined` (after printing why) when neither exists
 * outside CI.
 */
export function modelDir(name: string): string | undefined {
  const local = new URL(`models/${name}/model_index.json`, FIXTURES);
  try {
    Deno.statSync(local);
    return decodeURIComponent(new URL(".", local).pathname).replace(/\/$/, "");
  } catch {
    const rel = `fixtures/models/${name}`;
    if (!sharedAvailable(rel)) return undefined;
    return decodeURIComponent(new URL(rel, SHARED).pathname);
  }
}

/** Reads a fixture `.npy` file as float32, relative to `tests/fixtures/` (or to `base`). */
export async function fixture(
  path: string,
  base: URL = FIXTURES,
): Promise<{ shape: number[]; data: Float32Array }> {
  const a = await readNpy(new URL(path, base));
  return { shape: a.shape, data: Float32Array.from(a.data as ArrayLike<number>) };
}

/**
 * The folder of a diffusers dump (`dumps/<run>/`, with a trailing slash): `tests/fixtures/dumps/`
 * when copied there, else `../shared/fixtures/dumps/`; `undefined` (after printing why) when
 * neither exists outside CI.
 */
export function dumpDir(run: string): URL | undefined {
  const local = new URL(`dumps/${run}/`, FIXTURES);
  try {
    Deno.statSync(new URL("manifest.json", local));
    return local;
  } catch {
    const rel = `fixtures/dumps/${run}/`;
    return sharedAvailable(rel) ? new URL(rel, SHARED) : undefined;
  }
}

/** Whether a shared data file exists; outside CI a missing file makes the test skip with a reason. */
export function sharedAvailable(path: string): boolean {
  try {
    Deno.statSync(new URL(path, SHARED));
    return true;
  } catch {
    if (Deno.env.get("CI") === "true") {
      throw new Error(`../shared/${path} is missing, and under CI=true the test must run`);
    }
    console.log(`skipped: ../shared/${path} is absent`);
    return false;
  }
}

/** Options for {@link assertClose}. */
export interface CloseOptions {
  /** Absolute tolerance. */
  atol?: number;
  /** Relative tolerance, times |ref|. */
  rtol?: number;
  /** A label printed with mismatches. */
  label?: string;
  /** How many worst mismatches to print. */
  show?: number;
}

/**
 * Asserts `|got − ref| ≤ atol + rtol·|ref|` elementwise; on failure the message lists the worst
 * mismatches with their indices.
 */
export function assertClose(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  opts: CloseOptions = {},
): void {
  const { atol = 1e-5, rtol = 1e-5, label = "tensor", show = 8 } = opts;
  if (got.length !== ref.length) {
    throw new Error(`${label}: length ${got.length} ≠ reference length ${ref.length}`);
  }
  const bad: { i: number; g: number; r: number; excess: number }[] = [];
  for (let i = 0; i < ref.length; i++) {
    const g = got[i], r = ref[i];
    const err = Math.abs(g - r);
    const tol = atol + rtol * Math.abs(r);
    if (!(err <= tol)) bad.push({ i, g, r, excess: Number.isNaN(err) ? Infinity : err / tol });
  }
  if (bad.length > 0) {
    bad.sort((a, b) => b.excess - a.excess);
    const rows = bad.slice(0, show).map((b) =>
      `  [${b.i}] got ${b.g} ref ${b.r} (|Δ| = ${Math.abs(b.g - b.r).toExponential(3)})`
    );
    throw new Error(
      `${label}: ${bad.length} of ${ref.length} values outside atol ${atol} + rtol ${rtol}·|ref|; worst:\n${
        rows.join("\n")
      }`,
    );
  }
}

/** Error statistics of `got` against `ref`: max abs error, the reference's max abs, and NMSE. */
export function errorStats(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
): { maxAbs: number; scale: number; nmse: number } {
  let maxAbs = 0, scale = 0, se = 0, ss = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = got[i] - ref[i];
    maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : Math.abs(d));
    scale = Math.max(scale, Math.abs(ref[i]));
    se += d * d;
    ss += ref[i] * ref[i];
  }
  return { maxAbs, scale, nmse: ss > 0 ? se / ss : se };
}

/**
 * Asserts that every element is within `tol · scale`, where scale is the reference's max |value|:
 * the "within 1e-4 of the tensor's scale" check for model stages.
 */
export function assertCloseToScale(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
  label = "tensor",
): void {
  const { scale } = errorStats(got, ref);
  assertClose(got, ref, { atol: tol * Math.max(scale, 1e-12), rtol: 0, label });
}

/** A small seeded generator (mulberry32) for reproducible test inputs. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` seeded uniform values in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}
