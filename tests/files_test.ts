import assert from "node:assert/strict";
import { pendingTempFiles, writeFileExclusive } from "../src/io/files.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** A stream whose bytes arrive when `finish` is called. */
function heldStream(bytes: Uint8Array): { stream: ReadableStream<Uint8Array>; finish(): void } {
  let finish = () => {};
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes.subarray(0, 1));
      finish = () => {
        c.enqueue(bytes.subarray(1));
        c.close();
      };
    },
  });
  return { stream, finish: () => finish() };
}

Deno.test("writeFileExclusive: a file created while the write runs is never replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_files_" });
  try {
    const path = `${dir}/image.png`;
    const held = heldStream(new Uint8Array([1, 2, 3, 4]));
    const writing = writeFileExclusive(path, held.stream);
    while (pendingTempFiles().length === 0) await new Promise((r) => setTimeout(r, 1));
    await Deno.writeFile(path, new Uint8Array([9])); // another program takes the name meanwhile
    held.finish();
    await assert.rejects(writing, Deno.errors.AlreadyExists);
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([9]), "the other file is intact");
    assert.deepEqual(await names(dir), ["image.png"], "no temporary file is left");
    assert.deepEqual(pendingTempFiles(), []);

    await writeFileExclusive(path, new Uint8Array([5, 6]), { overwrite: true });
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([5, 6]));
    // the temporary name does not grow with the target's: a 255-byte name can be written
    const long = `${dir}/${"é".repeat(125)}a.png`;
    await writeFileExclusive(long, new Uint8Array([7]));
    assert.deepEqual(await Deno.readFile(long), new Uint8Array([7]));
    assert.equal((await names(dir)).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileExclusive: SIGTERM between the temporary write and the final name removes it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_files_" });
  try {
    const script = `
      import { writeFileExclusive, pendingTempFiles } from "${ROOT}src/io/files.ts";
      import { onInterrupt } from "${ROOT}src/cli/interrupt.ts";
      onInterrupt([]);
      const stream = new ReadableStream({ start(c) { c.enqueue(new Uint8Array(1 << 20)); } });
      writeFileExclusive(Deno.args[0], stream);
      while (pendingTempFiles().length === 0) await new Promise((r) => setTimeout(r, 1));
      console.log("ready");
      await new Promise(() => setInterval(() => {}, 1000));
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script, `${dir}/out.png`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    const temps = (await names(dir)).filter((n) => n.endsWith(".tmp"));
    assert.equal(temps.length, 1, "the temporary file exists while the write is held");
    child.kill("SIGTERM");
    while (!(await reader.read()).done) { /* drain */ }
    const status = await child.status;
    const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    assert.equal(status.code, 143, err);
    assert.match(err, /interrupted \(SIGTERM\)/);
    assert.deepEqual(await names(dir), [], "no temporary file and no partial image are left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
