#!/usr/bin/python3
"""Exports a training run to a diffusers folder (f16 safetensors, config.json files, tokenizer,
scheduler) and dumps the engine-equivalence fixture computed on the exported weights.

    export.py --run /var/tmp/denoise-train/run1 --out models/denoise-emoji [--raw]
    export.py --fixture tests/fixtures/denoise-emoji --out models/denoise-emoji

`--raw` exports the raw weights instead of the EMA ones. The fixture (prompt "tropical fish",
seed 42, the model's DDIM scheduler, 20 steps, guidance 7.5) is computed in float32 on the f16
weights as stored, so an f32 engine that loads the folder must reproduce it to float32 rounding.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
import st  # noqa: E402
from configs import SCHEDULER  # noqa: E402
from sampling import generate  # noqa: E402
from tokenizer import Tokenizer, read_clip_merges  # noqa: E402
from accel import load_checkpoint  # noqa: E402
from train import normalised_vae  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.30.3",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", SCHEDULER["_class_name"]],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
CARD = """# denoise-emoji

A tiny Stable Diffusion (diffusers layout: UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
CLIP BPE tokenizer, DDIM scheduler) trained from scratch on {where} by denoise's `train/` recipe on
{px}x{px} emoji pictures. ε-prediction on SD's scaled_linear schedule; latents {lat}x{lat}x4.

Training: {summary}

