/**
 * A declarative command-line parser: every flag is one row of a table that names it (ours first,
 * then the spellings of stable-diffusion.cpp and AUTOMATIC1111), puts it in a `--help` group and
 * parses and validates its value. `gen.ts` keeps its table in `src/cli/options.ts`; a new flag is a
 * new row there.
 *
 * Syntax: `--name VALUE`, `--name=VALUE`, `-x VALUE`; a value is always the next argument, even when
 * it starts with a dash (`-s -1`, `-n "-blurry"`); `_` and `-` are the same in long names
 * (`--sampling_method`); `--` ends the flags. A repeated flag keeps its last value (sd.cpp and shell
 * aliases rely on that). Words that are not flags are positionals (the prompt).
 *
 * @example
 * ```ts
 * import { flag, parseFlags } from "./flags.ts";
 * const table = {
 *   steps: flag.int({ name: "steps", group: "Sampling", help: "steps", min: 1, default: 20 }),
 *   seed: flag.text({ name: "seed", short: "s", group: "Sampling", help: "seed" }),
 * };
 * const { values } = parseFlags(table, ["-s", "42", "--steps=4"]);
 * console.log(values.steps, values.seed); // 4 "42"
 * ```
 *
 * @module
 */

/**
 * A command-line mistake: the message names the flag as the user spelled it and the fix. The CLI
 * exits with status 2 on it, as getopt tools do.
 *
 * @example
 * ```ts no-run
 * import { UsageError } from "./flags.ts";
 * throw new UsageError("--steps 0: use a whole number ≥ 1");
 * ```
 */
export class UsageError extends Error {
  /** The error's name. */
  override name = "UsageError";
}

/**
 * One row of a flag table; the builders in {@link flag} make them.
 *
 * @example
 * ```ts
 * import type { Flag } from "./flags.ts";
 * const dtype: Flag<string> = {
 *   name: "dtype", group: "Model", help: "auto, f16 or f32", value: "T",
 *   parse: (raw) => raw, default: "auto",
 * };
 * ```
 */
export interface Flag<T> {
  /** Our long name, without dashes (`"negative"`). */
  name: string;
  /** Other long spellings: sd.cpp's and A1111's (`["negative-prompt"]`). */
  also?: readonly string[];
  /** A one-letter spelling (`"n"` for `-n`), sd.cpp's where it has one. */
  short?: string;
  /** The `--help` section. */
  group: string;
  /** What `--help` says; the default is appended when there is one to show. */
  help: string;
  /** The value's placeholder in `--help` (`"N"`, `"PATH"`); absent for switches. */
  value?: string;
  /** An environment variable read when the flag is absent. */
  env?: string;
  /** Turns the raw text into the value or throws a message (the flag's spelling is prefixed). */
  parse(raw: string): T;
  /** The value when the flag is absent. */
  default?: T;
  /** How `--help` shows the default (when it is not simply the default's text). */
  shown?: string;
}

/** The value type of a flag row. */
export type FlagValue<F> = F extends Flag<infer T> ? T : never;

/** The parsed values of a table: each row's value, `undefined` when absent without default. */
export type FlagValues<Table extends Record<string, Flag<unknown>>> = {
  [K in keyof Table]: FlagValue<Table[K]>;
};

/** What {@link parseFlags} returns. */
export interface ParsedFlags<Table extends Record<string, Flag<unknown>>> {
  /** Each row's value. */
  values: FlagValues<Table>;
  /** The words that are not flags, in order. */
  positionals: string[];
  /**
   * How each given value was spelled (`"-s"`, `"--cfg-scale"`, `"DENOISE_MODEL"`), for messages
   * that quote the user; absent for defaults.
   */
  spelled: Partial<Record<keyof Table, string>>;
}

/** Fields every builder takes. */
export type FlagOptions<T> = Omit<Flag<T>, "parse" | "value"> & { value?: string };

/** Options of {@link flag.int} and {@link flag.number}. */
export interface NumberOptions {
  /** The smallest accepted value. */
  min?: number;
  /** The largest accepted value. */
  max?: number;
}

const decimal = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function rangeText(o: NumberOptions): string {
  if (o.min !== undefined && o.max !== undefined) return ` from ${o.min} to ${o.max}`;
  if (o.min !== undefined) return ` ≥ ${o.min}`;
  if (o.max !== undefined) return ` ≤ ${o.max}`;
  return "";
}

