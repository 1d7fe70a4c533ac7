/**
 * Standard diffusers configs for Stable Diffusion 1.5 and 2.1 (768-v): the values of the real
 * model repositories' `config.json` files (runwayml/stable-diffusion-v1-5,
 * stabilityai/stable-diffusion-2-1), with every key diffusers 0.30.3 fills in by default written
 * out, as in a freshly saved folder. Single-file checkpoints carry no config; `detect.ts` picks
 * one of these.
 *
 * @module
 */

/** A diffusers `UNet2DConditionModel` config (the keys SD uses; others pass through). */
export interface UNet2DConditionConfig {
  /** Further config keys, passed through unchanged. */
  [key: string]: unknown;
  /** Latent channels in. */
  in_channels: number;
  /** Latent channels out. */
  out_channels: number;
  /** Channels of each resolution level. */
  block_out_channels: number[];
  /** Resnets per down block (up blocks have one more). */
  layers_per_block: number;
  /** Down block class names. */
  down_block_types: string[];
  /** Up block class names. */
  up_block_types: string[];
  /** Mid block class name. */
  mid_block_type: string;
  /** Legacy name: the NUMBER of attention heads, one value or one per block. */
  attention_head_dim: number | number[];
  /** Width of the text embeddings the cross-attention reads. */
  cross_attention_dim: number;
  /** Whether `proj_in`/`proj_out` are linear (SD 2.x) rather than 1×1 convs. */
  use_linear_projection: boolean;
  /** Whether attention runs in float32 (SD 2.1). */
  upcast_attention: boolean;
  /** GroupNorm groups. */
  norm_num_groups: number;
  /** GroupNorm epsilon. */
  norm_eps: number;
  /** Latent size the model was trained at. */
  sample_size: number;
}

/** A diffusers `AutoencoderKL` config. */
export interface AutoencoderKLConfig {
  /** Further config keys, passed through unchanged. */
  [key: string]: unknown;
  /** Image channels in. */
  in_channels: number;
  /** Image channels out. */
  out_channels: number;
  /** Latent channels. */
  latent_channels: number;
  /** Channels of each resolution level. */
  block_out_channels: number[];
  /** Resnets per encoder block (decoder blocks have one more). */
  layers_per_block: number;
  /** GroupNorm groups. */
  norm_num_groups: number;
  /** Latents are multiplied by this before the U-Net. */
  scaling_factor: number;
  /** Image size the model was trained at. */
  sample_size: number;
}

/** A transformers `CLIPTextConfig`. */
export interface CLIPTextConfig {
  /** Further config keys, passed through unchanged. */
  [key: string]: unknown;
  /** Embedding width. */
  hidden_size: number;
  /** MLP width. */
  intermediate_size: number;
  /** Attention heads. */
  num_attention_heads: number;
  /** Transformer layers. */
  num_hidden_layers: number;
  /** Maximum sequence length. */
  max_position_embeddings: number;
  /** Vocabulary size. */
  vocab_size: number;
  /** `quick_gelu` (SD 1.x) or `gelu` (SD 2.x). */
  hidden_act: string;
  /** LayerNorm epsilon. */
  layer_norm_eps: number;
  /** End-of-text id; 2 selects transformers' legacy argmax pooling. */
  eos_token_id: number;
}

/** A diffusers scheduler config. */
export interface SchedulerConfig {
  /** Further config keys, passed through unchanged. */
  [key: string]: unknown;
  /** Scheduler class name. */
  _class_name: string;
  /** `epsilon`, `v_prediction` or `sample`. */
  prediction_type: string;
  /** Training steps. */
  num_train_timesteps: number;
  /** First beta. */
  beta_start: number;
  /** Last beta. */
  beta_end: number;
  /** Beta schedule name. */
  beta_schedule: string;
}

/** Tokenizer settings that differ between SD families (the vocabulary is the same CLIP BPE). */
export interface TokenizerSettings {
  /** Maximum tokens including bos/eos. */
  model_max_length: number;
  /** Padding token: `<|endoftext|>` (SD 1.x) or `!` (SD 2.x). */
  pad_token: string;
  /** Start token. */
  bos_token: string;
  /** End token. */
  eos_token: string;
  /** Unknown-token replacement. */
  unk_token: string;
}

/** Every config a Stable Diffusion pipeline needs. */
export interface PipelineConfigs {
  /** U-Net config. */
  unet: UNet2DConditionConfig;
  /** VAE config. */
  vae: AutoencoderKLConfig;
  /** Text encoder config. */
  text_encoder: CLIPTextConfig;
  /** Scheduler config. */
  scheduler: SchedulerConfig;
  /** Tokenizer settings. */
  tokenizer: TokenizerSettings;
}

const DOWN = [
  "CrossAttnDownBlock2D",
  "CrossAttnDownBlock2D",
  "CrossAttnDownBlock2D",
  "DownBlock2D",
];
const UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];

