/**
 * A CPU random-normal generator that reproduces PyTorch's
 * `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` on the CPU, so that seeds
 * give the same latents as diffusers and A1111 ("CPU" RNG).
 *
 * How torch draws (ATen `normal_kernel`, CPU, float32, contiguous):
 * - The engine is MT19937 seeded with `init_genrand(seed & 0xffffffff)`.
 * - 16 or more elements: one 32-bit word per element becomes a uniform `(w & 0xFFFFFF)·2⁻²⁴`, then
 *   Box–Muller runs in blocks of 16 (`u1 = 1 − d[j]`, `u2 = d[j+8]`, `r = √(−2·ln u1)`,
 *   `θ = 2π·u2`, `d[j] = r·cos θ`, `d[j+8] = r·sin θ`, j < 8). When the count is not a multiple of
 *   16, the last 16 elements are redone from 16 fresh words. x86-64 builds of torch run this block
 *   with AVX2 and the Cephes-style `log256_ps` / `sincos256_ps` of `avx_mathfun.h` in float32,
 *   with the multiply–adds that GCC contracts to FMA; this module evaluates exactly those float32
 *   operations, so its output is bit-identical to such builds (the reference fixtures are).
 * - Fewer than 16 elements: the scalar `at::normal_distribution<double>`: two 53-bit uniforms
 *   (each from two words, high word first), `r = √(−2·ln(1 − u2))`, `θ = 2π·u1`, returning
 *   `r·cos θ` rounded to float32 and caching `r·sin θ` in the generator for the next scalar draw.
 *   The cache survives calls (the 16+ path neither reads nor clears it).
 *
 * @module
 */

/** A source of standard-normal float32 tensors. */
export interface Rng {
  /**
   * Draws a tensor of independent N(0, 1) values, row-major, with `shape`'s element count.
   *
   * @example
   * ```ts
   * import { torchRandn } from "@denoise/sd";
   * const noise = torchRandn(0).randn([1, 4, 64, 64]); // [B, C, H, W]
   * ```
   */
  randn(shape: number[]): Float32Array;
}

const N = 624;
const M = 397;

/**
 * The MT19937 engine as PyTorch's CPU generator uses it (`init_genrand` seeding, standard
 * tempering), producing unsigned 32-bit words.
 *
 * @example
 * ```ts
 * import { Mt19937 } from "./torch_randn.ts";
 * const mt = new Mt19937(5489);
 * const first = mt.nextUint32(); // 3499211612, as std::mt19937
 * ```
 */
export class Mt19937 {
  #state = new Uint32Array(N);
  #next = N;

  /** Seeds the engine with `init_genrand(seed)`; `seed` must be an integer in [0, 2³²). */
  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(
        `Mt19937 seed ${seed} is not an integer in [0, 2^32): reduce it with seed & 0xffffffff`,
      );
    }
    const s = this.#state;
    s[0] = seed;
    for (let j = 1; j < N; j++) {
      const prev = s[j - 1] ^ (s[j - 1] >>> 30);
      s[j] = Math.imul(1812433253, prev) + j;
    }
  }

  /** The next tempered 32-bit word, as an unsigned integer. */
  nextUint32(): number {
    if (this.#next >= N) this.#twist();
    let y = this.#state[this.#next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  #twist(): void {
    const s = this.#state;
    for (let k = 0; k < N; k++) {
      const y = (s[k] & 0x80000000) | (s[(k + 1) % N] & 0x7fffffff);
      s[k] = s[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.#next = 0;
  }
}

const f = Math.fround;
const bitsF32 = new Float32Array(1);
const bitsU32 = new Uint32Array(bitsF32.buffer);

/** Fused multiply–add of float32 values with a single rounding to float32. */
function fmaf(a: number, b: number, c: number): number {
  const p = a * b; // exact: a product of two float32 values fits a double
  const s = p + c;
  const r = f(s);
  if (r === s || r === 0 || !Number.isFinite(s)) return r;
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb); // s + err = p + c exactly
  if (err === 0) return r;
  // Rounding s to float32 is only wrong when s sits exactly halfway between two floats.
  bitsF32[0] = r;
  bitsU32[0] += (s > r) === (r > 0) ? 1 : -1;
  const q = bitsF32[0];
  if (s - r !== q - s) return r;
  return (err > 0) === (q > r) ? q : r;
}

// avx_mathfun.h constants, as float32.
const SQRTHF = f(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2,
  -1.1514610310e-1,
  1.1676998740e-1,
  -1.2420140846e-1,
  1.4249322787e-1,
  -1.6668057665e-1,
  2.0000714765e-1,
  -2.4999993993e-1,
  3.3333331174e-1,
].map(f);
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);
const MINUS_DP1 = f(-0.78515625);
const MINUS_DP2 = f(-2.4187564849853515625e-4);
const MINUS_DP3 = f(-3.77489497744594108e-8);
const SINCOF = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f);
const COSCOF = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f);
const FOPI = f(1.27323954473516);
const TWO_PI_F = f(2 * Math.PI);
const MIN_NORM = 2 ** -126;

/** `log256_ps` for one lane: natural log of a positive float32, Cephes polynomial. */
function logAvx(v: number): number {
  if (!(v > 0)) return NaN;
  bitsF32[0] = Math.max(v, MIN_NORM);
  const bits = bitsU32[0];
  let e = f((bits >>> 23) - 127 + 1);
  bitsU32[0] = (bits & ~0x7f800000) | 0x3f000000; // mantissa with the exponent of 0.5
  let x = bitsF32[0];
  const small = x < SQRTHF;
  const tmp = small ? x : 0;
  x = f(x - 1);
  if (small) e = f(e - 1);
  x = f(x + tmp);
  const z = f(x * x);
  let y = LOG_P[0];
  for (let k = 1; k < LOG_P.length; k++) y = fmaf(y, x, LOG_P[k]);
  y = f(y * x);
  y = fmaf(y, z, f(e * LOG_Q1));
  y = f(y - z * 0.5);
  x = f(x + y);
  return fmaf(e, LOG_Q2, x);
}

