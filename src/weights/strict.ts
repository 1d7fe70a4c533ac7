/**
 * Strict import check: compares the tensors a model expects with those a checkpoint provides and
 * reports every problem at once.
 *
 * @module
 */

/** Shapes by key, as a Map or a plain object; values are shapes or objects with a `shape`. */
export type ShapeSource =
  | ReadonlyMap<string, readonly number[] | { shape: readonly number[] }>
  | Readonly<Record<string, readonly number[] | { shape: readonly number[] }>>;

/** One shape mismatch. */
export interface ShapeMismatch {
  /** The tensor key. */
  key: string;
  /** The shape the model expects. */
  expected: number[];
  /** The shape the checkpoint has. */
  found: number[];
}

/** Thrown by {@link checkStrict}: lists every missing key and every shape mismatch. */
export class StrictImportError extends Error {
  /** Expected keys the checkpoint lacks. */
  readonly missing: string[];
  /** Keys whose shapes differ. */
  readonly mismatched: ShapeMismatch[];
  /** Checkpoint keys the model does not use. */
  readonly unused: string[];
  /** Builds the error and its message. */
  constructor(
    component: string,
    problems: { missing: string[]; mismatched: ShapeMismatch[]; unused: string[] },
  ) {
    const lines = [
      `${component}: the checkpoint does not fit the model (${problems.missing.length} missing, ` +
      `${problems.mismatched.length} with the wrong shape) — check that the config matches the ` +
      `checkpoint (model family, layer counts, channel widths) or that the file is complete`,
    ];
    for (const k of problems.missing) lines.push(`  missing: ${k}`);
    for (const m of problems.mismatched) {
      lines.push(`  shape mismatch: ${m.key}: expected [${m.expected}], found [${m.found}]`);
    }
    if (problems.unused.length > 0) {
      lines.push(
        `  (${problems.unused.length} unused checkpoint keys, e.g. ${problems.unused[0]})`,
      );
    }
    super(lines.join("\n"));
    this.name = "StrictImportError";
    this.missing = problems.missing;
    this.mismatched = problems.mismatched;
    this.unused = problems.unused;
  }
}

function entries(src: ShapeSource): [string, number[]][] {
  const list = src instanceof Map ? [...src.entries()] : Object.entries(src);
  return list.map((
    [k, v],
  ) => [k, (Array.isArray(v) ? v : (v as { shape: number[] }).shape).slice()]);
}

/**
 * Checks that `found` has every key of `expected` with the same shape. Throws one
 * {@link StrictImportError} listing every missing key and shape mismatch; otherwise returns the
 * found keys the model does not use. Values may be shapes or objects with a `shape`.
 *
 * @example
 * ```ts
 * import { checkStrict } from "@denoise/sd/weights";
 * const unused = checkStrict(
 *   { "conv_in.weight": [32, 4, 3, 3] },
 *   new Map([["conv_in.weight", { shape: [32, 4, 3, 3] }], ["extra", { shape: [1] }]]),
 *   { component: "unet" },
 * );
 * console.log(unused); // ["extra"]
 * ```
 */
export function checkStrict(
  expected: ShapeSource,
  found: ShapeSource,
  options: { component?: string } = {},
): string[] {
  const have = new Map(entries(found));
  const want = entries(expected);
  const wanted = new Set(want.map(([k]) => k));
  const missing: string[] = [];
  const mismatched: ShapeMismatch[] = [];
  for (const [key, shape] of want) {
    const got = have.get(key);
    if (got === undefined) missing.push(key);
    else if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      mismatched.push({ key, expected: shape, found: got });
    }
  }
  const unused = [...have.keys()].filter((k) => !wanted.has(k));
  if (missing.length > 0 || mismatched.length > 0) {
    throw new StrictImportError(options.component ?? "model", { missing, mismatched, unused });
  }
  return unused;
}
