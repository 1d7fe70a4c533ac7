/**
 * The Stable Diffusion U-Net (diffusers `UNet2DConditionModel`) on the GPU, built from its
 * diffusers config and loaded strictly from diffusers-named tensors.
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import type { Runtime } from "../gpu/runtime.ts";
import { bindScope, chain, type ChainStep } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { unary } from "../ops/elementwise.ts";
import { linear } from "../ops/gemm.ts";
import type { UNet2DConditionConfig } from "../weights/configs.ts";
import type { LoadedTensor } from "../weights/source.ts";
import { timestepEmbedding } from "./embeddings.ts";
import { Conv2d, GroupNorm, Linear } from "./layers.ts";
import { ParamStore } from "./params.ts";
import { UNET_FUSIONS, type UNetContext, type UNetFusions } from "./transformer_2d.ts";
import { type BlockConfig, DownBlock, MidBlock, UpBlock } from "./unet_blocks.ts";

/** Options for {@link UNet2DConditionModel.forward}. */
export interface UNetForwardOptions {
  /** The diffusion timestep: one number for the whole batch, or one per batch item. */
  timestep: number | readonly number[];
  /** The conditioning (e.g. CLIP text embeddings), `[B, Lctx, cross_attention_dim]`. */
  encoderHiddenStates: Tensor;
  /**
   * Called with the diffusers module name (`time_proj`, `time_embedding`, `conv_in`,
   * `down_blocks.N`, `mid_block`, `up_blocks.N`, `conv_norm_out`, `conv_act`, `conv_out`) and its
   * output, borrowed: the model frees intermediates afterwards, so read or copy what you keep
   * (`read()` records its copy at once; or `rt.copy`).
   */
  capture?: (name: string, t: Tensor) => void;
  /**
   * Opt-in: called for every cross-attention layer (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`, …)
   * with its softmax probabilities averaged over heads, `[B, h·w, Lctx]` f32. The callee owns and
   * disposes the tensor (it is written when the recorded work runs: read it after a flush).
   */
  attentionProbs?: (name: string, probs: Tensor) => void;
}

/** Config values the model does not implement, with the value it requires. */
const REQUIRED: [string, unknown][] = [
  ["time_embedding_type", "positional"],
  ["class_embed_type", null],
  ["addition_embed_type", null],
  ["encoder_hid_dim_type", null],
  ["time_cond_proj_dim", null],
  ["time_embedding_dim", null],
  ["timestep_post_act", null],
  ["resnet_time_scale_shift", "default"],
  ["resnet_skip_time_act", false],
  ["resnet_out_scale_factor", 1],
  ["mid_block_scale_factor", 1],
  ["center_input_sample", false],
  ["only_cross_attention", false],
  ["dual_cross_attention", false],
  ["cross_attention_norm", null],
  ["attention_type", "default"],
  ["act_fn", "silu"],
  ["conv_in_kernel", 3],
  ["conv_out_kernel", 3],
  ["downsample_padding", 1],
  ["transformer_layers_per_block", 1],
];

/** One value per down block from an int-or-list config entry. */
function perBlock(name: string, value: unknown, levels: number): number[] {
  const list = Array.isArray(value) ? value : Array(levels).fill(value);
  if (list.length !== levels || list.some((v) => !Number.isInteger(v) || v < 1)) {
    throw new Error(
      `denoise: unet config ${name} = ${JSON.stringify(value)} must be a positive integer or ` +
        `a list of ${levels} (one per down block)`,
    );
  }
  return list as number[];
}

