/**
 * The CLIP text encoder of Stable Diffusion (transformers' `CLIPTextModel`, keys `text_model.*`):
 * token + position embeddings, pre-LayerNorm transformer layers with a causal mask, and the final
 * LayerNorm. SD 1.x uses OpenAI's CLIP ViT-L/14 (`quick_gelu`), SD 2.x OpenCLIP ViT-H/14 (`gelu`,
 * 23 of its 24 layers; single-file checkpoints are mapped to the first `num_hidden_layers` layers
 * by the weights layer).
 *
 * @module
 */
import type { DType } from "../gpu/device.ts";
import type { Runtime } from "../gpu/runtime.ts";
import { chain } from "../gpu/scope.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { attention } from "../ops/attention.ts";
import { batchConcat, batchSlice } from "../ops/layout.ts";
import type { CLIPTextConfig } from "../weights/configs.ts";
import type { LoadedTensor } from "../weights/source.ts";
import { type Activation, LayerNorm, Linear } from "./layers.ts";
import { type ParamScope, ParamStore } from "./params.ts";

/** Options of {@link ClipTextModel.forward}. */
export interface ClipForwardOptions {
  /**
   * A1111's CLIP skip: 1 (or absent) = the last layer, 2 = the penultimate layer, …; the embedding
   * returned as `lastHiddenState` is `final_layer_norm(hidden_states[-clipSkip])`. (diffusers'
   * `clip_skip = k` is `clipSkip = k + 1` here.)
   */
  clipSkip?: number;
  /** Also return every hidden state (embedding output, then each layer's output). */
  outputHiddenStates?: boolean;
  /**
   * Token embeddings that replace the table's rows (textual inversion): `vectors` (`n · D` values)
   * go to positions `position … position + n − 1` of the `B · L` sequence, before the position
   * embeddings are added, as A1111's `EmbeddingsWithFixes`.
   */
  tokenEmbeddings?: readonly { position: number; vectors: Float32Array }[];
}

/** What {@link ClipTextModel.forward} returns; the caller disposes the tensors. */
export interface ClipTextOutput {
  /** `[B, L, D]`: the final-normed hidden state of the layer `clipSkip` selects. */
  lastHiddenState: Tensor;
  /**
   * With `outputHiddenStates`: `num_hidden_layers + 1` tensors `[B, L, D]`, the embedding output
   * then each layer's output, before the final LayerNorm (transformers' `hidden_states`).
   */
  hiddenStates?: Tensor[];
  /** `[B, D]`: the last layer's final-normed state at each sequence's end-of-text token. */
  pooled: Tensor;
}

/** Options of {@link ClipTextModel.load}. */
export interface ClipLoadOptions {
  /** The checkpoint tensors by diffusers key (e.g. from `readComponent(source, "text_encoder")`). */
  tensors: ReadonlyMap<string, LoadedTensor>;
  /** The model config (`text_encoder/config.json`). */
  config: CLIPTextConfig;
  /** The dtype of parameters and activations. */
  dtype: DType;
}

const ACTIVATIONS: Record<string, Activation> = { quick_gelu: "quick_gelu", gelu: "gelu" };

/** Checks a config and returns the MLP activation it names. */
function activationOf(config: CLIPTextConfig): Activation {
  const act = ACTIVATIONS[config.hidden_act];
  if (act === undefined) {
    throw new Error(
      `denoise: CLIP hidden_act "${config.hidden_act}" is not supported: use "quick_gelu" ` +
        `(SD 1.x) or "gelu" (SD 2.x) in the text encoder config`,
    );
  }
  const { hidden_size: d, num_attention_heads: heads } = config;
  if (!(Number.isInteger(heads) && heads > 0 && d % heads === 0)) {
    throw new Error(
      `denoise: CLIP hidden_size ${d} is not divisible by num_attention_heads ${heads}: ` +
        `check the text encoder config`,
    );
  }
  return act;
}

/**
 * `CLIPAttention`: multi-head self-attention with a causal mask.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import { ClipAttention } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * const attn = new ClipAttention(scope.child("self_attn"), 768, 12);
 * ```
 */
export class ClipAttention {
  /** Query projection. */
  readonly q_proj: Linear;
  /** Key projection. */
  readonly k_proj: Linear;
  /** Value projection. */
  readonly v_proj: Linear;
  /** Output projection. */
  readonly out_proj: Linear;

