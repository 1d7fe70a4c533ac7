/**
 * Conv2d benchmark: the kernel ladder (naive, igemm per tile, and the planned igemm with split-K)
 * at the SD 1.5 U-Net shapes (512², batch 2: plain, stride-2, concatenated-skip, upsampling and
 * 1×1 convs), SD 2.x at 768², and the VAE decoder at 512², f32 and f16. Each case is first checked
 * against the float64 reference on sampled outputs of the same shape.
 *
 * @module
 */
import type { DType } from "../../src/gpu/device.ts";
import { loadTemplates } from "../../src/gpu/kernel.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import { conv2d, type Conv2dOptions, conv2dShape, planConv2d } from "../../src/ops/conv2d.ts";
import { conv2dRef } from "../../src/reference/conv2d.ts";
import { errorStats, randomArray } from "../../tests/util.ts";
import { type BenchRow, type OpBench, timeMedian } from "./types.ts";

/** One case: input [B, Cx, H, W] (+ `skip` channels), Cout, kernel, stride, upsample. */
interface ConvCase {
  name: string;
  x: [number, number, number, number];
  skip?: number;
  cout: number;
  k: number;
  stride?: number;
  upsample?: boolean;
}

const FULL: ConvCase[] = [
  { name: "sd15 conv 64²", x: [2, 320, 64, 64], cout: 320, k: 3 },
  { name: "sd15 downsample 64²", x: [2, 320, 64, 64], cout: 320, k: 3, stride: 2 },
  { name: "sd15 conv 32²", x: [2, 640, 32, 32], cout: 640, k: 3 },
  { name: "sd15 conv 16²", x: [2, 1280, 16, 16], cout: 1280, k: 3 },
  { name: "sd15 conv 8²", x: [2, 1280, 8, 8], cout: 1280, k: 3 },
  { name: "sd15 up cat 2560→1280 8²", x: [2, 1280, 8, 8], skip: 1280, cout: 1280, k: 3 },
  { name: "sd15 up cat 1920→1280 16²", x: [2, 1280, 16, 16], skip: 640, cout: 1280, k: 3 },
  { name: "sd15 up cat 1920→640 32²", x: [2, 1280, 32, 32], skip: 640, cout: 640, k: 3 },
  { name: "sd15 up cat 1280→640 32²", x: [2, 640, 32, 32], skip: 640, cout: 640, k: 3 },
  { name: "sd15 up cat 960→640 32²", x: [2, 640, 32, 32], skip: 320, cout: 640, k: 3 },
  { name: "sd15 up cat 960→320 64²", x: [2, 640, 64, 64], skip: 320, cout: 320, k: 3 },
  { name: "sd15 up cat 640→320 64²", x: [2, 320, 64, 64], skip: 320, cout: 320, k: 3 },
  { name: "sd15 shortcut 1×1 2560→1280 16²", x: [2, 1280, 16, 16], skip: 1280, cout: 1280, k: 1 },
  { name: "sd15 upsample 16²→32²", x: [2, 1280, 16, 16], cout: 1280, k: 3, upsample: true },
  { name: "sd15 conv_out", x: [2, 320, 64, 64], cout: 4, k: 3 },
  { name: "sd2 conv 96²", x: [2, 320, 96, 96], cout: 320, k: 3 },
  { name: "vae dec 512² ×128", x: [1, 128, 512, 512], cout: 128, k: 3 },
  { name: "vae dec 256² ×256", x: [1, 256, 256, 256], cout: 256, k: 3 },
  { name: "vae dec 128² ×512", x: [1, 512, 128, 128], cout: 512, k: 3 },
  { name: "vae dec upsample 256²→512²", x: [1, 256, 256, 256], cout: 256, k: 3, upsample: true },
  { name: "vae dec conv_out", x: [1, 128, 512, 512], cout: 3, k: 3 },
];

const QUICK: ConvCase[] = [
  { name: "odd 3×3", x: [1, 33, 17, 17], cout: 65, k: 3 },
  { name: "stride 2", x: [2, 32, 16, 16], cout: 32, k: 3, stride: 2 },
  { name: "concat", x: [1, 65, 9, 9], skip: 33, cout: 64, k: 3 },
  { name: "1×1", x: [2, 65, 17, 17], cout: 33, k: 1 },
  { name: "upsample", x: [1, 32, 8, 8], cout: 32, k: 3, upsample: true },
  { name: "to RGB", x: [1, 64, 32, 32], cout: 3, k: 3 },
];

/** The ladder: kernel version and forced igemm configuration ("planned" = the op's default). */
const LADDER: { name: string; opts: Conv2dOptions; smallCout?: boolean }[] = [
  { name: "naive", opts: { variant: "naive" } },
  { name: "igemm 64x64", opts: { tile: "64x64" } },
  { name: "igemm 128x128", opts: { tile: "128x128" } },
  { name: "igemm 16x256", opts: { tile: "16x256" }, smallCout: true },
  { name: "planned", opts: {} },
];