function checkConfig(config: UNet2DConditionConfig): void {
  for (const [key, want] of REQUIRED) {
    const got = config[key];
    if (got === undefined || got === want) continue;
    if (key === "transformer_layers_per_block" && Array.isArray(got) && got.every((v) => v === 1)) {
      continue;
    }
    throw new Error(
      `denoise: unet config ${key} = ${JSON.stringify(got)} is not supported (only ` +
        `${JSON.stringify(want)}, as in Stable Diffusion 1.x / 2.x)`,
    );
  }
  const levels = config.down_block_types.length;
  if (config.up_block_types.length !== levels || config.block_out_channels.length !== levels) {
    throw new Error(
      `denoise: unet config has ${levels} down blocks, ${config.up_block_types.length} up ` +
        `blocks and ${config.block_out_channels.length} block_out_channels: they must agree`,
    );
  }
  if (config.mid_block_type !== "UNetMidBlock2DCrossAttn") {
    throw new Error(
      `denoise: unet mid_block_type ${config.mid_block_type} is not supported (only ` +
        `UNetMidBlock2DCrossAttn)`,
    );
  }
}

/** Every resnet's key prefix and width, in the order `forward` runs them (down, mid, up). */
function resnetWidths(config: UNet2DConditionConfig): { prefix: string; cout: number }[] {
  const ch = config.block_out_channels;
  const out: { prefix: string; cout: number }[] = [];
  ch.forEach((c, i) => {
    for (let j = 0; j < config.layers_per_block; j++) {
      out.push({ prefix: `down_blocks.${i}.resnets.${j}`, cout: c });
    }
  });
  for (const j of [0, 1]) out.push({ prefix: `mid_block.resnets.${j}`, cout: ch.at(-1)! });
  [...ch].reverse().forEach((c, i) => {
    for (let j = 0; j <= config.layers_per_block; j++) {
      out.push({ prefix: `up_blocks.${i}.resnets.${j}`, cout: c });
    }
  });
  return out;
}

/** The key of a U-Net cross-attention's `to_k` weight. */
const CROSS_K = /^(down_blocks|mid_block|up_blocks)\..*\.attn2\.to_k\.weight$/;

function blockKind(type: string, plain: string, cross: string): boolean {
  if (type === plain) return false;
  if (type === cross) return true;
  throw new Error(`denoise: unet block type ${type} is not supported (only ${plain}, ${cross})`);
}

/**
 * diffusers `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it: sinusoidal time
 * embedding → `conv_in` → down blocks → mid block → up blocks (reading the skips) →
 * `conv_norm_out` + SiLU → `conv_out`, predicting noise (or v) for a latent.
 *
 * @example
 * ```ts no-run
 * import { Runtime } from "@denoise/sd/gpu";
 * import { openModelSource, readComponent } from "@denoise/sd/weights";
 * import { UNet2DConditionModel } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const src = await openModelSource("models/tiny-sd15");
 * const unet = UNet2DConditionModel.load(rt, {
 *   tensors: await readComponent(src, "unet"),
 *   config: src.configs.unet,
 *   dtype: "f16",
 * });
 * const latents = rt.upload(new Float32Array(4 * 16 * 16), [1, 4, 16, 16], { dtype: "f16" });
 * const text = rt.upload(new Float32Array(77 * 32), [1, 77, 32], { dtype: "f16" });
 * const eps = unet.forward(latents, { timestep: 999, encoderHiddenStates: text }); // [1, 4, 16, 16]
 * console.log(await eps.read());
 * ```
 */
export class UNet2DConditionModel {
  /** Maps the sinusoidal embedding to the time embedding: `linear_1` → SiLU → `linear_2`. */
  readonly time_embedding: { linear_1: Linear; linear_2: Linear };
  /** Latent → first level. */
  readonly conv_in: Conv2d;
  /** The down path. */
  readonly down_blocks: DownBlock[];
  /** The bottleneck. */
  readonly mid_block: MidBlock;
  /** The up path. */
  readonly up_blocks: UpBlock[];
  /** GroupNorm before the output conv (SiLU fused). */
  readonly conv_norm_out: GroupNorm;
  /** First level → latent channels. */
  readonly conv_out: Conv2d;
  /** The dtype parameters and activations use. */
  readonly dtype: DType;
  /** Checkpoint keys the model did not use. */
  readonly unused: string[];
  /**
   * The dispatch fusions `forward` uses (all on; each computes what the plain graph does, so
   * switching one off only measures it).
   */
  readonly fusions: UNetFusions = Object.fromEntries(
    UNET_FUSIONS.map((f) => [f, true]),
  ) as unknown as UNetFusions;
  readonly #store: ParamStore;
  /** Every resnet's `time_emb_proj.weight`, joined (rows in `forward` order), when joinable. */
  readonly #tembProj?: Tensor;
  /** Every cross-attention's `to_k.weight` and `to_v.weight`, joined, when joinable. */
  readonly #kvProj?: Tensor;

