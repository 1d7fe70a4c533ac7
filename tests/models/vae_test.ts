import assert from "node:assert/strict";
import type { DType } from "../../src/gpu/device.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import { readNpy } from "../../src/io/npy.ts";
import { AutoencoderKL, type VaePart } from "../../src/models/vae.ts";
import { diagonalGaussian, padBottomRight } from "../../src/models/vae_blocks.ts";
import type { AutoencoderKLConfig } from "../../src/weights/configs.ts";
import {
  closeModelSource,
  type LoadedTensor,
  openModelSource,
  readComponent,
} from "../../src/weights/source.ts";
import { StrictImportError } from "../../src/weights/strict.ts";
import { GPU_TEST, testDTypes, testRuntime } from "../gpu_util.ts";
import { modelDir, singleFile } from "../weights/fixtures.ts";
import { errorStats, fixture, randomArray, SHARED, sharedAvailable } from "../util.ts";

const KERNELS = ["conv2d", "gemm", "norm", "attention", "layout"];
const RUNS = { "tiny-sd15": "tiny-sd15__pndm", "tiny-sd2": "tiny-sd2__ddim_v" } as const;
type Model = keyof typeof RUNS;
/** Tolerance relative to each tensor's max |value|. */
const TOL: Record<DType, number> = { f32: 1e-4, f16: 1e-2 };
/** The internals the dumps hold (`internals/vae_<name>.npy`), by capture name. */
const DECODE_INTERNALS = [
  "post_quant_conv",
  "decoder.conv_in",
  "decoder.mid_block",
  "decoder.up_blocks.0",
  "decoder.up_blocks.1",
  "decoder.up_blocks.2",
  "decoder.conv_out",
];
const ENCODE_INTERNALS = [
  "encoder.down_blocks.0",
  "encoder.down_blocks.1",
  "encoder.down_blocks.2",
  "encoder.down_blocks.3",
  "encoder.mid_block",
  "encoder.conv_norm_out",
  "encoder.conv_act",
  "encoder.conv_out",
  "quant_conv",
];

/** The VAE tensors and config of a tiny model, from its folder or its single file. */
async function vaeSource(
  model: Model,
  layout: "folder" | "single",
): Promise<{ tensors: Map<string, LoadedTensor>; config: AutoencoderKLConfig } | undefined> {
  const folder = await openModelSource(modelDir(model));
  if (layout === "folder") {
    return { tensors: await readComponent(folder, "vae"), config: folder.configs.vae };
  }
  const path = singleFile(model);
  if (path === undefined) return undefined;
  const single = await openModelSource(path, { configs: folder.configs });
  try {
    return { tensors: await readComponent(single, "vae"), config: single.configs.vae };
  } finally {
    closeModelSource(single);
  }
}

async function upload(rt: Runtime, path: string, dtype: DType): Promise<Tensor> {
  const a = await fixture(path);
  return rt.upload(a.data, a.shape, { dtype });
}

/** One row of the per-block report. */
interface Row {
  name: string;
  ok: boolean;
  text: string;
}

/** Compares `got` with a reference within `tol` of the reference's scale. */
function compare(name: string, got: Float32Array, ref: Float32Array, tol: number): Row {
  if (got.length !== ref.length) {
    return { name, ok: false, text: `${name}: ${got.length} values, reference ${ref.length}` };
  }
  const s = errorStats(got, ref);
  const ok = s.maxAbs <= tol * Math.max(s.scale, 1e-12);
  const text = `${ok ? "  ok " : "  BAD"} ${name}: max |Δ| ${s.maxAbs.toExponential(2)}, ` +
    `scale ${s.scale.toExponential(2)}, rel ${(s.maxAbs / s.scale).toExponential(2)}, ` +
    `nmse ${s.nmse.toExponential(2)}`;
  return { name, ok, text };
}

/** Reads and frees captured tensors, comparing each with `internals/vae_<name>.npy`. */
async function compareInternals(
  run: string,
  captured: Map<string, Tensor>,
  names: string[],
  tol: number,
): Promise<Row[]> {
  const rows: Row[] = [];
  const dir = `fixtures/dumps/${run}/internals/`;
  const withRefs = sharedAvailable(dir);
  for (const name of names) {
    const t = captured.get(name);
    if (!t) {
      rows.push({ name, ok: false, text: `  BAD ${name}: not captured` });
      continue;
    }
    const got = await t.read();
    if (withRefs) {
      const ref = await readNpy(new URL(`${dir}vae_${name}.npy`, SHARED));
      rows.push(compare(name, got, Float32Array.from(ref.data as ArrayLike<number>), tol));
    }
  }
  for (const t of captured.values()) t.dispose();
  return rows;
}

function assertRows(label: string, rows: Row[]): void {
  if (rows.some((r) => !r.ok)) {
    throw new Error(`${label}: outside tolerance:\n${rows.map((r) => r.text).join("\n")}`);
  }
}

