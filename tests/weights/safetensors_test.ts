import assert from "node:assert/strict";
import { openSafetensors, toFloat32 } from "../../src/weights/safetensors.ts";
import { assemble, bytesOf, encodeSafetensors, modelDir, type RawTensor } from "./fixtures.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denoise_st_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeAndOpen(dir: string, name: string, bytes: Uint8Array) {
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, bytes);
  return openSafetensors(path);
}

const SAMPLE: RawTensor[] = [
  { name: "f32", dtype: "F32", shape: [2, 2], data: bytesOf(new Float32Array([1, -2, 3.5, 0])) },
  // F16: 1.0, -2.0, 0.5 → 0x3c00, 0xc000, 0x3800
  {
    name: "f16",
    dtype: "F16",
    shape: [3],
    data: bytesOf(new Uint16Array([0x3c00, 0xc000, 0x3800])),
  },
  // BF16: 1.0, -3.0 → 0x3f80, 0xc040
  { name: "bf16", dtype: "BF16", shape: [2], data: bytesOf(new Uint16Array([0x3f80, 0xc040])) },
  { name: "i32", dtype: "I32", shape: [2], data: bytesOf(new Int32Array([7, -8])) },
  { name: "i64", dtype: "I64", shape: [1, 2], data: bytesOf(new BigInt64Array([5n, -6n])) },
  { name: "scalar", dtype: "F32", shape: [], data: bytesOf(new Float32Array([9])) },
];

Deno.test("safetensors: reads every supported dtype, raw and widened to f32, plus metadata", async () => {
  await withTemp(async (dir) => {
    const f = await writeAndOpen(dir, "ok.safetensors", encodeSafetensors(SAMPLE, { a: "b" }));
    try {
      assert.deepEqual(f.metadata, { a: "b" });
      assert.deepEqual([...f.tensors.keys()], SAMPLE.map((t) => t.name));
      assert.deepEqual(f.tensors.get("i64"), {
        dtype: "I64",
        shape: [1, 2],
        byteOffset: f.tensors.get("i64")!.byteOffset,
        byteLength: 16,
      });
      for (const t of SAMPLE) assert.deepEqual(await f.read(t.name), t.data, t.name);
      assert.deepEqual([...await f.readF32("f32")], [1, -2, 3.5, 0]);
      assert.deepEqual([...await f.readF32("f16")], [1, -2, 0.5]);
      assert.deepEqual([...await f.readF32("bf16")], [1, -3]);
      assert.deepEqual([...await f.readF32("i32")], [7, -8]);
      assert.deepEqual([...await f.readF32("i64")], [5, -6]);
      assert.deepEqual([...await f.readF32("scalar")], [9]);
      // Concurrent reads on one handle are serialised and each gets its own bytes.
      const all = await Promise.all(SAMPLE.map((t) => f.read(t.name)));
      all.forEach((b, i) => assert.deepEqual(b, SAMPLE[i].data));
      await assert.rejects(f.read("nope"), /has no tensor "nope"/);
    } finally {
      f.close();
    }
    await assert.rejects(f.read("f32"), /is closed/);
  });
});

Deno.test("safetensors: parses the tiny U-Net and widens F16 like a Float16Array", async () => {
  const f = await openSafetensors(
    `${modelDir("tiny-sd15")}/unet/diffusion_pytorch_model.safetensors`,
  );
  try {
    assert.equal(f.metadata.format, "pt");
    assert.equal(f.tensors.size, 684);
    const info = f.tensors.get("conv_in.weight")!;
    assert.equal(info.dtype, "F16");
    assert.deepEqual(info.shape, [32, 4, 3, 3]); // [C_out, C_in, kh, kw]
    const raw = await f.read("conv_in.weight");
    const ref = new Float16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
    const got = await f.readF32("conv_in.weight");
    assert.equal(got.length, 32 * 4 * 9);
    got.forEach((v, i) => assert.equal(v, ref[i]));
    assert.ok(got.some((v) => v !== 0));
  } finally {
    f.close();
  }
});

