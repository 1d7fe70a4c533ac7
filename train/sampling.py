"""Stable Diffusion's scaled_linear noise schedule and a DDIM sampler (η = 0) with classifier-free
guidance, computed as diffusers' DDIMScheduler does (float32 betas, "leading" spacing with
steps_offset 1, set_alpha_to_one False), so the engine's DDIM replays it step by step."""
import torch

from accel import device_of
from configs import SCHEDULER


def alphas_cumprod():
    c = SCHEDULER
    betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, c["num_train_timesteps"],
                           dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)  # [1000] float32


def ddim_timesteps(steps):
    ratio = SCHEDULER["num_train_timesteps"] // steps
    return [int(t) for t in (torch.arange(0, steps) * ratio).round().flip(0) + SCHEDULER["steps_offset"]]


def ddim_step(eps, t, x, steps, ac):
    """x_t -> x_{t-ratio} (η = 0); alpha at a negative timestep is alphas_cumprod[0]."""
    prev = t - SCHEDULER["num_train_timesteps"] // steps
    a_t = ac[t]
    a_prev = ac[prev] if prev >= 0 else ac[0]
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def initial_noise(seeds, shape):
    """torch.randn per seed (a CPU Generator each), [B, C, h, w]: what the engine's torchRandn(seed) gives."""
    return torch.cat([torch.randn([1, *shape], generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def generate(unet, text_encoder, vae, tokenizer, prompts, seeds, steps=20, guidance=7.5, trace=None,
             negative=""):
    """Images [B, 3, H, W] in [0, 1] for prompts and seeds. `trace` (a dict) receives the
    embeddings, initial noise, every step's latents and the decoded image (all on the CPU).
    Runs on the models' device; the initial noise is drawn on the CPU, so every device starts
    from the same latents."""
    dev = device_of(unet)
    ac = alphas_cumprod()
    lat = unet.config["sample_size"]
    x = initial_noise(seeds, (unet.config["in_channels"], lat, lat)).to(dev)  # [B, 4, h, w]
    cond = text_encoder(torch.tensor([tokenizer(p) for p in prompts], device=dev))  # [B, L, D]
    uncond = text_encoder(torch.tensor([tokenizer(negative)] * len(prompts), device=dev))
    if trace is not None:
        trace.update(cond=cond.cpu().clone(), uncond=uncond.cpu().clone(), noise=x.cpu().clone(), steps=[],
                     timesteps=[])
    for t in ddim_timesteps(steps):
        tt = torch.full((2 * len(prompts),), t, dtype=torch.long, device=dev)
        eps_u, eps_c = unet(torch.cat([x, x]), tt, torch.cat([uncond, cond])).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u) if guidance > 1 else eps_c
        x = ddim_step(eps, t, x, steps, ac)
        if trace is not None:
            trace["steps"].append(x.cpu().clone())
            trace["timesteps"].append(t)
    img = vae.decode(x / vae.config["scaling_factor"])  # [B, 3, H, W]
    out = (img / 2 + 0.5).clamp(0, 1).cpu()
    if trace is not None:
        trace["decoded"] = img.cpu().clone()
        trace["image"] = out.clone()
    return out