for (const model of Object.keys(RUNS) as Model[]) {
  for (const layout of ["folder", "single"] as const) {
    Deno.test({
      name: `vae: ${model} (${layout}) decode and encode match diffusers, with internals`,
      ...GPU_TEST,
      fn: async () => {
        const src = await vaeSource(model, layout);
        if (!src) return;
        const rt = await testRuntime(KERNELS);
        const run = RUNS[model];
        for (const dtype of testDTypes(rt)) {
          const vae = AutoencoderKL.load(rt, { tensors: src.tensors, config: src.config, dtype });
          try {
            assert.deepEqual(vae.unused, []);
            const tol = TOL[dtype];
            // decode: latents / scaling_factor → image
            const captured = new Map<string, Tensor>();
            const capture = (name: string, t: Tensor) => {
              const copy = rt.empty(t.shape, t.dtype);
              rt.copy(t, copy);
              captured.set(name, copy);
            };
            const z = await upload(rt, `dumps/${run}/vae_decode_in.npy`, dtype);
            const image = vae.decode(z, { capture });
            z.dispose();
            assert.deepEqual(image.shape, [1, 3, 128, 128]);
            const ref = await fixture(`dumps/${run}/image_decoded.npy`);
            const rows = [compare("image", await image.read(), ref.data, tol)];
            image.dispose();
            rows.push(...await compareInternals(run, captured, DECODE_INTERNALS, tol));
            assertRows(`${model} ${layout} ${dtype} decode`, rows);
            // encode: image in [-1, 1] → mean, logvar, std
            captured.clear();
            const x = await upload(rt, `dumps/${run}/vae_encode_in.npy`, dtype);
            const dist = vae.encode(x, { capture });
            x.dispose();
            const enc: Row[] = [];
            for (const key of ["mean", "logvar", "std"] as const) {
              assert.deepEqual(dist[key].shape, [1, 4, 16, 16]);
              const want = await fixture(`dumps/${run}/vae_encode_${key}.npy`);
              enc.push(compare(key, await dist[key].read(), want.data, tol));
              dist[key].dispose();
            }
            enc.push(...await compareInternals(run, captured, ENCODE_INTERNALS, tol));
            assertRows(`${model} ${layout} ${dtype} encode`, enc);
          } finally {
            vae.dispose();
          }
        }
      },
    });
  }
}

Deno.test({
  name: "vae: a batch decodes and encodes like its items one by one (odd latent size)",
  ...GPU_TEST,
  fn: async () => {
    const src = await vaeSource("tiny-sd15", "folder");
    const rt = await testRuntime(KERNELS);
    const vae = AutoencoderKL.load(rt, {
      tensors: src!.tensors,
      config: src!.config,
      dtype: "f32",
    });
    /** Runs `f` on an uploaded input and returns the host copy of its output, freeing both. */
    const run = async (host: Float32Array, shape: number[], f: (x: Tensor) => Tensor) => {
      const x = rt.upload(host, shape);
      const y = f(x);
      x.dispose();
      const out = await y.read();
      y.dispose();
      return out;
    };
    const decode = (x: Tensor) => vae.decode(x);
    const encodeMean = (x: Tensor) => {
      const { mean, logvar, std } = vae.encode(x);
      logvar.dispose();
      std.dispose();
      return mean;
    };
    const clamp1 = (a: Float32Array) => a.map((v) => Math.max(-1, Math.min(1, v)));
    try {
      const [h, w] = [3, 5];
      const n = 4 * h * w, m = 3 * 8 * h * 8 * w;
      const lat = randomArray(2 * n, 7, -3, 3);
      const images = await run(lat, [2, 4, h, w], decode); // [2, 3, 24, 40]
      assert.equal(images.length, 2 * m);
      const means = await run(clamp1(images), [2, 3, 8 * h, 8 * w], encodeMean); // [2, 4, 3, 5]
      const rows: Row[] = [];
      for (let i = 0; i < 2; i++) {
        const one = await run(lat.subarray(i * n, (i + 1) * n), [1, 4, h, w], decode);
        const image = images.subarray(i * m, (i + 1) * m);
        rows.push(compare(`decode item ${i}`, image, one, 1e-5));
        const mean = await run(clamp1(image), [1, 3, 8 * h, 8 * w], encodeMean);
        rows.push(compare(`encode item ${i}`, means.subarray(i * n, (i + 1) * n), mean, 1e-5));
      }
      assertRows("batch of 2", rows);
    } finally {
      vae.dispose();
    }
  },
});

