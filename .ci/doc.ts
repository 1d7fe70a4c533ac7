/**
 * The documentation checks of `deno task check`, over every entry point in deno.json's `exports`:
 *
 * - `lint`: `deno doc --lint` on all entry points at once (a type one entry point references and
 *   another exports is public, as on JSR's pages), which must report nothing.
 * - `test`: every JSDoc example of the published modules (and every TypeScript block of the README)
 *   type-checks (`deno check --doc-only`),
 *   and runs (`deno test --doc`) unless its fence says `no-run`: examples that need a real
 *   checkpoint, write files, or only declare what they use (`declare const x: T`, which a test
 *   body cannot hold). Those are type-checked only: the run pass works on a copy of the sources in
 *   which `no-run` reads `ignore` (`ignore` itself would skip the type check too).
 *
 * usage: deno run -A .ci/doc.ts lint | test [FILE…]   (default: every published module)
 *
 * @module
 */
const root = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
const entries: string[] = Object.values(config.exports as Record<string, string>);

/** The published TypeScript files (the entry points and what they import from src/). */
async function sourceFiles(): Promise<string[]> {
  const files = entries.filter((e) => !e.startsWith("./src/"));
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(new URL(dir, root))) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.name.endsWith(".ts")) files.push(path);
    }
  };
  await walk("./src");
  return files.sort();
}

/**
 * `file`'s text for the run pass: examples fenced `no-run` are fenced `ignore`, and relative imports
 * in examples point at the original files (so an example that also imports `@denoise/sd` sees one
 * copy of each module).
 */
async function forRunPass(file: string): Promise<[string, number]> {
  let n = 0;
  const original = new URL(file, root);
  const text = (await Deno.readTextFile(original))
    .replace(/^(\s*\*?\s*```(?:ts|typescript)\b[^\n]*)\bno-run\b/gm, (_, head) => {
      n++;
      return `${head}ignore`;
    })
    .replace(
      /^(\s*\*[^\n]*\bfrom\s+")(\.{1,2}\/[^"]+)"/gm,
      (_, head, spec) => `${head}${new URL(spec, original).href}"`,
    );
  return [text, n];
}

async function run(args: string[]): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn();
  return (await child.status).code;
}

const mode = Deno.args[0];
if (mode === "lint") {
  Deno.exit(await run(["doc", "--lint", ...entries]));
} else if (mode === "test") {
  const all = await sourceFiles();
  const only = Deno.args.slice(1).map((f) => (f.startsWith("./") ? f : `./${f}`));
  const files = only.length > 0 ? only : all;
  // 1. every example type-checks as a module of its own (`declare const x: T` is fine there)
  const checked = await run(["check", "--doc-only", "README.md", ...files]);
  if (checked !== 0) Deno.exit(checked);
  // 2. the runnable ones run: a copy of the sources with `no-run` fences turned into `ignore`,
  // importing the package through deno.json's "@denoise/sd" mapping, from the repository root
  const copy = await Deno.makeTempDir({ prefix: "denoise-doc-" });
  let skipped = 0;
  try {
    for (const file of all) {
      const [text, n] = await forRunPass(file);
      if (files.includes(file)) skipped += n;
      const target = `${copy}/${file}`;
      await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
      await Deno.writeTextFile(target, text);
    }
    await Deno.symlink(new URL("kernels", root).pathname, `${copy}/kernels`);
    console.log(
      `doc tests: ${files.length} modules; ${skipped} no-run examples are type-checked only`,
    );
    const config = new URL("deno.json", root).pathname;
    const copies = files.map((f) => `${copy}/${f}`);
    // step 1 type-checked these examples: run them without checking again, two files at a time
    const status = await run([
      "test",
      "-A",
      "--doc",
      "--no-check",
      "--parallel",
      "--config",
      config,
      ...copies,
    ]);
    if (status !== 0) {
      console.error(
        "doc tests failed: an example that needs a real checkpoint, other missing files, or writes " +
          "files can be fenced ```ts no-run (it is then type-checked only)",
      );
    }
    Deno.exit(status);
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
} else {
  console.error("usage: deno run -A .ci/doc.ts lint | test [FILE…]");
  Deno.exit(2);
}