function unet(overrides: Partial<UNet2DConditionConfig>): UNet2DConditionConfig {
  return {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    addition_embed_type: null,
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: null,
    attention_head_dim: 8,
    attention_type: "default",
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    class_embed_type: null,
    class_embeddings_concat: false,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: 768,
    cross_attention_norm: null,
    down_block_types: [...DOWN],
    downsample_padding: 1,
    dropout: 0.0,
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_only_cross_attention: null,
    mid_block_scale_factor: 1,
    mid_block_type: "UNetMidBlock2DCrossAttn",
    norm_eps: 1e-5,
    norm_num_groups: 32,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    projection_class_embeddings_input_dim: null,
    resnet_out_scale_factor: 1.0,
    resnet_skip_time_act: false,
    resnet_time_scale_shift: "default",
    reverse_transformer_layers_per_block: null,
    sample_size: 64,
    time_cond_proj_dim: null,
    time_embedding_act_fn: null,
    time_embedding_dim: null,
    time_embedding_type: "positional",
    timestep_post_act: null,
    transformer_layers_per_block: 1,
    up_block_types: [...UP],
    upcast_attention: false,
    use_linear_projection: false,
    ...overrides,
  };
}

function vae(sampleSize: number): AutoencoderKLConfig {
  return {
    _class_name: "AutoencoderKL",
    act_fn: "silu",
    block_out_channels: [128, 256, 512, 512],
    down_block_types: Array(4).fill("DownEncoderBlock2D"),
    force_upcast: true,
    in_channels: 3,
    latent_channels: 4,
    latents_mean: null,
    latents_std: null,
    layers_per_block: 2,
    mid_block_add_attention: true,
    norm_num_groups: 32,
    out_channels: 3,
    sample_size: sampleSize,
    scaling_factor: 0.18215,
    shift_factor: null,
    up_block_types: Array(4).fill("UpDecoderBlock2D"),
    use_post_quant_conv: true,
    use_quant_conv: true,
  };
}

function clip(overrides: Partial<CLIPTextConfig>): CLIPTextConfig {
  return {
    architectures: ["CLIPTextModel"],
    attention_dropout: 0.0,
    bos_token_id: 0,
    eos_token_id: 2,
    hidden_act: "quick_gelu",
    hidden_size: 768,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 3072,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: "clip_text_model",
    num_attention_heads: 12,
    num_hidden_layers: 12,
    pad_token_id: 1,
    projection_dim: 768,
    vocab_size: 49408,
    ...overrides,
  };
}

const SCHEDULE = {
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: "leading",
  trained_betas: null,
};

function tokenizer(pad: string): TokenizerSettings {
  return {
    model_max_length: 77,
    pad_token: pad,
    bos_token: "<|startoftext|>",
    eos_token: "<|endoftext|>",
    unk_token: "<|endoftext|>",
  };
}

/**
 * Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5): 512 px, CLIP ViT-L/14 text encoder,
 * epsilon prediction, PNDM scheduler.
 *
 * @example
 * ```ts
 * import { SD15 } from "@denoise/sd/weights";
 * console.log(SD15.unet.cross_attention_dim); // 768
 * ```
 */
export const SD15: PipelineConfigs = {
  unet: unet({}),
  vae: vae(512),
  text_encoder: clip({}),
  scheduler: { _class_name: "PNDMScheduler", prediction_type: "epsilon", ...SCHEDULE },
  tokenizer: tokenizer("<|endoftext|>"),
};

/**
 * Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1): 768 px, OpenCLIP ViT-H/14 text encoder
 * (23 of its 24 layers), v-prediction, DDIM scheduler, attention upcast to float32.
 *
 * @example
 * ```ts
 * import { SD21 } from "@denoise/sd/weights";
 * console.log(SD21.scheduler.prediction_type); // "v_prediction"
 * ```
 */
export const SD21: PipelineConfigs = {
  unet: unet({
    attention_head_dim: [5, 10, 20, 20],
    cross_attention_dim: 1024,
    sample_size: 96,
    upcast_attention: true,
    use_linear_projection: true,
  }),
  vae: vae(768),
  text_encoder: clip({
    hidden_act: "gelu",
    hidden_size: 1024,
    intermediate_size: 4096,
    num_attention_heads: 16,
    num_hidden_layers: 23,
    projection_dim: 512,
  }),
  scheduler: {
    _class_name: "DDIMScheduler",
    prediction_type: "v_prediction",
    ...SCHEDULE,
    clip_sample_range: 1.0,
    dynamic_thresholding_ratio: 0.995,
    rescale_betas_zero_snr: false,
    sample_max_value: 1.0,
    thresholding: false,
  },
  tokenizer: tokenizer("!"),
};

/**
 * A deep copy of a config set, so callers can adjust it without touching the shared constants.
 *
 * @example
 * ```ts
 * import { cloneConfigs, SD21 } from "@denoise/sd/weights";
 * const base = cloneConfigs(SD21);
 * base.scheduler.prediction_type = "epsilon"; // SD 2.1-base
 * ```
 */
export function cloneConfigs(configs: PipelineConfigs): PipelineConfigs {
  return structuredClone(configs);
}
