import assert from "node:assert/strict";
import { resizeImage } from "../src/io/resize.ts";

const image = (w: number, h: number, f: (x: number, y: number) => number) => {
  const data = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      data.set([f(x, y), f(x, y), f(x, y), 255], (y * w + x) * 4);
    }
  }
  return { width: w, height: h, data };
};
const grey = (img: { width: number; data: Uint8Array }, x: number, y: number) =>
  img.data[(y * img.width + x) * 4];

Deno.test("resize: same size copies; flat stays flat; shrinking averages a checkerboard", () => {
  const src = image(8, 6, (x, y) => (x * 31 + y * 7) % 256);
  const same = resizeImage(src, { width: 8, height: 6 });
  assert.deepEqual(same.data, src.data);
  assert.notEqual(same.data, src.data, "a copy, not the caller's buffer");
  const flat = resizeImage(image(5, 7, () => 77), { width: 13, height: 3 });
  assert.ok(flat.data.every((v, i) => v === (i % 4 === 3 ? 255 : 77)));
  const checker = resizeImage(image(16, 16, (x, y) => ((x + y) % 2) * 255), {
    width: 4,
    height: 4,
  });
  for (let i = 0; i < 16; i++) {
    const v = checker.data[i * 4];
    assert.ok(Math.abs(v - 127.5) < 8, `pixel ${i} is ${v}: shrinking must average, not alias`);
  }
});

Deno.test("resize: stretch keeps a ramp monotonic; crop keeps the centre at the aspect ratio", () => {
  const ramp = resizeImage(image(4, 1, (x) => x * 80), { width: 9, height: 1 });
  for (let x = 1; x < 9; x++) assert.ok(grey(ramp, x, 0) >= grey(ramp, x - 1, 0) - 2);
  // left quarter black, right quarter white, middle grey: a square crop keeps only the middle
  const wide = image(16, 4, (x) => (x < 4 ? 0 : x >= 12 ? 255 : 128));
  const crop = resizeImage(wide, { width: 4, height: 4, mode: "crop" });
  for (let x = 0; x < 4; x++) assert.ok(Math.abs(grey(crop, x, 2) - 128) <= 3, `x ${x}`);
  const stretch = resizeImage(wide, { width: 4, height: 4, mode: "stretch" });
  assert.ok(grey(stretch, 0, 2) < 40 && grey(stretch, 3, 2) > 215, "stretch keeps the edges");
  assert.throws(() => resizeImage(wide, { width: 0, height: 4 }), /width must be ≥ 1/);
  assert.throws(
    () => resizeImage(wide, { width: 4, height: 4, mode: "fill" as "crop" }),
    /"stretch" or "crop"/,
  );
});