/** `sincos256_ps` for one lane; writes [sin, cos] into `out`. */
function sinCosAvx(theta: number, out: Float64Array): void {
  const negative = theta < 0;
  let x = Math.abs(theta);
  let j = Math.trunc(f(x * FOPI));
  j = (j + 1) & ~1;
  const y = j;
  const sinNegative = negative !== ((j & 4) !== 0);
  const cosNegative = (~(j - 2) & 4) !== 0;
  const sinPolyFirst = (j & 2) === 0;
  x = fmaf(y, MINUS_DP1, x);
  x = fmaf(y, MINUS_DP2, x);
  x = fmaf(y, MINUS_DP3, x);
  const z = f(x * x);
  let c = fmaf(COSCOF[0], z, COSCOF[1]);
  c = fmaf(c, z, COSCOF[2]);
  c = f(c * z);
  c = fmaf(c, z, -(z * 0.5));
  c = f(c + 1);
  let s = fmaf(SINCOF[0], z, SINCOF[1]);
  s = fmaf(s, z, SINCOF[2]);
  s = f(s * z);
  s = fmaf(s, x, x);
  const sin = sinPolyFirst ? s : c;
  const cos = sinPolyFirst ? c : s;
  out[0] = sinNegative ? -sin : sin;
  out[1] = cosNegative ? -cos : cos;
}

/** Box–Muller on 16 uniforms at `data[o..o+16)`, in place (torch's `normal_fill_16_AVX2`). */
function normalFill16(data: Float32Array, o: number, sc: Float64Array): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[o + j]);
    const u2 = data[o + j + 8];
    const radius = f(Math.sqrt(f(-2 * logAvx(u1))));
    sinCosAvx(f(TWO_PI_F * u2), sc);
    data[o + j] = f(radius * sc[1]);
    data[o + j + 8] = f(radius * sc[0]);
  }
}

function numelOf(shape: number[]): number {
  if (!Array.isArray(shape)) {
    throw new TypeError(`randn shape must be an array of sizes, like [1, 4, 64, 64]`);
  }
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(
        `randn shape [${
          shape.join(", ")
        }] has size ${d}: every size must be a non-negative integer`,
      );
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n) || n > 2 ** 32) {
    throw new RangeError(`randn shape [${shape.join(", ")}] has too many elements (${n})`);
  }
  return n;
}

function lowSeedWord(seed: number | bigint): number {
  let s: bigint;
  if (typeof seed === "bigint") s = seed;
  else if (typeof seed === "number" && Number.isInteger(seed)) s = BigInt(seed);
  else throw new TypeError(`seed ${String(seed)} must be an integer (number or bigint)`);
  if (s < -(2n ** 63n) || s >= 2n ** 64n) {
    throw new RangeError(
      `seed ${s} is outside torch's range [-2^63, 2^64): pass a seed that fits in 64 bits`,
    );
  }
  return Number(BigInt.asUintN(32, s));
}

class TorchCpuGenerator implements Rng {
  #mt: Mt19937;
  #nextDoubleNormal: number | null = null;
  #sc = new Float64Array(2);

  constructor(seed: number) {
    this.#mt = new Mt19937(seed);
  }

  randn(shape: number[]): Float32Array {
    const n = numelOf(shape);
    const out = new Float32Array(n);
    if (n >= 16) this.#fill(out);
    else for (let i = 0; i < n; i++) out[i] = this.#normalDouble();
    return out;
  }

  #uniform24(): number {
    return (this.#mt.nextUint32() & 0xffffff) / 16777216;
  }

  #uniform53(): number {
    const hi = this.#mt.nextUint32();
    const lo = this.#mt.nextUint32();
    return ((hi & 0x1fffff) * 4294967296 + lo) / 9007199254740992;
  }

  #fill(data: Float32Array): void {
    const n = data.length;
    for (let i = 0; i < n; i++) data[i] = this.#uniform24();
    for (let i = 0; i + 16 <= n; i += 16) normalFill16(data, i, this.#sc);
    if (n % 16 !== 0) {
      const o = n - 16;
      for (let i = 0; i < 16; i++) data[o + i] = this.#uniform24();
      normalFill16(data, o, this.#sc);
    }
  }

  #normalDouble(): number {
    if (this.#nextDoubleNormal !== null) {
      const cached = this.#nextDoubleNormal;
      this.#nextDoubleNormal = null;
      return cached;
    }
    const u1 = this.#uniform53();
    const u2 = this.#uniform53();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = 2 * Math.PI * u1;
    this.#nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

/**
 * A generator equal to `torch.Generator().manual_seed(seed)` on the CPU: consecutive `randn`
 * calls return what consecutive `torch.randn(shape, generator=g)` calls return (float32).
 * Seeds follow torch: any integer in [-2⁶³, 2⁶⁴), of which the engine uses the low 32 bits.
 *
 * @example
 * ```ts
 * import { torchRandn } from "@denoise/sd";
 * const g = torchRandn(42);
 * const latents = g.randn([1, 4, 64, 64]); // [B, C, H, W], = torch.randn(..., generator=g)
 * const stepNoise = g.randn([1, 4, 64, 64]); // the next draw, as an ancestral sampler makes
 * ```
 */
export function torchRandn(seed: number | bigint): Rng {
  return new TorchCpuGenerator(lowSeedWord(seed));
}