  /** Takes `q_proj`, `k_proj`, `v_proj`, `out_proj` from `scope`. */
  constructor(scope: ParamScope, dim: number, readonly heads: number) {
    this.q_proj = new Linear(scope.child("q_proj"), dim, dim);
    this.k_proj = new Linear(scope.child("k_proj"), dim, dim);
    this.v_proj = new Linear(scope.child("v_proj"), dim, dim);
    this.out_proj = new Linear(scope.child("out_proj"), dim, dim);
  }

  /** `residual + out_proj(attention(h))` for the normed input `h` `[B, L, D]`. */
  forward(h: Tensor, residual: Tensor): Tensor {
    const headDim = h.shape[2] / this.heads;
    return chain(
      h,
      (t) =>
        h.rt.scope(() =>
          attention(this.q_proj.forward(t), {
            k: this.k_proj.forward(t), // [B, L, D]
            v: this.v_proj.forward(t), // [B, L, D]
            heads: this.heads,
            causal: true,
            scale: headDim ** -0.5,
          })
        ), // [B, L, D]
      (t) => this.out_proj.forward(t, { residual }), // [B, L, D]
    );
  }
}

/**
 * `CLIPEncoderLayer`: pre-LN self-attention and MLP blocks, each with a residual.
 *
 * @example
 * ```ts no-run
 * import type { ParamScope } from "@denoise/sd/models";
 * import type { CLIPTextConfig } from "@denoise/sd/weights";
 * import { ClipEncoderLayer } from "@denoise/sd/models";
 * declare const scope: ParamScope;
 * declare const config: CLIPTextConfig;
 * const layer = new ClipEncoderLayer(scope.child("layers").child(0), config, "quick_gelu");
 * ```
 */
export class ClipEncoderLayer {
  /** LayerNorm before the attention. */
  readonly layer_norm1: LayerNorm;
  /** The causal self-attention. */
  readonly self_attn: ClipAttention;
  /** LayerNorm before the MLP. */
  readonly layer_norm2: LayerNorm;
  /** The MLP: `fc2(act(fc1(x)))`. */
  readonly mlp: { fc1: Linear; fc2: Linear };

  /** Takes the layer's parameters from `scope`; `activation` is the MLP's. */
  constructor(scope: ParamScope, config: CLIPTextConfig, readonly activation: Activation) {
    const d = config.hidden_size, eps = config.layer_norm_eps;
    this.layer_norm1 = new LayerNorm(scope.child("layer_norm1"), d, eps);
    this.self_attn = new ClipAttention(scope.child("self_attn"), d, config.num_attention_heads);
    this.layer_norm2 = new LayerNorm(scope.child("layer_norm2"), d, eps);
    const mlp = scope.child("mlp");
    this.mlp = {
      fc1: new Linear(mlp.child("fc1"), d, config.intermediate_size),
      fc2: new Linear(mlp.child("fc2"), config.intermediate_size, d),
    };
  }

  /** One layer on `x` `[B, L, D]` (left intact). */
  forward(x: Tensor): Tensor {
    return chain(
      x,
      // 1. self-attention block
      (t) => x.rt.scope(() => this.self_attn.forward(this.layer_norm1.forward(t), t)), // [B, L, D]
      // 2. MLP block
      (t) =>
        chain(
          t,
          (h) => this.layer_norm2.forward(h), // [B, L, D]
          (h) => this.mlp.fc1.forward(h, { activation: this.activation }), // [B, L, I]
          (h) => this.mlp.fc2.forward(h, { residual: t }), // [B, L, D]
        ),
    );
  }
}

/**
 * The CLIP text encoder (`CLIPTextModel`). Parameters are taken strictly under the transformers
 * keys `text_model.*`; the embedding tables stay on the CPU (only `[B, L, D]` is uploaded).
 *
 * @example
 * ```ts no-run
 * import { Runtime } from "@denoise/sd/gpu";
 * import { openModelSource, readComponent } from "@denoise/sd/weights";
 * import { ClipTextModel } from "@denoise/sd/models";
 * const rt = await Runtime.create();
 * const src = await openModelSource("models/stable-diffusion-v1-5");
 * const tensors = await readComponent(src, "text_encoder");
 * const clip = ClipTextModel.load(rt, { tensors, config: src.configs.text_encoder, dtype: "f16" });
 * const ids = new Int32Array(77).fill(49407);
 * ids[0] = 49406;
 * const { lastHiddenState, pooled } = clip.forward(ids, { clipSkip: 2 });
 * console.log(lastHiddenState.shape, await pooled.read()); // [1, 77, 768]
 * ```
 */