  private constructor(
    readonly rt: Runtime,
    tensors: ReadonlyMap<string, LoadedTensor>,
    readonly config: UNet2DConditionConfig,
    dtype: DType,
  ) {
    checkConfig(config);
    this.dtype = dtype;
    const store = new ParamStore(rt, tensors, { dtype, component: "unet" });
    this.#store = store;
    try {
      const root = store.scope();
      const ch = config.block_out_channels;
      const levels = ch.length;
      const heads = perBlock(
        config.num_attention_heads != null ? "num_attention_heads" : "attention_head_dim",
        config.num_attention_heads ?? config.attention_head_dim,
        levels,
      );
      const tembChannels = ch[0] * 4;
      const te = root.child("time_embedding");
      this.time_embedding = {
        linear_1: new Linear(te.child("linear_1"), ch[0], tembChannels),
        linear_2: new Linear(te.child("linear_2"), tembChannels, tembChannels),
      };
      this.conv_in = new Conv2d(root.child("conv_in"), config.in_channels, ch[0], 3, {
        padding: 1,
      });
      const widths = resnetWidths(config);
      this.#tembProj = root.join(
        widths.map((r) => `${r.prefix}.time_emb_proj.weight`),
        widths.map((r) => [r.cout, tembChannels]),
      );
      // before the blocks take them: every cross-attention's k, v weights as rows of one weight
      const kv = [...tensors.keys()].filter((k) => CROSS_K.test(k)).sort()
        .flatMap((k) => [k, k.replace(/to_k\.weight$/, "to_v.weight")]);
      const kvShapes = kv.map((k) => tensors.get(k)?.shape ?? []);
      this.#kvProj = kv.length > 2 ? root.join(kv, kvShapes) : undefined;
      const base = {
        tembChannels,
        groups: config.norm_num_groups,
        eps: config.norm_eps,
      };
      const attention = (h: number) => ({
        heads: h,
        contextDim: config.cross_attention_dim,
        useLinearProjection: config.use_linear_projection,
      });
      this.down_blocks = config.down_block_types.map((type, i) => {
        const cross = blockKind(type, "DownBlock2D", "CrossAttnDownBlock2D");
        const cfg: BlockConfig = {
          ...base,
          layers: config.layers_per_block,
          inChannels: i === 0 ? ch[0] : ch[i - 1],
          outChannels: ch[i],
          ...(cross ? { attention: attention(heads[i]) } : {}),
        };
        return new DownBlock(root.child("down_blocks").child(i), cfg, {
          downsample: i < levels - 1,
        });
      });
      const last = ch[levels - 1];
      this.mid_block = new MidBlock(root.child("mid_block"), {
        ...base,
        layers: 1,
        inChannels: last,
        outChannels: last,
        attention: attention(heads[levels - 1]),
      });
      const rch = [...ch].reverse();
      const rheads = [...heads].reverse();
      this.up_blocks = config.up_block_types.map((type, i) => {
        const cross = blockKind(type, "UpBlock2D", "CrossAttnUpBlock2D");
        const cfg: BlockConfig = {
          ...base,
          layers: config.layers_per_block + 1,
          inChannels: rch[Math.min(i + 1, levels - 1)],
          outChannels: rch[i],
          ...(cross ? { attention: attention(rheads[i]) } : {}),
        };
        return new UpBlock(root.child("up_blocks").child(i), cfg, {
          prevChannels: i === 0 ? last : rch[i - 1],
          upsample: i < levels - 1,
        });
      });
      this.conv_norm_out = new GroupNorm(
        root.child("conv_norm_out"),
        config.norm_num_groups,
        ch[0],
        config.norm_eps,
      );
      this.conv_out = new Conv2d(root.child("conv_out"), ch[0], config.out_channels, 3, {
        padding: 1,
      });
      if (this.#tembProj) {
        const resnets = [
          ...this.down_blocks.flatMap((b) => b.resnets),
          ...this.mid_block.resnets,
          ...this.up_blocks.flatMap((b) => b.resnets),
        ];
        let column = 0;
        resnets.forEach((r, i) => {
          r.tembColumn = column;
          column += widths[i].cout;
        });
      }
      this.unused = store.finish();
    } catch (e) {
      store.dispose();
      throw e;
    }
  }

  /**
   * Builds the model for `config` and uploads `tensors` (diffusers keys, e.g. from
   * `readComponent(source, "unet")`) in `dtype` (default: the runtime's preferred dtype). Strict:
   * throws a `StrictImportError` naming every missing key and wrong shape; unused keys are listed
   * in `unused`.
   */
  static load(
    rt: Runtime,
    options: {
      tensors: ReadonlyMap<string, LoadedTensor>;
      config: UNet2DConditionConfig;
      dtype?: DType;
    },
  ): UNet2DConditionModel {
    const dtype = options.dtype ?? rt.preferredDType;
    rt.assertDType(dtype);
    return new UNet2DConditionModel(rt, options.tensors, options.config, dtype);
  }

  /**
   * How often the down path halves the latents (2^(levels − 1)). Any latent size works: a side
   * that is not a multiple is rounded up at each halving and the up path cuts back to the skip's
   * size, as diffusers' `forward_upsample_size`.
   */
  get sizeMultiple(): number {
    return 2 ** (this.down_blocks.length - 1);
  }

  /**
   * The model output for `sample` `[B, in_channels, h, w]` at `timestep` (one for all, or one per
   * batch item) conditioned on `encoderHiddenStates` `[B, Lctx, cross_attention_dim]` (any Lctx,
   * e.g. 77, 154, …): `[B, out_channels, h, w]` in the model's dtype. Records work; the caller
   * flushes (reading the result does).
   */
  forward(sample: Tensor, options: UNetForwardOptions): Tensor {
    const { timestep, encoderHiddenStates } = options;
    const b = this.#checkInputs(sample, encoderHiddenStates);
    const capture = options.capture && bindScope(options.capture); // hooks allocate in our caller's scope
    const ch0 = this.config.block_out_channels[0];
    // 1. time embedding
    const steps = typeof timestep === "number" ? Array(b).fill(timestep) : [...timestep];
    if (steps.length !== b) {
      throw new Error(
        `denoise: unet got ${steps.length} timesteps for a batch of ${b}: pass one number or ` +
          `one per batch item`,
      );
    }
    return this.rt.scope(() => {
      const tap = (name: string, step: ChainStep): ChainStep => (t) => {
        const y = step(t);
        capture?.(name, y);
        return y;
      };
      // 1. time embedding: silu(linear_2(silu(linear_1(sinusoid(t))))), shared by every resnet
      const tembAct = chain(
        () => {
          const tProj = this.rt.upload(
            timestepEmbedding(steps, ch0, {
              flipSinToCos: (this.config.flip_sin_to_cos as boolean | undefined) ?? true,
              freqShift: (this.config.freq_shift as number | undefined) ?? 0,
            }),
            [b, ch0],
            { dtype: this.dtype },
          ); // [B, C0]
          capture?.("time_proj", tProj);
          return tProj;
        },
        (t) => this.time_embedding.linear_1.forward(t, { activation: "silu" }), // [B, 4·C0]
        ...(capture || !this.fusions.temb
          ? [
            tap("time_embedding", (t) => this.time_embedding.linear_2.forward(t)), // [B, 4·C0]
            (t: Tensor) => unary(t, "silu"), // [B, 4·C0]
          ]
          : [(t: Tensor) => this.time_embedding.linear_2.forward(t, { activation: "silu" })]),
      );
      const ctx: UNetContext = {
        tembAct,
        tembAll: this.fusions.temb && this.#tembProj
          ? linear(tembAct, this.#tembProj) // [B, Σ Cout]
          : undefined,
        encoderHiddenStates,
        kvAll: this.fusions.kv && this.#kvProj
          ? linear(encoderHiddenStates, this.#kvProj) // [B, Lctx, Σ 2·C]
          : undefined,
        fusions: { ...this.fusions },
        attentionProbs: options.attentionProbs && bindScope(options.attentionProbs),
      };
      // 2. conv_in
      const x = this.conv_in.forward(sample); // [B, C0, h, w]
      capture?.("conv_in", x);
      // 3. down path: every stage's output is a skip for the up path
      const skips: Tensor[] = [x];
      for (const [i, block] of this.down_blocks.entries()) {
        skips.push(...block.forward(skips.at(-1)!, ctx)); // [B, C_i, h/2^(i+1), w/2^(i+1)]
        capture?.(`down_blocks.${i}`, skips.at(-1)!);
      }
      return chain(
        skips.at(-1)!,
        // 4. mid block
        tap("mid_block", (t) => this.mid_block.forward(t, ctx)), // [B, Clast, h/2^(n−1), w/2^(n−1)]
        // 5. up path: each block takes its skips off the stack
        ...this.up_blocks.map((block, i) =>
          tap(`up_blocks.${i}`, (t) => block.forward(t, ctx, skips)) // [B, C, H·2, W·2]
        ),
        // 6. post-process
        (t) => {
          if (capture) {
            using normed = this.conv_norm_out.forward(t); // [B, C0, h, w]
            capture("conv_norm_out", normed);
          }
          return this.conv_norm_out.forward(t, { silu: true }); // [B, C0, h, w]
        },
        tap("conv_act", (t) => t),
        tap("conv_out", (t) => this.conv_out.forward(t)), // [B, out_channels, h, w]
      );
    });
  }

  /** The parameters by diffusers key (LoRA merging writes into them). */
  get params(): ReadonlyMap<string, Tensor> {
    return this.#store.params;
  }

  /** Frees the parameters. */
  dispose(): void {
    this.#store.dispose();
  }

  #checkInputs(sample: Tensor, text: Tensor): number {
    const c = this.config;
    const [b, cin, h, w] = sample.shape;
    if (sample.shape.length !== 4 || cin !== c.in_channels) {
      throw new Error(
        `denoise: unet sample must be [B, ${c.in_channels}, h, w], got [${sample.shape}]`,
      );
    }
    if (h < 1 || w < 1) {
      throw new Error(`denoise: unet latent size ${h}×${w} is empty`);
    }
    if (text.shape.length !== 3 || text.shape[0] !== b || text.shape[2] !== c.cross_attention_dim) {
      throw new Error(
        `denoise: unet encoderHiddenStates must be [${b}, L, ${c.cross_attention_dim}] ` +
          `(one text embedding per batch item), got [${text.shape}]`,
      );
    }
    for (const [name, t] of [["sample", sample], ["encoderHiddenStates", text]] as const) {
      if (t.dtype !== this.dtype) {
        throw new Error(
          `denoise: unet ${name} is ${t.dtype} but the model runs in ${this.dtype}: upload it ` +
            `as ${this.dtype} (or cast it)`,
        );
      }
    }
    return b;
  }
}
