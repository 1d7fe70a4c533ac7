import assert from "node:assert/strict";
import { staleFiles } from "../../kernels/build.ts";
import { KERNEL_SOURCES } from "../../kernels/mod.ts";
import { loadTemplates } from "../../src/gpu/kernel.ts";

Deno.test("kernels: the generated string modules match kernels/*.wgsl.jinja", async () => {
  const stale = await staleFiles();
  assert.deepEqual(stale, [], `out of date: ${stale.join(", ")}: run \`deno task kernels\``);
  for await (const e of Deno.readDir(new URL("../../kernels/", import.meta.url))) {
    if (!e.name.endsWith(".wgsl.jinja")) continue;
    const stem = e.name.slice(0, -".wgsl.jinja".length);
    const text = await Deno.readTextFile(new URL(`../../kernels/${e.name}`, import.meta.url));
    assert.equal(KERNEL_SOURCES[stem], text, `${stem}: the module graph holds another text`);
  }
});

Deno.test("kernels: an unknown template is refused with the names that exist", async () => {
  await assert.rejects(loadTemplates(["gemm", "nope"]), /no kernel template "nope".*gemm/);
});

Deno.test({
  name: "kernels: the package runs its own kernels with no permission at all (no read, no net)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const script = `${dir}/no_permissions.ts`;
    const gpu = new URL("../../src/gpu/mod.ts", import.meta.url).href;
    const ops = new URL("../../src/ops/mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { Runtime } from "${gpu}";\n` +
        `import { linear, unary } from "${ops}";\n` +
        `const rt = await Runtime.create();\n` +
        `const x = rt.upload(new Float32Array([1, -2, 3, 0.5]), [2, 2]);\n` +
        `const y = linear(unary(x, "relu"), x);\n` +
        `console.log(JSON.stringify([...await y.read()]));\n`,
    );
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          "--config",
          new URL("../../deno.json", import.meta.url).pathname,
          script,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `the script failed without permissions:\n${err}`);
      const got = JSON.parse(new TextDecoder().decode(out.stdout));
      // relu(x) · xᵀ for x = [[1, -2], [3, 0.5]]: [[1, 3], [2, 9.25]]
      assert.deepEqual(got, [1, 3, 2, 9.25]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
