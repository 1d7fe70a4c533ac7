import assert from "node:assert/strict";
import { prepareOutput } from "../../src/cli/output.ts";
import { explainFsError } from "../../src/cli/paths.ts";
import { gen, MODEL, ok, parameters, ROOT, usage } from "./gen_util.ts";

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** Makes `dir` unwritable even for root (`chattr +i`), or with chmod for other users. */
async function lock(dir: string): Promise<(() => Promise<void>) | undefined> {
  const run = (cmd: string, ...args: string[]) =>
    new Deno.Command(cmd, { args, stderr: "null", stdout: "null" }).output().then((o) => o.success)
      .catch(() => false);
  if (await run("chattr", "+i", dir)) return async () => void await run("chattr", "-i", dir);
  if (Deno.uid() !== 0) {
    await Deno.chmod(dir, 0o555);
    return () => Deno.chmod(dir, 0o755);
  }
  return undefined;
}

Deno.test({
  name: "gen: a bad destination is refused before the model loads, and leaves nothing behind",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_out_" });
    try {
      await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
      await Deno.mkdir(`${dir}/locked`);
      const unlock = await lock(`${dir}/locked`);
      const m = ["a fox", "-m", MODEL!, "--steps", "1", "-W", "64", "-H", "64"];
      const long = `${dir}/${"x".repeat(252)}.png`;
      const [jpg, txt, locked, noWrite, tooLong, failed] = await Promise.all([
        gen([...m, "-o", `${dir}/image.jpg`]),
        gen([...m, "--out", `${dir}/notes.txt`]),
        unlock ? gen([...m, "-o", `${dir}/locked/`]) : undefined,
        gen([...m, "-o", `${dir}/new/`], { permissions: ["--allow-read", "--allow-env"] }),
        gen([...m, "-o", long]),
        gen(["a fox", "-m", dir, "-o", `${dir}/missing/deeper/x.png`]),
      ]).finally(() => unlock?.());
      usage(
        jpg,
        /-o .*image\.jpg: denoise writes PNG files: use -o .*image\.png, or -o .*jpg\/ for/,
      );
      usage(txt, /--out .*notes\.txt is an existing file, not a folder or a \.png/);
      assert.equal(await Deno.readTextFile(`${dir}/notes.txt`), "mine");
      if (locked) usage(locked, /-o .*locked\/: cannot write in .*locked: permission denied/);
      else console.log("skipped the locked-folder case: neither chattr nor a non-root user");
      usage(noWrite, /deno was not given write access: run with -A or --allow-write/);
      usage(tooLong, /the file name x{24}… is 256 bytes; file systems allow 255/);
      for (const r of [jpg, txt, locked, noWrite, tooLong]) {
        if (r) assert.doesNotMatch(r.stderr, /^loaded /m, "refused before loading");
      }
      assert.equal(failed.code, 1, failed.stderr);
      assert.match(failed.stderr, /has no model_index\.json/);
      assert.deepEqual(await names(dir), ["locked", "notes.txt"], "no folder or file was left");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gen: runs into one folder never share a number, numbering passes 99999, long names fit",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_out_" });
    try {
      await Deno.writeFile(`${dir}/99999-1.png`, new Uint8Array());
      const m = ["a fox", "-m", MODEL!, "--steps", "1", "-W", "64", "-H", "64", "-s", "5"];
      const long = `${dir}/${"y".repeat(251)}.png`;
      const [a, b, c] = await Promise.all([
        gen([...m, "-o", dir]),
        gen([...m, "-o", dir]),
        gen([...m, "-o", long]),
      ]);
      for (const r of [a, b, c]) ok(r);
      assert.deepEqual(
        [a.stdout.trim(), b.stdout.trim()].sort(),
        [`${dir}/100000-5.png`, `${dir}/100001-5.png`],
      );
      assert.equal(c.stdout.trim(), long);
      assert.match((await parameters(long)).text, /Seed: 5,/);
      assert.ok(!(await names(dir)).some((n) => n.endsWith(".tmp")), "no temporary files");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gen: Ctrl-C (SIGINT) while sampling exits 130 and removes the folder it made",
  ignore: MODEL === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "denoise_out_" });
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}gen.ts`, "a fox", "-m", MODEL!, "--steps", "500", "-W", "64"]
          .concat(["-H", "64", "-o", `${dir}/fresh/`]),
        cwd: ROOT,
        env: { DENOISE_MODEL: "" },
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let err = "";
      while (!/ step \d+\/\d+ /.test(err)) {
        const { value, done } = await reader.read();
        if (done) break;
        err += value;
      }
      assert.ok(await exists(`${dir}/fresh`), "the run made its folder before loading");
      child.kill("SIGINT");
      for (let r = await reader.read(); !r.done; r = await reader.read()) err += r.value;
      const status = await child.status;
      assert.equal(status.code, 130, err);
      assert.match(err, /\ninterrupted \(SIGINT\)\n$/);
      assert.deepEqual(await names(dir), [], "the empty folder the run made is gone");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("prepareOutput: what is a file, what is a folder; errors in words", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_out_" });
  try {
    const file = await prepareOutput(`${dir}/a/b/pic.PNG`, { count: 1, flag: "-o" });
    assert.equal(file.kind, "file");
    assert.ok(await exists(`${dir}/a/b`));
    file.abandon();
    assert.deepEqual(await names(dir), [], "abandon removes the folders it made");
    const three = await prepareOutput(`${dir}/pic.png`, { count: 3, flag: "-o" });
    const written = [];
    for (let i = 0; i < 3; i++) {
      written.push(await three.write(new Uint8Array([i]), { seed: 1n, index: i }));
    }
    assert.deepEqual(written, [
      `${dir}/pic-0001.png`,
      `${dir}/pic-0002.png`,
      `${dir}/pic-0003.png`,
    ]);
    await assert.rejects(
      () => prepareOutput(`${dir}/pic.png`, { count: 3, flag: "--out" }),
      /pic-0001\.png exists: pass --overwrite/,
    );
    for (const name of [`${dir}/v1.5`, `${dir}/plain`, `${dir}/with.dot/`]) {
      assert.equal((await prepareOutput(name, { count: 1, flag: "-o" })).kind, "folder", name);
    }
    await Deno.mkdir(`${dir}/folder.png`);
    assert.equal(
      (await prepareOutput(`${dir}/folder.png`, { count: 1, flag: "-o" })).kind,
      "folder",
    );
    const once = await prepareOutput(`${dir}/once.png`, { count: 1, flag: "-o" });
    await Deno.writeFile(`${dir}/once.png`, new Uint8Array([1])); // appears while generating
    const notes: string[] = [];
    const saved = await once.write(new Uint8Array([2]), {
      seed: 1n,
      index: 0,
      notice: (n) => notes.push(n),
    });
    assert.equal(saved, `${dir}/once (1).png`, "the image is not lost");
    assert.match(notes[0], /once\.png appeared while this run worked; wrote .*once \(1\)\.png/);
    assert.deepEqual(await Deno.readFile(`${dir}/once.png`), new Uint8Array([1]));
    assert.match(
      explainFsError(new Deno.errors.PermissionDenied("EACCES"), "-o x").message,
      /^-o x: permission denied/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