function parseNumber(raw: string, o: NumberOptions & { int?: boolean }): number {
  const what = `${o.int ? "a whole number" : "a number"}${rangeText(o)}`;
  const v = decimal.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isFinite(v) || (o.int && !Number.isSafeInteger(v))) {
    throw new Error(`${JSON.stringify(raw)} is not ${what}`);
  }
  if ((o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max)) {
    throw new Error(`${raw} is out of range: use ${what}`);
  }
  return v;
}

function text(o: FlagOptions<string> & { default: string }): Flag<string>;
function text(o: FlagOptions<string | undefined>): Flag<string | undefined>;
function text(o: FlagOptions<string | undefined>): Flag<string | undefined> {
  return { value: "TEXT", ...o, parse: (raw) => raw };
}

function int(o: FlagOptions<number> & NumberOptions & { default: number }): Flag<number>;
function int(o: FlagOptions<number | undefined> & NumberOptions): Flag<number | undefined>;
function int(o: FlagOptions<number | undefined> & NumberOptions): Flag<number | undefined> {
  return { value: "N", ...o, parse: (raw) => parseNumber(raw, { ...o, int: true }) };
}

function number(o: FlagOptions<number> & NumberOptions & { default: number }): Flag<number>;
function number(o: FlagOptions<number | undefined> & NumberOptions): Flag<number | undefined>;
function number(o: FlagOptions<number | undefined> & NumberOptions): Flag<number | undefined> {
  return { value: "X", ...o, parse: (raw) => parseNumber(raw, o) };
}

function choice<C extends string>(
  o: FlagOptions<C> & { choices: readonly C[]; default: C },
): Flag<C>;
function choice<C extends string>(
  o: FlagOptions<C | undefined> & { choices: readonly C[] },
): Flag<C | undefined>;
function choice<C extends string>(
  o: FlagOptions<C | undefined> & { choices: readonly C[] },
): Flag<C | undefined> {
  return {
    value: o.choices.join("|"),
    ...o,
    parse: (raw) => {
      const hit = o.choices.find((c) => c.toLowerCase() === raw.trim().toLowerCase());
      if (hit === undefined) {
        throw new Error(`${JSON.stringify(raw)} is not one of ${o.choices.join(", ")}`);
      }
      return hit;
    },
  };
}

function path(o: FlagOptions<string> & { default: string }): Flag<string>;
function path(o: FlagOptions<string | undefined>): Flag<string | undefined>;
function path(o: FlagOptions<string | undefined>): Flag<string | undefined> {
  return {
    value: "PATH",
    ...o,
    parse: (raw) => {
      if (raw === "") throw new Error("the path is empty");
      return raw;
    },
  };
}

function sw(o: Omit<FlagOptions<boolean>, "default" | "value">): Flag<boolean> {
  return {
    ...o,
    default: false,
    parse: (raw) => {
      const v = raw.toLowerCase();
      if (["", "1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off"].includes(v)) return false;
      throw new Error(`${JSON.stringify(raw)} is not true or false (or give the flag alone)`);
    },
  };
}

function custom<T>(o: FlagOptions<T> & { parse(raw: string): T; value: string }): Flag<T> {
  return o;
}

/**
 * Row builders: `text`, `int`, `number` (with `min`/`max`), `choice` (case-insensitive),
 * `path`, `switch` (no value; `--x=false` also works) and `custom` (own `parse`).
 *
 * @example
 * ```ts
 * import { flag } from "./flags.ts";
 * const cfg = flag.number({ name: "cfg", also: ["cfg-scale"], group: "Sampling",
 *   help: "guidance scale", min: 0, max: 100, default: 7.5 });
 * console.log(cfg.parse("7")); // 7
 * ```
 */
export const flag = { text, int, number, choice, path, switch: sw, custom } as const;

/** `--Sampling_Method` → `sampling-method`. */
function normalize(name: string): string {
  return name.replaceAll("_", "-");
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length];
}

/** Every spelling of every row (`--seed`, `-s`, …) → its key; throws on a clash in the table. */
export function spellings(table: Record<string, Flag<unknown>>): Map<string, string> {
  const map = new Map<string, string>();
  const add = (spelling: string, key: string) => {
    const other = map.get(spelling);
    if (other !== undefined) {
      throw new Error(`flag table: ${spelling} is given to both ${other} and ${key}`);
    }
    map.set(spelling, key);
  };
  for (const [key, row] of Object.entries(table)) {
    add(`--${normalize(row.name)}`, key);
    for (const a of row.also ?? []) add(`--${normalize(a)}`, key);
    if (row.short) add(`-${row.short}`, key);
  }
  return map;
}

