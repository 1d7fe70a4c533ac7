import assert from "node:assert/strict";
import { Mt19937, torchRandn } from "../src/rng/torch_randn.ts";
import { assertClose, fixture } from "./util.ts";

// Words of MT19937 after init_genrand(0), from numpy's independent implementation:
// `bg = numpy.random.MT19937(); bg._legacy_seeding(0); bg.random_raw(630)`.
const SEED0_WORDS_0_4 = [2357136044, 2546248239, 3071714933, 3626093760];
const SEED0_WORDS_622_630 = [
  631131020,
  3791854820,
  341544762,
  1076416385,
  384842097,
  2909461632,
  2886423335,
  3480744984,
];

Deno.test("Mt19937 matches numpy's init_genrand words across the state refill", () => {
  const mt = new Mt19937(0);
  const words = Array.from({ length: 630 }, () => mt.nextUint32());
  assert.deepEqual(words.slice(0, 4), SEED0_WORDS_0_4);
  assert.deepEqual(words.slice(622, 630), SEED0_WORDS_622_630);
});

Deno.test("Mt19937(5489): the 10000th word is 4123659995, as the C++ standard requires", () => {
  const mt = new Mt19937(5489);
  let w = 0;
  for (let i = 0; i < 10000; i++) w = mt.nextUint32();
  assert.equal(w, 4123659995);
});

Deno.test("torchRandn(0) reproduces the fixture's init noise bit for bit", async () => {
  const ref = await fixture("rng/latents_init_noise.npy"); // [1, 4, 16, 16]
  const got = torchRandn(0).randn(ref.shape);
  assertClose(got, ref.data, { atol: 0, rtol: 0, label: "latents_init_noise" });
});

Deno.test("consecutive draws reproduce Euler ancestral's step noise (same generator)", async () => {
  const init = await fixture("rng/latents_init_noise.npy"); // [1, 4, 16, 16]
  const steps = await fixture("rng/euler_a_step_noise.npy"); // [4, 1, 4, 16, 16]
  const g = torchRandn(0);
  assertClose(g.randn(init.shape), init.data, { atol: 0, rtol: 0, label: "init noise" });
  const per = init.data.length;
  for (let k = 0; k < steps.shape[0]; k++) {
    const ref = steps.data.subarray(k * per, (k + 1) * per);
    assertClose(g.randn(init.shape), ref, { atol: 0, rtol: 0, label: `step_noise[${k}]` });
  }
});

Deno.test("seeds: bigint and number agree, only the low 32 bits matter, bad seeds throw", () => {
  const a = torchRandn(7).randn([32]);
  assert.deepEqual(torchRandn(7n).randn([32]), a);
  assert.deepEqual(torchRandn(2n ** 32n + 7n).randn([32]), a);
  assert.deepEqual(torchRandn(-1).randn([32]), torchRandn(0xffffffff).randn([32]));
  assert.notDeepEqual(torchRandn(8).randn([32]), a);
  assert.throws(() => torchRandn(1.5), /must be an integer/);
  assert.throws(() => torchRandn(2n ** 64n), /outside torch's range/);
  assert.throws(() => torchRandn(0).randn([2, -1]), /non-negative integer/);
});

Deno.test("a count that is not a multiple of 16 redoes the last 16 from fresh words", () => {
  // randn([20]): words 0..19 fill, block 0..15 is transformed, then positions 4..19 are redone
  // from words 20..35. randn([16]) + randn([2]) consumes words 0..15 and 16..19 (one scalar
  // pair = two 64-bit uniforms), so a following randn([16]) transforms words 20..35.
  const a = torchRandn(3).randn([20]);
  const g = torchRandn(3);
  const head = g.randn([16]);
  g.randn([2]);
  const tail = g.randn([16]);
  assert.deepEqual(a.subarray(0, 4), head.subarray(0, 4));
  assert.deepEqual(a.subarray(4), tail);
  // And the next draw after randn([20]) starts at word 36: 16 words, then five scalar pairs
  // (20 words) bring a fresh generator to the same place.
  const g2 = torchRandn(3);
  g2.randn([20]);
  const g3 = torchRandn(3);
  g3.randn([16]);
  g3.randn([10]);
  assert.deepEqual(g2.randn([16]), g3.randn([16]));
});

Deno.test("fewer than 16 elements: Box–Muller pairs with the second value cached across calls", () => {
  const four = torchRandn(11).randn([4]);
  const g = torchRandn(11);
  const three = g.randn([3]);
  const one = g.randn([1]); // the cached sine half of the second pair
  assert.deepEqual([...three, ...one], [...four]);
  // A 16+ draw in between neither uses nor clears the cache.
  const h = torchRandn(11);
  const first = h.randn([3]);
  h.randn([16]);
  assert.deepEqual(first, three);
  assert.equal(h.randn([1])[0], one[0]);
  // Scalar shapes draw one value; empty shapes draw nothing.
  assert.equal(torchRandn(11).randn([]).length, 1);
  const e = torchRandn(11);
  assert.equal(e.randn([0, 5]).length, 0);
  assert.deepEqual(e.randn([4]), four);
  // Values are finite standard normals of plausible size.
  const many = torchRandn(5).randn([15]);
  assert.ok(many.every((v) => Number.isFinite(v) && Math.abs(v) < 7));
});

Deno.test("large draws have standard-normal moments", () => {
  const x = torchRandn(123).randn([1, 4, 64, 64]);
  let s = 0, s2 = 0;
  for (const v of x) {
    s += v;
    s2 += v * v;
  }
  const mean = s / x.length, variance = s2 / x.length - mean * mean;
  assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.03, `variance ${variance}`);
});
