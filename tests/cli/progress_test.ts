import assert from "node:assert/strict";
import { formatSeconds, Progress } from "../../src/cli/progress.ts";
import { MODEL, ROOT } from "./gen_util.ts";

/** Shows the erase-to-end-of-line sequence `ESC[K` as `<EL>`. */
function el(s: string): string {
  return s.replaceAll("\x1b[K", "<EL>");
}

/** A Progress on a fake clock; `tick(ms)` advances it. */
function fake(tty: boolean) {
  let now = 0;
  const out: string[] = [];
  const p = new Progress({ write: (s) => out.push(s), tty, now: () => now });
  return { p, out, tick: (ms: number) => (now += ms) };
}

Deno.test("progress: the ETA follows the recent steps, not the average since the start", () => {
  const { p, out, tick } = fake(false);
  p.begin("[1/1]", 20);
  for (let i = 1; i <= 20; i++) {
    tick(i === 1 ? 5000 : i <= 10 ? 100 : 1000); // compile, then fast, then slow steps
    p.step(i);
    if (i === 3) assert.equal(p.rate(), 10, "the first (compiling) step no longer counts");
    if (i === 15) {
      assert.ok(Math.abs(p.rate() - 1) < 1e-9, `rate ${p.rate()} after five 1 s steps`);
    }
  }
  const lines = out.join("").split("\n").filter(Boolean);
  assert.deepEqual(lines.map((l) => / step (\d+)\//.exec(l)![1]), ["1", "5", "10", "15", "20"]);
  assert.equal(lines[3], "[1/1] step 15/20  1.00 it/s  ETA 5.00 s");
  assert.equal(lines[0], "[1/1] step 1/20  0.20 it/s  ETA 95.0 s");
  assert.ok(out.every((s) => !s.includes("\r") && !s.includes("\x1b")), "plain lines");
  p.phase("decoding 64×64 with the VAE in 12 tiles");
  for (let i = 1; i <= 12; i++) p.phaseStep(i, 12);
  p.end("20 steps in 25.4 s, decoded in 1.00 s");
  assert.deepEqual(out.slice(-6), [
    "[1/1] decoding 64×64 with the VAE in 12 tiles\n",
    "[1/1] decoding 64×64 with the VAE in 12 tiles: 3/12\n",
    "[1/1] decoding 64×64 with the VAE in 12 tiles: 6/12\n",
    "[1/1] decoding 64×64 with the VAE in 12 tiles: 9/12\n",
    "[1/1] decoding 64×64 with the VAE in 12 tiles: 12/12\n",
    "[1/1] 20 steps in 25.4 s, decoded in 1.00 s\n",
  ]);
});

Deno.test("progress: on a terminal one line is redrawn and cleared to its end", () => {
  const { p, out, tick } = fake(true);
  p.begin("[1/2]", 3);
  for (let i = 1; i <= 3; i++) {
    tick(1000);
    p.step(i);
  }
  assert.equal(out.length, 3);
  for (const s of out.map(el)) {
    assert.match(s, /^\r[█░]{20} \[1\/2\] step \d\/3 .*ETA \d+\.\d+ s<EL>$/);
  }
  p.phase("decoding 64×64 with the VAE");
  assert.equal(out.at(-1), "\r[1/2] decoding 64×64 with the VAE…\x1b[K");
  p.interrupt();
  assert.equal(out.at(-1), "\n", "Ctrl-C leaves the cursor on a fresh line");
  p.interrupt();
  assert.equal(out.at(-1), "\n");
  assert.equal(out.filter((s) => s === "\n").length, 1, "no empty line when none is open");
  assert.equal(formatSeconds(9.7), "9.70 s");
  assert.equal(formatSeconds(334), "5 min 34 s");
});

Deno.test({
  name:
    "gen: on a terminal the bar clears to the end of the line, then decoding and a summary show",
  ignore: MODEL === undefined,
  fn: async () => {
    const hasScript = await new Deno.Command("script", { args: ["--version"], stdout: "null" })
      .output().then((o) => o.success, () => false);
    if (!hasScript) {
      if (Deno.env.get("CI") === "true") throw new Error("`script` (util-linux) is missing");
      console.log("skipped: no `script` command to give gen.ts a terminal");
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "denoise_tty_" });
    try {
      const cmd = [Deno.execPath(), "run", "-A", `${ROOT}gen.ts`, "a fox", "-m", MODEL!]
        .concat(["--steps", "3", "--sampler", "euler", "-W", "64", "-H", "64", "-o", dir])
        .map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
      const r = await new Deno.Command("script", {
        args: ["-qec", cmd, "/dev/null"],
        cwd: ROOT,
        env: { DENOISE_MODEL: "" },
      }).output();
      const text = el(new TextDecoder().decode(r.stdout));
      assert.equal(r.code, 0, text);
      const bars = text.match(/\r[█░]+ \[1\/1\] step \d\/3 [^\r\n]*/g) ?? [];
      assert.equal(bars.length, 3, text);
      for (const b of bars) assert.ok(b.endsWith("<EL>"), `${JSON.stringify(b)} clears its end`);
      assert.match(text, /\r\[1\/1\] decoding 64×64 with the VAE…<EL>/);
      assert.match(text, /\r\[1\/1\] 3 steps in [\d.]+ s, decoded in [\d.]+ s<EL>\r?\n/);
      assert.match(text, /\ndone: 1 image in /);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
