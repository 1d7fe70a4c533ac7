/**
 * Benchmark of the fused attention kernels: every variant on SD 1.5 (512², batch 2), SD 2.x, the
 * VAE mid-block and CLIP text shapes, after a float64 check on a small shape of the same head dim.
 *
 * @module
 */
import type { DType } from "../../src/gpu/device.ts";
import { loadTemplates } from "../../src/gpu/kernel.ts";
import type { Runtime } from "../../src/gpu/runtime.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import {
  attention,
  attentionLoopIterations,
  type AttentionVariant,
  SOFTWARE_LOOP_LIMIT,
} from "../../src/ops/attention.ts";
import { attentionRef } from "../../src/reference/attention.ts";
import { type BenchRow, type OpBench, timeMedian } from "./types.ts";

interface Case {
  name: string;
  batch: number;
  heads: number;
  d: number;
  lq: number;
  lk: number;
  causal?: boolean;
  probs?: boolean;
}

const FULL: Case[] = [
  { name: "sd15 self 64²", batch: 2, heads: 8, d: 40, lq: 4096, lk: 4096 },
  { name: "sd15 cross 64²", batch: 2, heads: 8, d: 40, lq: 4096, lk: 77 },
  { name: "sd15 cross 64² +probs", batch: 2, heads: 8, d: 40, lq: 4096, lk: 77, probs: true },
  { name: "sd15 self 32²", batch: 2, heads: 8, d: 80, lq: 1024, lk: 1024 },
  { name: "sd15 cross 32²", batch: 2, heads: 8, d: 80, lq: 1024, lk: 77 },
  { name: "sd15 self 16²", batch: 2, heads: 8, d: 160, lq: 256, lk: 256 },
  { name: "sd15 cross 16²", batch: 2, heads: 8, d: 160, lq: 256, lk: 77 },
  { name: "sd2 self 64²", batch: 2, heads: 5, d: 64, lq: 4096, lk: 4096 },
  { name: "sd2 cross 64²", batch: 2, heads: 5, d: 64, lq: 4096, lk: 77 },
  { name: "vae mid 512²", batch: 1, heads: 1, d: 512, lq: 4096, lk: 4096 },
  { name: "clip text", batch: 2, heads: 12, d: 64, lq: 77, lk: 77, causal: true },
];

/** The small shapes of `--quick` (the software adapter): same head dims, short sequences. */
function quickCase(c: Case): Case {
  return {
    ...c,
    batch: 1,
    heads: Math.min(c.heads, 2),
    lq: Math.min(c.lq, 257),
    lk: Math.min(c.lk, 257),
  };
}

const VARIANTS: AttentionVariant[] = ["naive", "tiled"];

function random(n: number, seed: number, dtype: DType): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = (a / 4294967296) * 4 - 2;
  }
  return dtype === "f16" ? Float32Array.from(Float16Array.from(out)) : out;
}

function upload(rt: Runtime, shape: number[], seed: number, dtype: DType) {
  const host = random(shape[0] * shape[1] * shape[2], seed, dtype);
  return { host, t: rt.upload(host, shape, { dtype }) };
}

/** Worst |got − ref| relative to the reference's max |value|, on a small shape of the case. */
async function check(
  rt: Runtime,
  c: Case,
  variant: AttentionVariant,
  dtype: DType,
): Promise<number> {
  const heads = Math.min(c.heads, 2), lq = 37, lk = Math.min(c.lk, 45), hd = heads * c.d;
  const q = upload(rt, [1, lq, hd], 1, dtype);
  const k = upload(rt, [1, lk, hd], 2, dtype);
  const v = upload(rt, [1, lk, hd], 3, dtype);
  const ref = attentionRef({ q: q.host, k: k.host, v: v.host }, {
    batch: 1,
    heads,
    lq,
    lk,
    headDim: c.d,
    causal: c.causal,
  });
  const got = await attention(q.t, { k: k.t, v: v.t, heads, causal: c.causal, variant }).read();
  let err = 0, scale = 0;
  for (let i = 0; i < got.length; i++) {
    err = Math.max(err, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - ref.out[i]));
    scale = Math.max(scale, Math.abs(ref.out[i]));
  }
  for (const t of [q.t, k.t, v.t]) t.dispose();
  return err / Math.max(scale, 1e-30);
}

/**
 * Times every attention variant on the SD shapes (or small ones when `quick`), f16 and f32 where
 * the device has f16; FLOPs = 4·B·heads·Lq·Lk·d. Variants a software adapter refuses for a shape
 * (its shader loop limit) are left out there.
 *
 * @example
 * ```ts
 * import { Runtime } from "../../src/gpu/runtime.ts";
 * import { benchAttention } from "./attention.ts";
 * const rt = await Runtime.create();
 * console.table(await benchAttention(rt, { quick: true }));
 * ```
 */
export const benchAttention: OpBench = async (rt, opts) => {
  await loadTemplates(["attention"]);
  const rows: BenchRow[] = [];
  const dtypes: DType[] = rt.gpu.hasF16 ? ["f16", "f32"] : ["f32"];
  for (const full of FULL) {
    const c = opts.quick ? quickCase(full) : full;
    const hd = c.heads * c.d;
    const flops = 4 * c.batch * c.heads * c.lq * c.lk * c.d;
    const repeat = opts.quick ? 1 : Math.max(1, Math.min(20, Math.round(2e10 / flops)));
    for (const dtype of dtypes) {
      const q = upload(rt, [c.batch, c.lq, hd], 4, dtype);
      const k = upload(rt, [c.batch, c.lk, hd], 5, dtype);
      const v = upload(rt, [c.batch, c.lk, hd], 6, dtype);
      const out = rt.empty([c.batch, c.lq, hd], dtype);
      const probs: Tensor | undefined = c.probs ? rt.empty([c.batch, c.lq, c.lk]) : undefined;
      for (const variant of VARIANTS) {
        const loops = attentionLoopIterations(variant, { d: c.d, lk: c.lk, heads: c.heads });
        if (rt.gpu.isFallback && loops > SOFTWARE_LOOP_LIMIT) continue; // refused there
        const tol = dtype === "f16" ? 1e-2 : 1e-5;
        const maxErr = await check(rt, c, variant, dtype);
        const run = () => {
          for (let i = 0; i < repeat; i++) {
            attention(q.t, {
              k: k.t,
              v: v.t,
              heads: c.heads,
              causal: c.causal,
              variant,
              out,
              probs,
            });
          }
        };
        const ms = await timeMedian(rt, run, opts.reps ?? 5) / repeat;
        rows.push({
          op: "attention",
          variant,
          shape: `${c.name}: B=${c.batch} L=${c.lq}×${c.lk} h=${c.heads} d=${c.d}` +
            `${c.causal ? " causal" : ""} ${dtype}`,
          ms,
          gflops: flops / ms / 1e6,
          ok: maxErr <= tol,
          maxErr,
        });
      }
      for (const t of [q.t, k.t, v.t, out]) t.dispose();
      probs?.dispose();
    }
  }
  return rows;
};