Deno.test("safetensors: toFloat32 copes with unaligned input", () => {
  const buf = new Uint8Array(9);
  buf.set(bytesOf(new Float32Array([2.5, -1])), 1);
  assert.deepEqual([...toFloat32(buf.subarray(1), "F32")], [2.5, -1]);
});

Deno.test("safetensors: a large file is read by byte range, not loaded whole", async () => {
  await withTemp(async (dir) => {
    const big = 2 ** 31; // a 2 GiB tensor, stored as a sparse hole
    const json = JSON.stringify({
      big: { dtype: "F32", shape: [big / 4], data_offsets: [0, big] },
      small: { dtype: "F32", shape: [4], data_offsets: [big, big + 16] },
    });
    const head = assemble(json, []);
    const path = `${dir}/big.safetensors`;
    const file = await Deno.open(path, { write: true, create: true });
    await file.write(head);
    await file.seek(head.byteLength + big, Deno.SeekMode.Start);
    await file.write(bytesOf(new Float32Array([1, 2, 3, 4])));
    file.close();
    const before = Deno.memoryUsage().rss;
    const f = await openSafetensors(path);
    try {
      assert.equal(f.fileSize, head.byteLength + big + 16);
      assert.deepEqual([...await f.readF32("small")], [1, 2, 3, 4]);
    } finally {
      f.close();
    }
    const grown = Deno.memoryUsage().rss - before;
    assert.ok(grown < 256 * 2 ** 20, `opening a 2 GiB file grew RSS by ${grown} bytes`);
  });
});

Deno.test("safetensors: missing file and pickle checkpoints are refused with a fix", async () => {
  await withTemp(async (dir) => {
    await assert.rejects(openSafetensors(`${dir}/absent.safetensors`), /does not exist/);
    const zip = new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]);
    const pickle = new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x05, 0x00, 0x00]);
    for (const name of ["model.ckpt", "model.pt", "pytorch_model.bin"]) {
      await Deno.writeFile(`${dir}/${name}`, zip);
      await assert.rejects(
        openSafetensors(`${dir}/${name}`),
        /pickle checkpoint \(extension .*can run arbitrary code.*convert it to \.safetensors/s,
      );
    }
    await assert.rejects(writeAndOpen(dir, "zip.safetensors", zip), /magic bytes.*convert/s);
    await assert.rejects(writeAndOpen(dir, "pkl.safetensors", pickle), /magic bytes.*convert/s);
  });
});

Deno.test("safetensors: a truncated file asks for a re-download", async () => {
  await withTemp(async (dir) => {
    const good = encodeSafetensors(SAMPLE);
    await assert.rejects(
      writeAndOpen(dir, "cut.safetensors", good.subarray(0, good.byteLength - 5)),
      /is truncated: the header says the file is \d+ bytes but it is only \d+ bytes.*re-download/,
    );
    await assert.rejects(writeAndOpen(dir, "tiny.safetensors", good.subarray(0, 6)), /too short/);
  });
});

Deno.test("safetensors: a wrong header length is reported", async () => {
  await withTemp(async (dir) => {
    const json = JSON.stringify({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } });
    const data = [new Uint8Array(4)];
    await assert.rejects(
      writeAndOpen(dir, "huge.safetensors", assemble(json, data, 1n << 40n)),
      /bad header length 1099511627776 \(must be 2…100000000 bytes\)/,
    );
    await assert.rejects(
      writeAndOpen(dir, "long.safetensors", assemble(json, data, 5000n)),
      /bad header length: the header claims 5000 bytes but the file has only \d+/,
    );
    await assert.rejects(
      writeAndOpen(dir, "short.safetensors", assemble(json, data, 10n)),
      /header is not valid JSON/,
    );
  });
});

Deno.test("safetensors: garbage header JSON is reported", async () => {
  await withTemp(async (dir) => {
    await assert.rejects(
      writeAndOpen(dir, "garbage.safetensors", assemble("{not json at all}", [])),
      /header is not valid JSON .*re-download or re-export/,
    );
    await assert.rejects(
      writeAndOpen(dir, "array.safetensors", assemble("[1, 2, 3]", [])),
      /header must be a JSON object/,
    );
  });
});

