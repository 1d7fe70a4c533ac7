"""The diffusers / transformers config dicts of the model (written verbatim as config.json on
export). Diffusers' conventions: `attention_head_dim` is the NUMBER of heads per block for these
U-Nets; the VAE's scale factor is 2^(len(block_out_channels) - 1)."""

SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.30.3",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def unet_config(channels, latent, context_dim, layers=1, cross=None):
    levels = len(channels)
    cross = cross if cross is not None else [True] * levels
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.30.3",
        "act_fn": "silu",
        "attention_head_dim": [max(1, c // 32) for c in channels],
        "block_out_channels": list(channels),
        "center_input_sample": False,
        "cross_attention_dim": context_dim,
        "down_block_types": ["CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": layers,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": latent,
        "up_block_types": ["CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross)],
        "use_linear_projection": False,
    }


def vae_config(channels, px, scaling_factor=1.0, layers=1):
    levels = len(channels)
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.30.3",
        "act_fn": "silu",
        "block_out_channels": list(channels),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "force_upcast": True,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": layers,
        "mid_block_add_attention": True,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": px,
        "scaling_factor": scaling_factor,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
    }


def text_encoder_config(vocab, width, positions=77, layers=2, heads=4, bos=None, eos=None):
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": bos if bos is not None else vocab - 2,
        "eos_token_id": eos if eos is not None else vocab - 1,
        "hidden_act": "quick_gelu",
        "hidden_size": width,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 4 * width,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": positions,
        "model_type": "clip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": eos if eos is not None else vocab - 1,
        "projection_dim": width,
        "torch_dtype": "float16",
        "vocab_size": vocab,
    }
