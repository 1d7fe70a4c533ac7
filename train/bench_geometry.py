#!/usr/bin/python3
"""Training throughput (samples/s: forward + backward + AdamW) of candidate geometries on this CPU,
to choose image size, VAE factor and U-Net width before a long run (results in train/README.md).

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 train/bench_geometry.py [--seconds 20]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
from configs import text_encoder_config, unet_config, vae_config  # noqa: E402


def rate(step, batch, seconds):
    step()  # warm-up (allocations, oneDNN primitive creation)
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        step()
        n += batch
    return n / (time.time() - t0)


def unet_step(unet_ch, latent, batch, tokens, width):
    unet = models.UNet2DConditionModel(unet_config(unet_ch, latent, width))
    te = models.CLIPTextModel(text_encoder_config(1024, width, tokens))
    opt = torch.optim.AdamW(list(unet.parameters()) + list(te.parameters()), lr=1e-4)
    x = torch.randn(batch, 4, latent, latent)
    ids = torch.randint(0, 1024, (batch, tokens))

    def step():
        t = torch.randint(0, 1000, (batch,))
        loss = (unet(x, t, te(ids)) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in unet.parameters())


def vae_step(ch, px, batch):
    vae = models.AutoencoderKL(vae_config(ch, px))
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, px, px)

    def step():
        mean, logvar = vae.encode(x)
        loss = (vae.decode(mean) - x).abs().mean() + 1e-6 * logvar.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in vae.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--only", default="", help="unet or vae")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    if args.only != "vae":
        for ch, lat, tokens in [((32, 64, 128), 8, 77), ((32, 64, 128), 8, 16), ((64, 128, 192), 8, 77),
                                ((64, 128, 256), 8, 77), ((32, 64, 128), 12, 77), ((32, 64, 128), 16, 77)]:
            step, n = unet_step(ch, lat, 64, tokens, 128)
            print(f"unet {ch} latent {lat}x{lat} tokens {tokens}: {n / 1e6:.2f} M params, "
                  f"{rate(step, 64, args.seconds):.1f} samples/s", flush=True)
    if args.only != "unet":
        for ch, px in [((32, 64, 128), 32), ((32, 64, 128), 48), ((32, 64, 128), 64),
                       ((32, 64, 128, 128), 64), ((64, 128, 128), 32)]:
            step, n = vae_step(ch, px, 32)
            print(f"vae {ch} {px}px (factor {2 ** (len(ch) - 1)}): {n / 1e6:.2f} M params, "
                  f"{rate(step, 32, args.seconds):.1f} samples/s", flush=True)


if __name__ == "__main__":
    main()
