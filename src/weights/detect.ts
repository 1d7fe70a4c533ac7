/**
 * Recognises the family of a single-file (CompVis/LDM layout) Stable Diffusion checkpoint from its
 * keys and shapes, the way diffusers' `infer_diffusers_model_type` does, and returns the standard
 * diffusers configs for it.
 *
 * @module
 */
import { cloneConfigs, type PipelineConfigs, SD15, SD21 } from "./configs.ts";

/** What a checkpoint predicts: the noise, or v = α·ε − σ·x₀. */
export type PredictionType = "epsilon" | "v_prediction";

/** The result of {@link detectCheckpoint}. */
export interface Detection {
  /** `sd1` (CLIP ViT-L, 768-wide cross-attention), `sd2` (OpenCLIP, 1024) or `unknown`. */
  family: "sd1" | "sd2" | "unknown";
  /** Which text encoder layout the file holds. */
  textEncoder: "clip" | "openclip" | "none";
  /** The U-Net's cross-attention width, from `attn2.to_k` (undefined if absent). */
  crossAttentionDim?: number;
  /** The U-Net's input channels (4; 9 for inpainting models). */
  inChannels?: number;
  /** The prediction type: the override when given, else the heuristic's answer. */
  predictionType: PredictionType;
  /** How `predictionType` was decided. */
  predictionTypeReason: string;
  /** Standard configs for a recognised family (undefined for `unknown`: pass configs yourself). */
  configs?: PipelineConfigs;
}

/** Options for {@link detectCheckpoint}. */
export interface DetectOptions {
  /** Forces the prediction type (SD 2.x 512-base checkpoints are `epsilon`). */
  predictionType?: PredictionType;
}

const TO_K = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
const CONV_IN = "model.diffusion_model.input_blocks.0.0.weight";
const CLIP_KEYS = [
  "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
  "cond_stage_model.transformer.embeddings.position_embedding.weight",
];
const OPENCLIP_KEY = "cond_stage_model.model.token_embedding.weight";

/**
 * Detects a single-file checkpoint's family and prediction type from its keys and shapes.
 * SD 2.x (non-inpainting) defaults to `v_prediction` as diffusers does for files without a
 * `global_step` (SD 2.x 512-base needs `{ predictionType: "epsilon" }`); a `v_pred` marker key
 * means v-prediction.
 *
 * @example
 * ```ts no-run
 * import { openSafetensors } from "@denoise/sd/weights";
 * import { detectCheckpoint } from "@denoise/sd/weights";
 * const f = await openSafetensors("v2-1_768-ema-pruned.safetensors");
 * const d = detectCheckpoint(f.tensors);
 * console.log(d.family, d.predictionType); // "sd2" "v_prediction"
 * ```
 */
export function detectCheckpoint(
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
  options: DetectOptions = {},
): Detection {
  const toK = tensors.get(TO_K)?.shape;
  const crossAttentionDim = toK ? toK[toK.length - 1] : undefined;
  const convIn = tensors.get(CONV_IN)?.shape;
  const inChannels = convIn ? convIn[1] : undefined;
  const textEncoder = CLIP_KEYS.some((k) => tensors.has(k))
    ? "clip"
    : tensors.has(OPENCLIP_KEY)
    ? "openclip"
    : "none";
  let family: Detection["family"] = "unknown";
  if (crossAttentionDim === 1024 && textEncoder === "openclip") family = "sd2";
  else if (crossAttentionDim === 768 && textEncoder === "clip") family = "sd1";
  const inpainting = inChannels !== undefined && inChannels !== 4;

  let predictionType: PredictionType = "epsilon";
  let predictionTypeReason = "SD 1.x and unrecognised checkpoints predict noise (epsilon)";
  if (options.predictionType !== undefined) {
    predictionType = options.predictionType;
    predictionTypeReason = "given by the caller";
  } else if (tensors.has("v_pred")) {
    predictionType = "v_prediction";
    predictionTypeReason = "the checkpoint has a `v_pred` marker key";
  } else if (family === "sd2" && inpainting) {
    predictionTypeReason = "SD 2.x inpainting checkpoints predict noise (epsilon)";
  } else if (family === "sd2") {
    predictionType = "v_prediction";
    predictionTypeReason = "SD 2.x default (768-v), as diffusers assumes without a global_step; " +
      'pass predictionType: "epsilon" for SD 2.x 512-base models';
  }

  let configs: PipelineConfigs | undefined;
  if (family !== "unknown") {
    configs = cloneConfigs(family === "sd1" ? SD15 : SD21);
    configs.scheduler.prediction_type = predictionType;
    if (inChannels !== undefined) configs.unet.in_channels = inChannels;
    if (inpainting || predictionType === "epsilon") {
      // SD 2.x inpainting / 512-base are trained at 512 px.
      configs.unet.sample_size = 64;
      configs.vae.sample_size = 512;
    }
  }
  return {
    family,
    textEncoder,
    ...(crossAttentionDim === undefined ? {} : { crossAttentionDim }),
    ...(inChannels === undefined ? {} : { inChannels }),
    predictionType,
    predictionTypeReason,
    ...(configs === undefined ? {} : { configs }),
  };
}