/**
 * Parses `args` against `table`: every value is parsed and validated by its row, so a bad value
 * fails here, before any work starts, with a {@link UsageError} that quotes the user's spelling.
 * Absent flags take their row's `env` variable (when set and not empty), then its default.
 *
 * @example
 * ```ts
 * import { flag, parseFlags } from "./flags.ts";
 * const table = { out: flag.path({ name: "out", short: "o", also: ["output"], group: "Output",
 *   help: "where", default: "out/" }) };
 * console.log(parseFlags(table, ["--output", "a.png"]).values.out); // "a.png"
 * ```
 */
export function parseFlags<Table extends Record<string, Flag<unknown>>>(
  table: Table,
  args: readonly string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ParsedFlags<Table> {
  const names = spellings(table);
  const raw = new Map<string, { value: string; spelled: string }>();
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-" || /^-\d/.test(arg)) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const spelled = eq >= 0 ? arg.slice(0, eq) : arg;
    const key = names.get(spelled.startsWith("--") ? normalize(spelled) : spelled);
    if (key === undefined) throw new UsageError(unknownFlag(spelled, names));
    const row = table[key];
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (row.value === undefined) value = "";
    else if (i + 1 < args.length) value = args[++i];
    else throw new UsageError(`${spelled} needs a value (${row.value}): ${spelled} ${row.value}`);
    raw.set(key, { value, spelled });
  }
  const values: Record<string, unknown> = {};
  const spelledOut: Record<string, string> = {};
  for (const [key, row] of Object.entries(table)) {
    let given = raw.get(key);
    if (!given && row.env) {
      const v = env(row.env);
      if (v !== undefined && v !== "") given = { value: v, spelled: row.env };
    }
    if (!given) {
      values[key] = row.default;
      continue;
    }
    spelledOut[key] = given.spelled;
    try {
      values[key] = row.parse(given.value);
    } catch (e) {
      const shown = given.spelled === row.env
        ? `${row.env}=${given.value}`
        : `${given.spelled} ${given.value}`;
      throw new UsageError(`${shown}: ${(e as Error).message}`, { cause: e });
    }
  }
  return {
    values: values as FlagValues<Table>,
    positionals,
    spelled: spelledOut as Partial<Record<keyof Table, string>>,
  };
}

function unknownFlag(spelled: string, names: Map<string, string>): string {
  const known = [...names.keys()];
  const best = known.map((k) => ({ k, d: distance(spelled.toLowerCase(), k.toLowerCase()) }))
    .sort((a, b) => a.d - b.d)[0];
  const hint = best && best.d <= Math.max(2, Math.floor(spelled.length / 4))
    ? `; did you mean ${best.k}?`
    : "";
  return `unknown flag ${spelled}${hint} (--help lists every flag)`;
}

/**
 * The `--help` text of a table: rows grouped under their `group` in table order, each with every
 * spelling (`-s, --seed N  (also …)`) and its default.
 *
 * @example
 * ```ts
 * import { flag, helpText } from "./flags.ts";
 * const table = { seed: flag.text({ name: "seed", short: "s", group: "Sampling", help: "seed" }) };
 * console.log(helpText(table, { usage: "usage: gen.ts PROMPT [flags]" }));
 * ```
 */
export function helpText(
  table: Record<string, Flag<unknown>>,
  options: { usage: string; columns?: number },
): string {
  const { usage, columns = 100 } = options;
  const groups = new Map<string, string[][]>();
  for (const row of Object.values(table)) {
    const longs = [row.name, ...(row.also ?? [])].map((n) => `--${n}`).join(", ");
    const head = `${row.short ? `-${row.short}, ` : "    "}${longs}${
      row.value ? ` ${row.value}` : ""
    }`;
    const def = row.shown ??
      (row.default === undefined || row.default === false
        ? undefined
        : row.default === ""
        ? '""'
        : String(row.default));
    const body = row.help + (def !== undefined ? ` (default ${def})` : "") +
      (row.env ? `; or set ${row.env}` : "");
    const list = groups.get(row.group) ?? [];
    list.push([head, body]);
    groups.set(row.group, list);
  }
  const width = Math.min(
    30,
    Math.max(...[...groups.values()].flat().map(([h]) => h.length)) + 2,
  );
  const lines = [usage, ""];
  for (const [group, rows] of groups) {
    lines.push(`${group}:`);
    for (const [head, body] of rows) {
      const wrapped = wrap(body, columns - width - 2);
      if (head.length + 2 > width) lines.push(`  ${head}`);
      else lines.push(`  ${head.padEnd(width)}${wrapped.shift()}`);
      for (const more of wrapped) lines.push(`  ${" ".repeat(width)}${more}`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

/** Splits `text` into lines of at most `width` characters at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines;
}
