#!/usr/bin/python3
"""Checks train/models.py against diffusers: loads the tiny random-weight SD models of
../shared/fixtures strictly (every key and shape) and compares the text encoder, U-Net and VAE
outputs with the reference dumps (diffusers 0.30.3, float32). Skips visibly when the fixtures are
absent (fails under CI=true).

    /usr/bin/python3 train/test_models.py
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
import st  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures")


def load_strict(module, path):
    sd = st.load(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unused = sorted(set(sd) - set(own))
    wrong = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    assert not (missing or unused or wrong), f"{path}: missing {missing[:5]} unused {unused[:5]} shape {wrong[:5]}"
    module.load_state_dict(sd)
    return module.eval()


def close(name, got, want, tol=1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
    print(f"  {name}: max err {err:.2e} of scale")
    assert err < tol, f"{name}: {err} of scale exceeds {tol}"


def check(model_name, dump):
    root = os.path.join(FIX, "models", model_name)
    d = os.path.join(FIX, "dumps", dump)
    cfg = lambda c: json.load(open(os.path.join(root, c, "config.json")))  # noqa: E731
    print(f"{model_name} / {dump}")
    te = load_strict(models.CLIPTextModel(cfg("text_encoder")), os.path.join(root, "text_encoder", "model.safetensors"))
    unet = load_strict(models.UNet2DConditionModel(cfg("unet")),
                       os.path.join(root, "unet", "diffusion_pytorch_model.safetensors"))
    vae = load_strict(models.AutoencoderKL(cfg("vae")), os.path.join(root, "vae", "diffusion_pytorch_model.safetensors"))
    npy = lambda n: np.load(os.path.join(d, n + ".npy"))  # noqa: E731
    with torch.no_grad():
        emb = te(torch.from_numpy(npy("tokens_cond").astype(np.int64)))
        close("text_embeds_cond", emb, npy("text_embeds_cond"))
        sample, ts = torch.from_numpy(npy("unet_probe_sample")), npy("unet_probe_timesteps")
        for i, t in enumerate(ts):
            out = unet(sample, torch.tensor([int(t)]), torch.from_numpy(npy("text_embeds_cond")))
            close(f"unet t={t}", out, npy("unet_probe_out")[i])
        img = vae.decode(torch.from_numpy(npy("vae_decode_in")))
        if os.path.exists(os.path.join(d, "image_decoded.npy")):
            close("vae decode", img, npy("image_decoded"))
        else:
            close("vae decode (image_float)", (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), npy("image_float"))
        if not os.path.exists(os.path.join(d, "vae_encode_in.npy")):
            return
        mean, logvar = vae.encode(torch.from_numpy(npy("vae_encode_in")))
        close("vae encode mean", mean, npy("vae_encode_mean"))
        close("vae encode logvar", logvar, npy("vae_encode_logvar"))


def main():
    if not os.path.isdir(FIX):
        if os.environ.get("CI") == "true":
            sys.exit(f"{FIX} is missing (CI=true)")
        print(f"SKIPPED: {FIX} is absent")
        return
    check("tiny-sd15", "tiny-sd15__pndm")
    check("tiny-sd15-vae4", "tiny-sd15-vae4__pndm")
    check("tiny-sd15", "tiny-sd15__euler_136x72")
    print("ok")


if __name__ == "__main__":
    main()
