import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as zlib from "node:zlib";
// @ts-types="@types/pngjs"
import { PNG } from "pngjs";
import {
  crc32,
  decodePng,
  encodePng,
  formatA1111Parameters,
  type RgbaImage,
  writePngFile,
} from "../src/io/png.ts";
import { readNpy } from "../src/io/npy.ts";
import { FIXTURES, seededRandom } from "./util.ts";

function testImage(width: number, height: number, opaque: boolean): RgbaImage {
  const r = seededRandom(width * 31 + height);
  const data = Uint8Array.from({ length: width * height * 4 }, () => Math.floor(r() * 256));
  if (opaque) { for (let i = 3; i < data.length; i += 4) data[i] = 255; }
  return { width, height, data };
}

/** The chunk types of a PNG, in file order. */
function chunkTypes(bytes: Uint8Array): string[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const types: string[] = [];
  for (let pos = 8; pos < bytes.length; pos += 12 + view.getUint32(pos)) {
    types.push(String.fromCharCode(...bytes.subarray(pos + 4, pos + 8)));
  }
  return types;
}

/** A chunk built by hand, for decoding tests. */
function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  new DataView(out.buffer).setUint32(8 + data.length, zlib.crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const PARAMETERS = "a cat, (fluffy:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a";

Deno.test("crc32 matches zlib's and the well-known IEND CRC", () => {
  assert.equal(crc32(new TextEncoder().encode("IEND")), 0xae426082);
  const r = seededRandom(5);
  for (const n of [0, 1, 7, 1000]) {
    const bytes = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    assert.equal(crc32(bytes), zlib.crc32(bytes) >>> 0, `length ${n}`);
  }
});

Deno.test("encodePng/decodePng round-trip RGBA pixels and text chunks", () => {
  const image = testImage(13, 7, false);
  const text = { parameters: PARAMETERS, Comment: "ünïcødé 猫 🐱", Software: "denoise" };
  const bytes = encodePng(image, { text });
  assert.deepEqual(chunkTypes(bytes).slice(0, 4), ["IHDR", "tEXt", "iTXt", "tEXt"]);
  const back = decodePng(bytes);
  assert.equal(back.width, 13);
  assert.equal(back.height, 7);
  assert.deepEqual(back.data, image.data);
  assert.deepEqual(back.text, text);
  // pngjs itself (which checks the CRCs of the chunks it knows) reads our file.
  const ref = PNG.sync.read(Buffer.from(bytes));
  assert.deepEqual(new Uint8Array(ref.data), image.data);
  // Latin-1 text is a tEXt chunk: keyword, NUL, bytes.
  const at = bytes.indexOf(0x70, 33); // the "p" of "parameters" in the first tEXt
  assert.equal(new TextDecoder().decode(bytes.subarray(at, at + 11)), "parameters\0");
});

Deno.test("opaque images are written as RGB and decode back to alpha 255", () => {
  const image = testImage(9, 4, true);
  const bytes = encodePng(image);
  assert.equal(bytes[25], 2); // IHDR colour type: truecolour without alpha
  assert.deepEqual(chunkTypes(bytes), ["IHDR", "IDAT", "IEND"]);
  const back = decodePng(bytes);
  assert.deepEqual(back.data, image.data);
  assert.deepEqual(back.text, {});
});

Deno.test("decodePng checks every chunk's CRC and rejects non-PNG input", () => {
  const bytes = encodePng(testImage(3, 3, true), { text: { parameters: "x" } });
  const bad = bytes.slice();
  bad[33 + 8 + 3] ^= 1; // a byte inside the tEXt chunk's keyword
  assert.throws(() => decodePng(bad), /chunk tEXt .* CRC .* corrupt/);
  assert.throws(() => decodePng(new Uint8Array([1, 2, 3])), /not a PNG file/);
  assert.throws(() => decodePng(bytes.subarray(0, bytes.length - 20)), /truncated/);
});

Deno.test("decodePng reads zTXt and compressed iTXt chunks", () => {
  const bytes = encodePng(testImage(2, 2, true));
  const enc = new TextEncoder();
  const ztxt = chunk(
    "zTXt",
    new Uint8Array([...enc.encode("k1\0\0"), ...zlib.deflateSync(Buffer.from("café", "latin1"))]),
  );
  const itxt = chunk(
    "iTXt",
    new Uint8Array([...enc.encode("k2\0\x01\0en\0k\0"), ...zlib.deflateSync(enc.encode("猫"))]),
  );
  const withText = new Uint8Array([
    ...bytes.subarray(0, 33),
    ...ztxt,
    ...itxt,
    ...bytes.subarray(33),
  ]);
  assert.deepEqual(decodePng(withText).text, { k1: "café", k2: "猫" });
});

Deno.test("encodePng rejects bad images and keywords", () => {
  const image = testImage(2, 2, true);
  assert.throws(() => encodePng({ ...image, width: 3 }), /width·height·4 = 24 RGBA bytes/);
  assert.throws(() => encodePng({ ...image, height: 0 }), /positive integers/);
  assert.throws(() => encodePng(image, { text: { "": "x" } }), /1–79 Latin-1 characters/);
  assert.throws(() => encodePng(image, { text: { k: "a\0b" } }), /NUL/);
});

Deno.test("writePngFile writes atomically and refuses to overwrite unless asked", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.png`;
    const first = testImage(4, 4, true);
    await writePngFile(path, first, { text: { parameters: "one" } });
    assert.deepEqual(decodePng(await Deno.readFile(path)).text, { parameters: "one" });
    const second = testImage(5, 5, false);
    await assert.rejects(
      () => writePngFile(path, second),
      (e: Error) =>
        e instanceof Deno.errors.AlreadyExists && /pass \{ overwrite: true \}/.test(e.message),
    );
    assert.deepEqual(decodePng(await Deno.readFile(path)).data, first.data);
    await writePngFile(new URL(`file://${path}`), second, { overwrite: true });
    assert.deepEqual(decodePng(await Deno.readFile(path)).data, second.data);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["out.png"]); // no temporary file left behind
    await assert.rejects(() => writePngFile(`${dir}/missing/x.png`, first), /does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("decodePng reads the reference pipeline's image.png like image_uint8.npy", async () => {
  const png = decodePng(await Deno.readFile(new URL("png/image.png", FIXTURES)));
  const ref = await readNpy(new URL("png/image_uint8.npy", FIXTURES)); // [1, H, W, 3]
  assert.deepEqual(ref.shape, [1, png.height, png.width, 3]);
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let i = 0; i < png.width * png.height; i++) {
    assert.equal(png.data[i * 4 + 3], 255);
    rgb.set(png.data.subarray(i * 4, i * 4 + 3), i * 3);
  }
  assert.deepEqual(rgb, Uint8Array.from(ref.data));
});

Deno.test("formatA1111Parameters writes A1111's infotext", () => {
  const base = {
    prompt: "a cat",
    negativePrompt: "blurry",
    steps: 20,
    sampler: "Euler a",
    cfg: 7,
    seed: 42,
    width: 512,
    height: 768,
    model: "v1-5-pruned-emaonly",
  };
  assert.equal(
    formatA1111Parameters(base),
    "a cat\nNegative prompt: blurry\n" +
      "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, Model: v1-5-pruned-emaonly",
  );
  assert.equal(
    formatA1111Parameters({ ...base, negativePrompt: "", cfg: 7.5, clipSkip: 1 }),
    "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, " +
      "Model: v1-5-pruned-emaonly",
  );
  assert.equal(
    formatA1111Parameters({
      ...base,
      sampler: "DPM++ 2M",
      scheduleType: "Karras",
      seed: 2n ** 40n,
      modelHash: "6ce0161689",
      model: "my: model, v2",
      clipSkip: 2,
    }),
    "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, " +
      "CFG scale: 7, Seed: 1099511627776, Size: 512x768, Model hash: 6ce0161689, " +
      'Model: "my: model, v2", Clip skip: 2',
  );
  assert.throws(
    () => formatA1111Parameters({ ...base, steps: 2.5 }),
    /steps must be a finite integer/,
  );
});
