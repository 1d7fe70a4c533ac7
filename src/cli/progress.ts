/**
 * Progress that tells the truth: the rate and ETA come from the most recent steps (the first
 * step, which compiles shaders, stops counting once later ones exist), decoding is a phase of its
 * own, and a run ends with a summary. On a terminal one status line is redrawn (`\r`, cleared to
 * the end with `ESC[K`); elsewhere (a pipe, a log file, CI) a few plain lines are printed: the
 * first step, each quarter, the last.
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const p = new Progress({ write: (s) => Deno.stderr.writeSync(new TextEncoder().encode(s)) });
 * p.begin("[1/1]", 20);
 * for (let i = 1; i <= 20; i++) p.step(i);
 * p.phase("decoding 512×512 with the VAE");
 * p.end("decoded in 1.2 s");
 * ```
 *
 * @module
 */

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Where text goes (stderr). */
  write(text: string): void;
  /** Redraw one line (a terminal); default: whether stderr is a terminal. */
  tty?: boolean;
  /** The clock in milliseconds (tests pass their own). */
  now?: () => number;
  /** Width of the terminal bar. */
  barWidth?: number;
  /** Terminal width: longer status lines are cut so they never wrap (default: the console's). */
  columns?: number;
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns || 100;
  } catch {
    return 100;
  }
}

/** How many recent step durations the rate is computed from. */
const WINDOW = 5;

/** Seconds, short: `0.42 s`, `12.3 s`, `4 min 05 s`. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 100) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")} min`;
}

/**
 * A progress reporter for one run: `begin` a sampling phase, `step` after each step, `phase` for a
 * stage without steps (decoding), `end` to close the line; `interrupt` leaves the cursor on a
 * fresh line (for a Ctrl-C handler).
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const lines: string[] = [];
 * let t = 0;
 * const p = new Progress({ write: (s) => lines.push(s), tty: false, now: () => (t += 500) });
 * p.begin("[1/1]", 4);
 * for (let i = 1; i <= 4; i++) p.step(i);
 * console.log(lines.join("")); // plain lines, one per quarter
 * ```
 */
export class Progress {
  readonly #write: (text: string) => void;
  readonly #tty: boolean;
  readonly #now: () => number;
  readonly #barWidth: number;
  readonly #columns: number;
  #label = "";
  #total = 0;
  #times: number[] = [];
  #lastPrinted = 0;
  #open = false;
  #phase = "";
  #phaseDone = 0;

  constructor(options: ProgressOptions) {
    this.#write = options.write;
    this.#tty = options.tty ?? Deno.stderr.isTerminal();
    this.#now = options.now ?? (() => performance.now());
    this.#barWidth = options.barWidth ?? 20;
    this.#columns = options.columns ?? consoleColumns();
  }

  /** Starts counting `total` steps under `label` (`"[2/4]"`). */
  begin(label: string, total: number): void {
    this.#label = label;
    this.#total = total;
    this.#times = [this.#now()];
    this.#lastPrinted = 0;
  }

  /** Steps per second over the recent steps (the first, compiling, step only while alone). */
  rate(): number {
    const t = this.#times;
    const n = t.length - 1;
    if (n < 1) return NaN;
    const from = n >= 2 ? Math.max(1, n - WINDOW) : 0;
    return (n - from) / ((t[n] - t[from]) / 1000);
  }

  /** Seconds since `begin`. */
  elapsed(): number {
    return (this.#now() - this.#times[0]) / 1000;
  }

  /** Reports that `done` steps are finished (of `total`, when the run now knows better). */
  step(done: number, total = this.#total): void {
    this.#total = total;
    this.#times.push(this.#now());
    const rate = this.rate();
    const eta = (total - done) / rate;
    const text = `${this.#label} step ${done}/${total}  ${rate.toFixed(2)} it/s  ETA ${
      formatSeconds(eta)
    }`;
    if (this.#tty) {
      const filled = Math.round((done / total) * this.#barWidth);
      const bar = "█".repeat(filled) + "░".repeat(this.#barWidth - filled);
      this.#line(`${bar} ${text}`);
      return;
    }
    const quarter = Math.floor((4 * done) / total);
    if (done === 1 || done === total || quarter > Math.floor((4 * this.#lastPrinted) / total)) {
      this.#write(`${text}\n`);
      this.#lastPrinted = done;
    }
  }

  /** Shows a stage without steps (`"decoding 512×512 with the VAE"`), replacing the bar. */
  phase(text: string): void {
    this.#phase = text;
    this.#phaseDone = 0;
    if (this.#tty) this.#line(`${this.#label} ${text}…`);
    else this.#write(`${this.#label} ${text}\n`);
  }

  /** Counts parts of the current phase (`4/12` tiles): redrawn on a terminal, quarters elsewhere. */
  phaseStep(done: number, total: number): void {
    const text = `${this.#label} ${this.#phase}: ${done}/${total}`;
    if (this.#tty) {
      this.#line(`${text}…`);
      return;
    }
    if (
      done === total || Math.floor((4 * done) / total) > Math.floor((4 * this.#phaseDone) / total)
    ) {
      this.#write(`${text}\n`);
      this.#phaseDone = done;
    }
  }

  /** Ends the current line with `text` (a phase's or an image's summary). */
  end(text: string): void {
    if (this.#tty) {
      this.#line(`${this.#label} ${text}`);
      this.#write("\n");
      this.#open = false;
    } else {
      this.#write(`${this.#label} ${text}\n`);
    }
  }

  /** Prints a line of its own (a notice), keeping the status line below it on a terminal. */
  note(text: string): void {
    if (this.#open) this.#write("\r\x1b[K");
    this.#write(`${text}\n`);
    this.#open = false;
  }

  /** Moves to a fresh line if the status line is open (for Ctrl-C); synchronous. */
  interrupt(): void {
    if (this.#open) this.#write("\n");
    this.#open = false;
  }

  #line(text: string): void {
    const chars = [...text];
    const fitted = chars.length < this.#columns ? text : chars.slice(0, this.#columns - 1).join("");
    this.#write(`\r${fitted}\x1b[K`);
    this.#open = true;
  }
}
