// openComponent: on-demand reads give exactly readComponent's tensors, each a fresh buffer the
// caller owns; ParamStore frees owned host data right after uploading it.
import assert from "node:assert/strict";
import { ParamStore } from "../../src/models/params.ts";
import type { Component } from "../../src/weights/names.ts";
import {
  closeModelSource,
  ComponentTensors,
  openComponent,
  openModelSource,
  readComponent,
} from "../../src/weights/source.ts";
import { GPU_TEST, testRuntime } from "../gpu_util.ts";
import { bytesOf, encodeSafetensors, modelDir, MODELS, singleFile } from "./fixtures.ts";

const COMPONENTS: Component[] = ["unet", "vae", "text_encoder"];

for (const model of MODELS) {
  Deno.test(`component: ${model} on-demand reads equal readComponent, folder and single file`, async () => {
    const folder = await openModelSource(modelDir(model));
    const path = singleFile(model);
    const single = path === undefined
      ? undefined
      : await openModelSource(path, { configs: folder.configs });
    try {
      for (const source of single ? [folder, single] : [folder]) {
        for (const component of COMPONENTS) {
          for (const f32 of [false, true]) {
            const want = await readComponent(source, component, { f32 });
            const lazy = await openComponent(source, component, { f32 });
            const where = `${source.kind} ${component} f32=${f32}`;
            assert.equal(lazy.size, want.size, where);
            assert.deepEqual([...lazy.keys()], [...want.keys()], where);
            for (const [key, w] of want) {
              assert.ok(lazy.has(key));
              assert.deepEqual(lazy.info(key)?.shape, w.shape, key);
              const g = lazy.get(key)!;
              assert.deepEqual(g.shape, w.shape, key);
              assert.equal(g.dtype, w.dtype, key);
              assert.deepEqual(g.data, w.data, `${where}: ${key}`);
              assert.equal(g.owned, true);
              assert.notEqual(lazy.get(key)!.data.buffer, g.data.buffer, "a fresh buffer per get");
            }
            assert.equal(lazy.get("no.such.key"), undefined);
          }
        }
      }
    } finally {
      if (single) closeModelSource(single);
    }
  });
}

Deno.test("component: a fused q/k/v part is read as its own byte range", async () => {
  const path = singleFile("tiny-sd2");
  if (path === undefined) return;
  const folder = await openModelSource(modelDir("tiny-sd2"));
  const single = await openModelSource(path, { configs: folder.configs });
  try {
    const lazy = await openComponent(single, "text_encoder");
    const q = lazy.get("text_model.encoder.layers.0.self_attn.q_proj.weight")!;
    const v = lazy.get("text_model.encoder.layers.0.self_attn.v_proj.weight")!;
    const d = folder.configs.text_encoder.hidden_size;
    assert.deepEqual(q.shape, [d, d]);
    assert.equal(q.data.byteLength, v.data.byteLength);
    assert.equal(q.data.byteLength, q.data.buffer.byteLength, "only the part was read");
  } finally {
    closeModelSource(single);
  }
});

Deno.test("component: a file cut short after opening is reported with a fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denoise_component_" });
  try {
    const file = `${dir}/w.safetensors`;
    await Deno.writeFile(
      file,
      encodeSafetensors([
        { name: "w", dtype: "F32", shape: [4], data: bytesOf(new Float32Array([1, 2, 3, 4])) },
      ]),
    );
    const size = (await Deno.stat(file)).size;
    const lazy = new ComponentTensors(
      new Map([["w", {
        path: file,
        byteOffset: size - 16,
        byteLength: 32,
        dtype: "F32",
        shape: [8],
      }]]),
    );
    assert.throws(() => lazy.get("w"), /unexpected end of file .* truncated .* re-download it/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "component: ParamStore frees owned host data once uploaded, and only that",
  GPU_TEST,
  async () => {
    const rt = await testRuntime();
    const owned = {
      shape: [3],
      dtype: "F32" as const,
      data: new Float32Array([1, 2, 3]),
      owned: true,
    };
    const kept = { shape: [2], dtype: "F32" as const, data: new Float32Array([4, 5]) };
    const store = new ParamStore(rt, new Map([["a", owned], ["b", kept]]), {
      dtype: "f32",
      component: "test",
    });
    const a = store.take("a", [3]);
    const b = store.take("b", [2]);
    assert.deepEqual(store.finish(), []);
    assert.equal(owned.data.byteLength, 0, "owned data is detached after the upload");
    assert.deepEqual(kept.data, new Float32Array([4, 5]), "borrowed data is left alone");
    assert.deepEqual(await rt.read(a), new Float32Array([1, 2, 3]));
    assert.deepEqual(await rt.read(b), new Float32Array([4, 5]));
    store.dispose();
  },
);