Deno.test("safetensors: out-of-range and overlapping offsets are reported", async () => {
  await withTemp(async (dir) => {
    const data = [new Uint8Array(16)];
    const inverted = JSON.stringify({ a: { dtype: "F32", shape: [0], data_offsets: [8, 4] } });
    await assert.rejects(
      writeAndOpen(dir, "inv.safetensors", assemble(inverted, data)),
      /tensor "a" has data_offsets \[8,4\] out of range/,
    );
    const beyond = JSON.stringify({
      a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
      b: { dtype: "F32", shape: [2], data_offsets: [64, 72] },
    });
    await assert.rejects(
      writeAndOpen(dir, "beyond.safetensors", assemble(beyond, data)),
      /tensor "b" has data_offsets \[64, 72\] out of range: the data region holds only 16 bytes/,
    );
    const overlap = JSON.stringify({
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    });
    await assert.rejects(
      writeAndOpen(dir, "overlap.safetensors", assemble(overlap, data)),
      /tensors "a" \[0, 8\) and "b" \[4, 12\) have overlapping data_offsets/,
    );
  });
});

Deno.test("safetensors: unsupported dtype and shape/byte mismatch name the tensor", async () => {
  await withTemp(async (dir) => {
    const f64 = encodeSafetensors([{
      name: "w",
      dtype: "F64",
      shape: [1],
      data: new Uint8Array(8),
    }]);
    await assert.rejects(
      writeAndOpen(dir, "f64.safetensors", f64),
      /tensor "w" has dtype F64, which is not supported \(supported: F32, F16, BF16, I64, I32\)/,
    );
    const json = JSON.stringify({ w: { dtype: "F16", shape: [3, 2], data_offsets: [0, 8] } });
    await assert.rejects(
      writeAndOpen(dir, "mismatch.safetensors", assemble(json, [new Uint8Array(8)])),
      /tensor "w" has shape \[3, 2\] × F16 \(2 bytes\) = 12 bytes but its data_offsets \[0, 8\] hold 8 bytes/,
    );
  });
});

Deno.test("safetensors: duplicate keys, holes, trailing bytes and invalid UTF-8 are refused", async () => {
  await withTemp(async (dir) => {
    const t = (name: string, start: number, extra = "") =>
      `"${name}":{"dtype":"F32","shape":[1],"data_offsets":[${start},${start + 4}]${extra}}`;
    const data = [new Uint8Array(8)];
    const cases: [string, string, Uint8Array[], RegExp][] = [
      ["dup", `{${t("w", 0)},${t("w", 4)}}`, data, /the header names "w" twice/],
      [
        "field",
        `{${t("w", 0, ',"dtype":"F16"')},${t("v", 4)}}`,
        data,
        /names "w" key "dtype" twice/,
      ],
      [
        "meta",
        `{"__metadata__":{"k":"1","k":"2"},${t("w", 0)},${t("v", 4)}}`,
        data,
        /"__metadata__" key "k" twice/,
      ],
      [
        "hole",
        `{${t("w", 0)},${t("v", 8)}}`,
        [new Uint8Array(12)],
        /bytes \[4, 8\) of the data region belong to no tensor \(a hole before "v"\)/,
      ],
      ["tail", `{${t("w", 0)}}`, data, /the last 4 bytes of the file belong to no tensor/],
    ];
    for (const [name, json, chunks, message] of cases) {
      await assert.rejects(
        writeAndOpen(dir, `${name}.safetensors`, assemble(json, chunks)),
        message,
      );
    }
    const good = assemble(`{${t("w\u00e9", 0)}}`, [new Uint8Array(4)]);
    const bad = good.slice();
    const at = bad.indexOf(0xc3); // "é" is C3 A9 in UTF-8; C3 alone is invalid
    bad[at + 1] = 0x20;
    await assert.rejects(
      writeAndOpen(dir, "utf8.safetensors", bad),
      /utf8\.safetensors: the header is not valid UTF-8/,
    );
    const ok = await writeAndOpen(dir, "good.safetensors", good);
    assert.deepEqual([...ok.tensors.keys()], ["wé"]);
    ok.close();
  });
});