/** Rounds host values the way the GPU stores them in `dtype`. */
const asDType = (x: Float32Array, dtype: DType) =>
  dtype === "f16" ? Float32Array.from(Float16Array.from(x)) : x;

/** 64 output indices spread over the tensor, first and last included. */
function sampleIndices(size: number): number[] {
  const n = Math.min(64, size);
  return [
    ...new Set(Array.from({ length: n }, (_, i) => Math.floor((i * (size - 1)) / (n - 1 || 1)))),
  ];
}

/**
 * Benchmarks the conv2d ladder at each case and dtype: GFLOP/s = 2·B·Cout·Ho·Wo·Cin·kh·kw / time.
 *
 * @example
 * ```ts
 * import { Runtime } from "../../src/gpu/runtime.ts";
 * import { benchConv2d } from "./conv2d.ts";
 * const rows = await benchConv2d(await Runtime.create(), { quick: true });
 * console.table(rows);
 * ```
 */
export const benchConv2d: OpBench = async (rt: Runtime, opts): Promise<BenchRow[]> => {
  await loadTemplates(["conv2d"]);
  const rows: BenchRow[] = [];
  const dtypes: DType[] = rt.gpu.hasF16 ? ["f32", "f16"] : ["f32"];
  const reps = opts.reps ?? (opts.quick ? 3 : 10);
  for (const dtype of dtypes) {
    for (const [i, c] of (opts.quick ? QUICK : FULL).entries()) {
      const [b, cx, h, w] = c.x;
      const cin = cx + (c.skip ?? 0);
      const wShape = [c.cout, cin, c.k, c.k];
      const host = {
        x: asDType(randomArray(b * cx * h * w, 4 * i + 1), dtype),
        skip: c.skip ? asDType(randomArray(b * c.skip * h * w, 4 * i + 2), dtype) : undefined,
        w: asDType(randomArray(c.cout * cin * c.k * c.k, 4 * i + 3, -0.05, 0.05), dtype),
        bias: asDType(randomArray(c.cout, 4 * i + 4), dtype),
      };
      const x = rt.upload(host.x, c.x, { dtype });
      const skip = host.skip && rt.upload(host.skip, [b, c.skip!, h, w], { dtype });
      const weight = rt.upload(host.w, wShape, { dtype });
      const bias = rt.upload(host.bias, [c.cout], { dtype });
      const base: Conv2dOptions = { bias, skip, stride: c.stride, upsample: c.upsample };
      const shape = conv2dShape(x, weight, base);
      const out = rt.empty(shape, dtype);
      const zeros = rt.upload(new Float32Array(out.size), shape, { dtype });
      const [, , ho, wo] = shape;
      const flops = 2 * b * c.cout * ho * wo * cin * c.k * c.k;
      const indices = sampleIndices(out.size);
      const want = conv2dRef({ data: host.x, shape: c.x }, { data: host.w, shape: wShape }, {
        bias: host.bias,
        skip: host.skip ? { data: host.skip, shape: [b, c.skip!, h, w] } : undefined,
        stride: c.stride,
        upsample: c.upsample,
        indices,
      }).data;
      const plan = planConv2d({ m: c.cout, n: b * ho * wo, k: cin * c.k * c.k });
      for (const rung of LADDER) {
        if (rung.smallCout && c.cout > 64) continue;
        const run = () => conv2d(x, weight, { ...base, ...rung.opts, out });
        rt.copy(zeros, out); // a rung that writes nothing must not pass on the previous rung's output
        run();
        const all = await out.read();
        const { maxAbs, scale } = errorStats(indices.map((j) => all[j]), want);
        const maxErr = maxAbs / Math.max(scale, 1e-12);
        // enough calls per timed batch that it lasts ~5 ms at 10 TFLOP/s
        const calls = opts.quick ? 1 : Math.min(50, Math.max(1, Math.ceil(5e-3 / (flops / 1e13))));
        const ms = (await timeMedian(rt, () => {
          for (let j = 0; j < calls; j++) run();
        }, reps)) / calls;
        const planned = `planned (${plan.tile}${plan.splits > 1 ? ` split ${plan.splits}` : ""})`;
        rows.push({
          op: "conv2d",
          variant: rung.name === "planned" ? planned : rung.name,
          shape: `[${c.x}]${c.skip ? `+${c.skip}` : ""}→${c.cout} ${c.k}×${c.k}` +
            `${c.stride === 2 ? " s2" : ""}${c.upsample ? " up" : ""} ${dtype} ${c.name}`,
          ms,
          gflops: flops / (ms * 1e6),
          ok: maxErr <= (dtype === "f32" ? 1e-4 : 1e-2),
          maxErr,
        });
      }
      for (const t of [x, skip, weight, bias, out, zeros]) t?.dispose();
    }
  }
  return rows;
};