Deno.test({
  name: "vae: padBottomRight and diagonalGaussian match host references",
  ...GPU_TEST,
  fn: async () => {
    const rt = await testRuntime(KERNELS);
    for (const dtype of testDTypes(rt)) {
      const [b, c, h, w] = [2, 3, 5, 7];
      const host = Float32Array.from(Float16Array.from(randomArray(b * c * h * w, 3)));
      const padded = await padBottomRight(rt.upload(host, [b, c, h, w], { dtype })).read();
      const want = new Float32Array(b * c * (h + 1) * (w + 1));
      for (let p = 0; p < b * c; p++) {
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            want[(p * (h + 1) + y) * (w + 1) + x] = host[(p * h + y) * w + x];
          }
        }
      }
      assert.deepEqual(padded, want, `pad ${dtype}`);
      const l = 2, hw = 3;
      const m = Float32Array.from(Float16Array.from(randomArray(b * 2 * l * hw, 5, -40, 30)));
      const dist = diagonalGaussian(rt.upload(m, [b, 2 * l, 1, hw], { dtype }));
      const [mean, logvar, std] = [
        await dist.mean.read(),
        await dist.logvar.read(),
        await dist.std.read(),
      ];
      for (let i = 0; i < b; i++) {
        for (let j = 0; j < l * hw; j++) {
          const src = i * 2 * l * hw + j;
          const lv = Math.min(20, Math.max(-30, m[src + l * hw]));
          const at = i * l * hw + j;
          assert.equal(mean[at], m[src]);
          assert.ok(Math.abs(logvar[at] - lv) <= 1e-2 * Math.abs(lv), `logvar ${dtype} ${at}`);
          const s = Math.exp(0.5 * lv);
          const tol = dtype === "f16" ? 1e-3 * s + 6e-8 : 1e-6 * s; // f16 subnormals below 6e-5
          assert.ok(Math.abs(std[at] - s) <= tol, `std ${dtype} ${at}: ${std[at]} vs ${s}`);
        }
      }
    }
  },
});

Deno.test({
  name: "vae: strict import, decoder-only loads, and clear errors on bad input",
  ...GPU_TEST,
  fn: async () => {
    const src = (await vaeSource("tiny-sd15", "folder"))!;
    const rt = await testRuntime(KERNELS);
    const load = (tensors: Map<string, LoadedTensor>, parts?: VaePart[]) =>
      AutoencoderKL.load(rt, { tensors, config: src.config, dtype: "f32", parts });
    // decoder only: every encoder and quant_conv key is unused, nothing else
    const dec = load(src.tensors, ["decoder"]);
    try {
      const encoderKeys = [...src.tensors.keys()].filter((k) =>
        k.startsWith("encoder.") || k.startsWith("quant_conv.")
      );
      assert.ok(encoderKeys.length > 0);
      assert.deepEqual([...dec.unused].sort(), encoderKeys.sort());
      assert.throws(() => dec.encode(rt.empty([1, 3, 16, 16])), /loaded without its encoder/);
      assert.throws(() => dec.decode(rt.empty([1, 3, 2, 2])), /takes latents \[B, 4, h, w\]/);
    } finally {
      dec.dispose();
    }
    const enc = load(src.tensors, ["encoder"]);
    try {
      assert.ok(enc.unused.every((k) => k.startsWith("decoder.") || k.startsWith("post_quant")));
      assert.throws(() => enc.decode(rt.empty([1, 4, 2, 2])), /loaded without its decoder/);
      assert.throws(() => enc.encode(rt.empty([1, 3, 12, 16])), /multiples of 8/);
    } finally {
      enc.dispose();
    }
    // a missing key and a wrong shape are both named
    const broken = new Map(src.tensors);
    broken.delete("decoder.conv_in.bias");
    const q = broken.get("decoder.mid_block.attentions.0.to_q.weight")!;
    broken.set("decoder.mid_block.attentions.0.to_q.weight", { ...q, shape: [64, 64, 1, 1] });
    broken.set("decoder.extra.weight", q);
    assert.throws(() => load(broken), (e: unknown) => {
      assert.ok(e instanceof StrictImportError);
      assert.deepEqual(e.missing, ["decoder.conv_in.bias"]);
      assert.deepEqual(e.mismatched.map((m) => [m.key, m.expected, m.found]), [
        ["decoder.mid_block.attentions.0.to_q.weight", [64, 64], [64, 64, 1, 1]],
      ]);
      assert.deepEqual(e.unused, ["decoder.extra.weight"]);
      assert.match(e.message, /missing: decoder\.conv_in\.bias/);
      return true;
    });
    // configs the VAE cannot build
    assert.throws(() => load(src.tensors, []), /parts must be "encoder" and\/or "decoder"/);
    const cfg = (over: Partial<AutoencoderKLConfig>) => ({ ...src.config, ...over });
    assert.throws(
      () =>
        AutoencoderKL.load(rt, {
          tensors: src.tensors,
          config: cfg({ norm_num_groups: 7 }),
          dtype: "f32",
        }),
      /norm_num_groups 7 must divide every block_out_channels/,
    );
    assert.throws(
      () =>
        AutoencoderKL.load(rt, {
          tensors: src.tensors,
          config: cfg({ act_fn: "relu" }),
          dtype: "f32",
        }),
      /act_fn "relu" is not supported/,
    );
  },
});
