import assert from "node:assert/strict";
import { openSafetensors } from "../../src/weights/safetensors.ts";
import { checkStrict, StrictImportError } from "../../src/weights/strict.ts";
import { modelDir } from "./fixtures.ts";

Deno.test("strict: a complete checkpoint passes and its unused keys are returned", () => {
  const unused = checkStrict(
    { "a.weight": [2, 3], "a.bias": [2] },
    new Map([
      ["a.weight", { shape: [2, 3] }],
      ["a.bias", { shape: [2] }],
      ["extra", { shape: [1] }],
    ]),
  );
  assert.deepEqual(unused, ["extra"]);
});

Deno.test("strict: one error lists every missing key and every shape mismatch", () => {
  const expected = { "a.weight": [2, 3], "a.bias": [2], "b.weight": [4], "c.weight": [1, 1] };
  const found = { "a.weight": [3, 2], "a.bias": [2], "c.weight": [1], "zzz": [5] };
  let err: unknown;
  try {
    checkStrict(expected, found, { component: "unet" });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof StrictImportError);
  assert.deepEqual(err.missing, ["b.weight"]);
  assert.deepEqual(err.mismatched, [
    { key: "a.weight", expected: [2, 3], found: [3, 2] },
    { key: "c.weight", expected: [1, 1], found: [1] },
  ]);
  assert.deepEqual(err.unused, ["zzz"]);
  assert.match(err.message, /^unet: the checkpoint does not fit the model \(1 missing, 2 with/);
  assert.match(err.message, /missing: b\.weight/);
  assert.match(err.message, /shape mismatch: a\.weight: expected \[2,3\], found \[3,2\]/);
  assert.match(err.message, /shape mismatch: c\.weight: expected \[1,1\], found \[1\]/);
});

Deno.test("strict: an SD 2 U-Net checked against SD 1.5 shapes reports every proj_in/out", async () => {
  const open = async (m: string) => {
    const f = await openSafetensors(`${modelDir(m)}/unet/diffusion_pytorch_model.safetensors`);
    f.close();
    return f.tensors;
  };
  const sd15 = await open("tiny-sd15"), sd2 = await open("tiny-sd2");
  assert.throws(() => checkStrict(sd15, sd2, { component: "unet" }), (e: unknown) => {
    assert.ok(e instanceof StrictImportError);
    assert.deepEqual(e.missing, []);
    assert.equal(e.mismatched.length, 32); // 16 transformers × proj_in, proj_out
    assert.ok(e.mismatched.every((m) => /proj_(in|out)\.weight$/.test(m.key)));
    assert.deepEqual(e.mismatched[0].found.length, 2);
    return true;
  });
});
