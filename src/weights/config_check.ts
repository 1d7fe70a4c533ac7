/**
 * Checks the config fields the models read, before anything is built from them: a missing or
 * mistyped field is reported with the file and the field named, and with what belongs there,
 * instead of surfacing later as `Cannot read properties of undefined`.
 *
 * @example
 * ```ts no-run
 * import { checkComponentConfig } from "@denoise/sd/weights";
 * checkComponentConfig("vae", { block_out_channels: [128] }, "vae/config.json");
 * // throws: vae/config.json: "in_channels" is missing (image channels, 3) — …
 * ```
 *
 * @module
 */

/** A field rule: what the value must be, described for the message. */
interface Rule {
  /** Whether the field may be absent (the model then uses diffusers' default). */
  optional?: boolean;
  /** What belongs there, for the message (`"a list of channel counts, like [320, 640]"`). */
  what: string;
  /** The check. */
  ok(v: unknown): boolean;
}

const posInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 1;
const posNum = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v > 0;
const isStr = (v: unknown) => typeof v === "string" && v.length > 0;
const listOf = (ok: (v: unknown) => boolean) => (v: unknown) =>
  Array.isArray(v) && v.length > 0 && v.every(ok);

const CHANNELS = "a list of channel counts, like [320, 640, 1280, 1280]";

/** The fields each component's model reads, by component. */
const RULES: Record<"unet" | "vae" | "text_encoder", Record<string, Rule>> = {
  unet: {
    in_channels: { what: "latent channels in, 4 for SD", ok: posInt },
    out_channels: { what: "latent channels out, 4 for SD", ok: posInt },
    block_out_channels: { what: CHANNELS, ok: listOf(posInt) },
    layers_per_block: { what: "resnets per block, 2 for SD", ok: posInt },
    down_block_types: {
      what: 'block class names, like ["CrossAttnDownBlock2D", …]',
      ok: listOf(isStr),
    },
    up_block_types: {
      what: 'block class names, like […, "CrossAttnUpBlock2D"]',
      ok: listOf(isStr),
    },
    cross_attention_dim: { what: "the text embedding width, 768 for SD 1.x", ok: posInt },
    norm_num_groups: { what: "GroupNorm groups, 32 for SD", ok: posInt },
    norm_eps: { what: "GroupNorm epsilon, 1e-5 for SD", ok: posNum },
    attention_head_dim: {
      optional: true,
      what: "heads (legacy name): a whole number or one per block",
      ok: (v) => v === null || posInt(v) || listOf(posInt)(v),
    },
    sample_size: { optional: true, what: "latent size trained at, 64 for SD 1.5", ok: posInt },
  },
  vae: {
    in_channels: { what: "image channels, 3", ok: posInt },
    out_channels: { what: "image channels, 3", ok: posInt },
    latent_channels: { what: "latent channels, 4 for SD", ok: posInt },
    block_out_channels: {
      what: "a list of channel counts, like [128, 256, 512, 512]",
      ok: listOf(posInt),
    },
    layers_per_block: { what: "resnets per block, 2 for SD", ok: posInt },
    norm_num_groups: { what: "GroupNorm groups, 32 for SD", ok: posInt },
    scaling_factor: { optional: true, what: "the latent scale, 0.18215 for SD", ok: posNum },
  },
  text_encoder: {
    hidden_size: { what: "the embedding width, 768 for SD 1.x", ok: posInt },
    intermediate_size: { what: "the MLP width, 3072 for SD 1.x", ok: posInt },
    num_attention_heads: { what: "attention heads, 12 for SD 1.x", ok: posInt },
    num_hidden_layers: { what: "transformer layers, 12 for SD 1.x", ok: posInt },
    max_position_embeddings: { what: "the token limit, 77", ok: posInt },
    vocab_size: { what: "the vocabulary size, 49408", ok: posInt },
    layer_norm_eps: { what: "LayerNorm epsilon, 1e-5", ok: posNum },
    hidden_act: { what: '"quick_gelu" (SD 1.x) or "gelu" (SD 2.x)', ok: isStr },
  },
};

/**
 * Checks one component's config (`unet`, `vae` or `text_encoder`): every field its model reads
 * is present (unless diffusers has a default the model uses) and of the right kind, and the block
 * lists agree in length. Throws an error naming `file` and the field.
 *
 * @example
 * ```ts
 * import { checkComponentConfig } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * checkComponentConfig("unet", SD15.unet, "unet/config.json"); // passes
 * ```
 */
export function checkComponentConfig(
  component: "unet" | "vae" | "text_encoder",
  config: Record<string, unknown>,
  file: string,
): void {
  const fix = "— restore it, or re-download the model";
  for (const [field, rule] of Object.entries(RULES[component])) {
    const v = config[field];
    if (v === undefined) {
      if (rule.optional) continue;
      throw new Error(`${file}: "${field}" is missing (${rule.what}) ${fix}`);
    }
    if (!rule.ok(v)) {
      throw new Error(`${file}: "${field}" is ${JSON.stringify(v)}, not ${rule.what} ${fix}`);
    }
  }
  const lists = component === "unet"
    ? ["block_out_channels", "down_block_types", "up_block_types"]
    : component === "vae"
    ? ["block_out_channels", "down_block_types", "up_block_types"].filter((k) => k in config)
    : [];
  const lengths = lists.map((k) => (config[k] as unknown[]).length);
  if (new Set(lengths).size > 1) {
    throw new Error(
      `${file}: ${lists.map((k, i) => `"${k}" has ${lengths[i]}`).join(", ")} entries; ` +
        `they must agree ${fix}`,
    );
  }
  const heads = config.attention_head_dim;
  if (component === "unet" && Array.isArray(heads) && heads.length !== lengths[0]) {
    throw new Error(
      `${file}: "attention_head_dim" lists ${heads.length} values for ${lengths[0]} blocks ${fix}`,
    );
  }
}

/**
 * Checks the U-Net, VAE and text encoder configs of a model, naming each one's file.
 *
 * @example
 * ```ts
 * import { checkModelConfigs } from "@denoise/sd/weights";
 * import { SD15 } from "@denoise/sd/weights";
 * checkModelConfigs(SD15, {
 *   unet: "unet/config.json", vae: "vae/config.json", text_encoder: "text_encoder/config.json",
 * });
 * ```
 */
export function checkModelConfigs(
  configs: { unet: object; vae: object; text_encoder: object },
  files: Record<"unet" | "vae" | "text_encoder", string>,
): void {
  for (const c of ["unet", "vae", "text_encoder"] as const) {
    checkComponentConfig(c, configs[c] as Record<string, unknown>, files[c]);
  }
}