export class ClipTextModel {
  /** The model config. */
  readonly config: CLIPTextConfig;
  /** The parameter dtype (and activation dtype). */
  readonly dtype: DType;
  /** `text_model.embeddings.token_embedding.weight` on the CPU, `[vocab, D]`. */
  readonly tokenEmbedding: Float32Array;
  /** `text_model.embeddings.position_embedding.weight` on the CPU, `[maxPositions, D]`. */
  readonly positionEmbedding: Float32Array;
  /** `text_model.encoder.layers.*`. */
  readonly layers: ClipEncoderLayer[];
  /** `text_model.final_layer_norm`. */
  readonly final_layer_norm: LayerNorm;
  /** Checkpoint keys the model did not use (set by {@link ClipTextModel.load}). */
  unused: string[] = [];
  readonly #store: ParamStore;

  /** Takes every parameter from `store` (call `store.finish()` afterwards, or use `load`). */
  constructor(store: ParamStore, config: CLIPTextConfig) {
    const activation = activationOf(config);
    this.#store = store;
    this.config = config;
    this.dtype = store.dtype;
    const d = config.hidden_size;
    const root = store.scope("text_model");
    const emb = root.child("embeddings");
    this.tokenEmbedding = store.hostF32(emb.child("token_embedding").key("weight"), [
      config.vocab_size,
      d,
    ]);
    this.positionEmbedding = store.hostF32(emb.child("position_embedding").key("weight"), [
      config.max_position_embeddings,
      d,
    ]);
    const layers = root.child("encoder").child("layers");
    this.layers = [];
    for (let i = 0; i < config.num_hidden_layers; i++) {
      this.layers.push(new ClipEncoderLayer(layers.child(i), config, activation));
    }
    this.final_layer_norm = new LayerNorm(root.child("final_layer_norm"), d, config.layer_norm_eps);
  }

  /**
   * Builds the model from a component's tensors (`readComponent(src, "text_encoder")`), strictly:
   * throws a `StrictImportError` naming every missing key and wrong shape; unused keys are kept
   * in `unused`.
   *
   * @example
   * ```ts no-run
   * import { Runtime } from "@denoise/sd/gpu";
   * import { openModelSource, readComponent } from "@denoise/sd/weights";
   * import { ClipTextModel } from "@denoise/sd/models";
   * const rt = await Runtime.create();
   * const src = await openModelSource("models/tiny-sd15");
   * const tensors = await readComponent(src, "text_encoder");
   * const clip = ClipTextModel.load(rt, { tensors, config: src.configs.text_encoder, dtype: "f32" });
   * console.log(clip.unused); // []
   * ```
   */
  static load(
    rt: Runtime,
    options: ClipLoadOptions,
  ): ClipTextModel {
    const { tensors, config } = options;
    activationOf(config);
    const store = new ParamStore(rt, tensors, { dtype: options.dtype, component: "text_encoder" });
    const model = new ClipTextModel(store, config);
    model.unused = store.finish();
    return model;
  }

  /** The sequence length (`max_position_embeddings`, 77 for SD). */
  get seqLen(): number {
    return this.config.max_position_embeddings;
  }