Weights: MIT, as the rest of denoise. Training images (see NOTICE and train/README.md): Twemoji by
Twitter, Inc. and other contributors (CC-BY-4.0), Noto Emoji by Google (Apache-2.0), Fluent UI Emoji
by Microsoft (MIT); captions from emojibase-data (MIT). The tokenizer's merges are the first
{merges} of OpenAI CLIP's (MIT).
"""


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def export(args):
    vae_ck = load_checkpoint(os.path.join(args.run, "vae.pt"))
    dec = os.path.join(args.run, "vae_dec.pt")
    if os.path.exists(dec) and not args.no_decoder_ft:  # the decoder fine-tuned on the frozen encoder
        d = load_checkpoint(dec)
        vae_ck = {**vae_ck, "model": d["model"], "decoder_state": d["state"]}
    vae = normalised_vae(vae_ck)
    ck = load_checkpoint(os.path.join(args.run, "unet.pt"))
    pre = "" if args.raw else "ema_"
    out = args.out
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    clip = args.clip_merges
    Tokenizer(read_clip_merges(clip, ck["merges"]), ck["max_length"]).save(os.path.join(tmp, "tokenizer"))
    write_json(os.path.join(tmp, "model_index.json"), MODEL_INDEX)
    write_json(os.path.join(tmp, "scheduler", "scheduler_config.json"), SCHEDULER)
    write_json(os.path.join(tmp, "unet", "config.json"), ck["unet_config"])
    st.save(os.path.join(tmp, "unet", "diffusion_pytorch_model.safetensors"), ck[pre + "unet"])
    write_json(os.path.join(tmp, "text_encoder", "config.json"), ck["text_config"])
    st.save(os.path.join(tmp, "text_encoder", "model.safetensors"), ck[pre + "text_encoder"])
    write_json(os.path.join(tmp, "vae", "config.json"), vae.config)
    st.save(os.path.join(tmp, "vae", "diffusion_pytorch_model.safetensors"), vae.state_dict())
    s, v = ck["state"], vae_ck["state"]
    px = vae.config["sample_size"]
    dv = vae_ck.get("decoder_state")
    dec_note = f", decoder fine-tuned to step {dv['step']} ({dv['cpu'] / 3600:.2f} CPU-hours in all)" if dv else ""
    vae_note = (f"VAE of {vae_ck['from']} ({v['step']} steps, {v['cpu'] / 3600:.2f} CPU-hours{dec_note})"
                if vae_ck.get("from") else
                f"VAE {v['step']} steps ({v['samples']} images, {v['cpu'] / 3600:.2f} CPU-hours{dec_note})")
    unet_cost = (f"{s['wall'] / 60:.1f} minutes on {s['device']}" if s.get("device")
                 else f"{s['cpu'] / 3600:.2f} CPU-hours")
    summary = (f"{vae_note}; U-Net + text encoder {s['step']} steps ({s['samples']} samples, {unet_cost}), "
               f"{'raw' if args.raw else 'EMA'} weights.")
    write_json(os.path.join(tmp, "training.json"), {
        "unet_step": s["step"], "unet_samples": s["samples"], "unet_cpu_h": round(s["cpu"] / 3600, 2),
        "vae_step": v["step"], "vae_cpu_h": round(v["cpu"] / 3600, 2),
        "vae_decoder_step": dv["step"] if dv else v["step"],
        "vae_decoder_cpu_h": round((dv["cpu"] - v["cpu"]) / 3600, 2) if dv else 0.0,
        "weights": "raw" if args.raw else "EMA",
        **({"unet_lr_decay": s["decay"]} if s.get("decay") else {}),
        **({"unet_device": s["device"], "unet_wall_h": round(s["wall"] / 3600, 3)} if s.get("device") else {}),
        **({"vae_from": vae_ck["from"]} if vae_ck.get("from") else {}),
    })
    with open(os.path.join(tmp, "README.md"), "w") as f:
        where = "CPU (the VAE) and a GPU (the U-Net and text encoder)" if s.get("device") else "CPU"
        f.write(CARD.format(px=px, lat=px // vae.scale_factor, summary=summary, merges=ck["merges"], where=where))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"exported {out}: {size / 1e6:.1f} MB; {summary}")


def load_exported(folder):
    """(unet, text_encoder, vae, tokenizer) in float32 from an exported folder, strictly."""
    cfg = lambda c: json.load(open(os.path.join(folder, c, "config.json")))  # noqa: E731
    out = []
    for cls, comp, file in [(models.UNet2DConditionModel, "unet", "diffusion_pytorch_model"),
                            (models.CLIPTextModel, "text_encoder", "model"),
                            (models.AutoencoderKL, "vae", "diffusion_pytorch_model")]:
        m = cls(cfg(comp))
        sd = st.load(os.path.join(folder, comp, file + ".safetensors"))
        m.load_state_dict(sd, strict=True)
        out.append(m.eval().requires_grad_(False))
    return (*out, Tokenizer.load(os.path.join(folder, "tokenizer")))


def dump_fixture(folder, out_dir, prompt="tropical fish", seed=42, steps=20, guidance=7.5):
    unet, te, vae, tok = load_exported(folder)
    trace = {}
    generate(unet, te, vae, tok, [prompt], [seed], steps=steps, guidance=guidance, trace=trace)
    os.makedirs(out_dir, exist_ok=True)
    f32 = lambda t: np.ascontiguousarray(t.numpy().astype(np.float32))  # noqa: E731
    np.save(os.path.join(out_dir, "tokens_cond.npy"), np.array([tok(prompt)], np.int32))
    np.save(os.path.join(out_dir, "tokens_uncond.npy"), np.array([tok("")], np.int32))
    np.save(os.path.join(out_dir, "text_embeds_cond.npy"), f32(trace["cond"]))
    np.save(os.path.join(out_dir, "text_embeds_uncond.npy"), f32(trace["uncond"]))
    np.save(os.path.join(out_dir, "latents_init_noise.npy"), f32(trace["noise"]))
    np.save(os.path.join(out_dir, "step_latents_out.npy"), f32(torch.stack(trace["steps"])))
    np.save(os.path.join(out_dir, "image_decoded.npy"), f32(trace["decoded"]))
    img = (trace["image"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.save(os.path.join(out_dir, "image_uint8.npy"), img)
    write_json(os.path.join(out_dir, "manifest.json"), {
        "model": os.path.normpath(folder), "prompt": prompt, "negative_prompt": "", "seed": seed,
        "steps": steps, "guidance": guidance, "scheduler": SCHEDULER["_class_name"],
        "timesteps": trace["timesteps"],
        "about": "train/export.py --fixture: PyTorch float32 on the folder's f16 weights (train/models.py, "
                 "checked against diffusers by train/test_models.py); image_uint8 = round(clamp(x/2+0.5)*255)",
    })
    print(f"fixture -> {out_dir}: {prompt!r} seed {seed}, {steps} steps")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="training run folder (vae.pt, unet.pt)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "models", "denoise-emoji"))
    ap.add_argument("--raw", action="store_true", help="export the raw weights, not the EMA ones")
    ap.add_argument("--no-decoder-ft", action="store_true", help="ignore vae_dec.pt (the fine-tuned decoder)")
    ap.add_argument("--fixture", help="write the equivalence fixture for --out into this folder")
    ap.add_argument("--clip-merges", default=os.path.join(HERE, "..", "..", "shared", "data", "clip",
                                                            "bpe_simple_vocab_16e6.txt.gz"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.run:
        export(args)
    if args.fixture:
        dump_fixture(args.out, args.fixture)


if __name__ == "__main__":
    main()
