/**
 * The networks of Stable Diffusion under their diffusers names: the CLIP text encoder, the U-Net,
 * the VAE, TAESD, and the layers and strict parameter store they are built from.
 *
 * @example
 * ```ts
 * import { UNet2DConditionModel } from "@denoise/sd/models";
 * console.log(typeof UNet2DConditionModel.load);
 * ```
 *
 * @module
 */
export * from "./clip.ts";
export * from "./embeddings.ts";
export * from "./layers.ts";
export * from "./params.ts";
export * from "./resnet.ts";
export * from "./taesd.ts";
export * from "./transformer_2d.ts";
export * from "./unet.ts";
export * from "./unet_blocks.ts";
export * from "./vae.ts";
export * from "./vae_blocks.ts";