  /**
   * Encodes `B` token sequences (`ids`, `B · 77` ids, sequence after sequence). Records the work;
   * reading an output submits it.
   */
  forward(ids: ArrayLike<number>, options: ClipForwardOptions = {}): ClipTextOutput {
    const L = this.seqLen, D = this.config.hidden_size, n = this.layers.length;
    const batch = this.#checkIds(ids);
    const skip = options.clipSkip ?? 1;
    if (!(Number.isInteger(skip) && skip >= 1 && skip <= n)) {
      throw new Error(
        `denoise: clipSkip ${skip} is out of range: use an integer from 1 (last layer) to ${n}`,
      );
    }
    const skipIndex = n + 1 - skip; // index into hidden_states of the layer clipSkip selects

    const layers = (from: number, to: number) =>
      this.layers.slice(from, to).map((layer) => (t: Tensor) => layer.forward(t));
    return this.#rt.scope(() => {
      // 1. embeddings: token + position, looked up on the CPU
      const embed = () =>
        this.#rt.upload(this.#embed(ids, batch, options.tokenEmbeddings ?? []), [batch, L, D], {
          dtype: this.dtype,
        }); // [B, L, D]
      // 2. transformer layers (causal self-attention + MLP): every output kept when asked for,
      // else only the one clipSkip selects
      const hiddenStates: Tensor[] = [];
      if (options.outputHiddenStates) {
        hiddenStates.push(embed());
        for (const step of layers(0, n)) hiddenStates.push(step(hiddenStates.at(-1)!)); // [B, L, D]
      }
      const selected = hiddenStates[skipIndex] ?? chain(embed, ...layers(0, skipIndex)); // [B, L, D]
      // 3. final LayerNorm of the last layer's output
      const last = chain(
        hiddenStates[n] ?? selected,
        ...(hiddenStates[n] ? [] : layers(skipIndex, n)), // [B, L, D]
        (t) => this.final_layer_norm.forward(t), // [B, L, D]
      );
      // 4. pooled output: the final-normed state at each sequence's end-of-text token
      const pooled = this.#pool(last, this.#eosPositions(ids, batch)); // [B, D]
      // 5. CLIP skip: the final LayerNorm of an earlier layer's output
      const lastHiddenState = skip > 1 ? this.final_layer_norm.forward(selected) : last; // [B, L, D]
      return options.outputHiddenStates
        ? { lastHiddenState, hiddenStates, pooled }
        : { lastHiddenState, pooled };
    });
  }

  /** The parameters by diffusers key (LoRA merging writes into them). */
  get params(): ReadonlyMap<string, Tensor> {
    return this.#store.params;
  }

  /** Frees the model's GPU parameters. */
  dispose(): void {
    this.#store.dispose();
  }

  get #rt(): Runtime {
    return this.#store.rt;
  }

  #checkIds(ids: ArrayLike<number>): number {
    const L = this.seqLen, V = this.config.vocab_size;
    if (ids.length === 0 || ids.length % L !== 0) {
      throw new Error(
        `denoise: CLIP takes ${L} token ids per sequence, got ${ids.length}: pad or truncate ` +
          `each prompt to ${L} tokens (the tokenizer does) and concatenate the sequences`,
      );
    }
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) {
        throw new Error(
          `denoise: token id ${id} at position ${i} is outside the vocabulary [0, ${V}): ` +
            `use the tokenizer that belongs to this text encoder`,
        );
      }
    }
    return ids.length / L;
  }

  /** `token_embedding[ids]` (with the replaced rows) `+ position_embedding[t]`, float32 `[B, L, D]`. */
  #embed(
    ids: ArrayLike<number>,
    batch: number,
    replaced: readonly { position: number; vectors: Float32Array }[],
  ): Float32Array {
    const L = this.seqLen, D = this.config.hidden_size;
    const tokens = new Float32Array(batch * L * D);
    for (let i = 0; i < batch * L; i++) {
      tokens.set(this.tokenEmbedding.subarray(ids[i] * D, (ids[i] + 1) * D), i * D);
    }
    for (const { position, vectors } of replaced) {
      if (
        !(Number.isInteger(position) && position >= 0) || vectors.length % D !== 0 ||
        position * D + vectors.length > tokens.length
      ) {
        throw new Error(
          `denoise: token embeddings of ${vectors.length} values at position ${position} do not ` +
            `fit ${batch} sequences of ${L} tokens × ${D}`,
        );
      }
      tokens.set(vectors, position * D);
    }
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < L; t++) {
        const row = (b * L + t) * D, pos = t * D;
        for (let c = 0; c < D; c++) tokens[row + c] += this.positionEmbedding[pos + c];
      }
    }
    return tokens;
  }

  /**
   * The pooling position of each sequence, as transformers 4.41 picks it: with the legacy
   * `eos_token_id` 2 the first position of the largest id (the real CLIP vocabulary's end-of-text
   * token has the largest id), otherwise the first position of `eos_token_id` (0 when absent).
   */
  #eosPositions(ids: ArrayLike<number>, batch: number): number[] {
    const L = this.seqLen, eos = this.config.eos_token_id;
    const out: number[] = [];
    for (let b = 0; b < batch; b++) {
      let best = 0;
      for (let t = 1; t < L; t++) {
        const id = ids[b * L + t];
        if (eos === 2 ? id > ids[b * L + best] : id === eos && ids[b * L + best] !== eos) best = t;
      }
      out.push(best);
    }
    return out;
  }

  /** Gathers row `positions[b]` of each sequence of `x` `[B, L, D]` into `[B, D]`. */
  #pool(x: Tensor, positions: number[]): Tensor {
    const L = this.seqLen, D = this.config.hidden_size, B = positions.length;
    const rows = x.reshape([B * L, D]);
    return x.rt.scope(() => {
      const picked = positions.map((p, b) => batchSlice(rows, { start: b * L + p, count: 1 })); // [1, D] each
      return B === 1 ? picked[0] : batchConcat(picked); // [B, D]
    });
  }
}
