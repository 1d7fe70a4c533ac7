import assert from "node:assert/strict";
import { benchLoadCheckpoint, formatLoadReport } from "../bench/load_checkpoint.ts";
import { GPU_TEST } from "./gpu_util.ts";
import { modelDir } from "./util.ts";

Deno.test(
  "bench load_checkpoint: measures a tiny model's load, memory and pool",
  GPU_TEST,
  async () => {
    const dir = modelDir("tiny-sd15")!;
    const r = await benchLoadCheckpoint(dir, { dtype: "f32", tokenizer: `${dir}/tokenizer` });
    assert.equal(r.dtype, "f32");
    assert.equal(r.fileBytes, 0, "a folder has no single file size");
    assert.ok(r.ms.load > 0 && r.ms.encode > 0, JSON.stringify(r.ms));
    assert.ok(r.rss.baseline > 0 && r.rss.peak >= r.rss.afterLoad, JSON.stringify(r.rss));
    assert.equal(r.rss.peak, Math.max(r.rss.hwm, r.rss.peakSampled));
    assert.ok(r.rss.hwm > r.rss.baseline && r.rss.peakSampled > r.rss.baseline);
    assert.ok(r.pool.totalBytes > 0);
    assert.equal(r.hostOverhead, r.rss.peak - r.pool.totalBytes);
    assert.deepEqual(r.unused.unet, 0);
    assert.ok(r.unused.vae > 0, "the VAE encoder is not loaded");
    assert.ok(r.timeline.length > 0 && r.timeline.every(([, rss]) => rss > 0));
    const table = formatLoadReport(r);
    assert.match(table, /loadPipeline\s+\d+\.\d\d s/);
    assert.match(table, /host overhead \(peak − pool\)\s+\d+\.\d\d GB/);
  },
);
