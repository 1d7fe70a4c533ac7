#!/usr/bin/python3
"""Trains the tiny Stable Diffusion on the emoji data (CPU or GPU), resumably.

    train.py vae  --data D --run R [--minutes M]   # AutoencoderKL on the images
    train.py unet --data D --run R [--minutes M]   # U-Net + CLIP text encoder on the VAE's latents
    train.py unet --run R --vae-from models/denoise-emoji ...   # on the shipped VAE's latents

Each command resumes from R/<stage>.pt when it exists, checkpoints every --every-min minutes
(atomically), appends a JSON line per log interval to R/<stage>_log.jsonl (loss, lr, samples, wall and
CPU seconds), and writes sample sheets / reconstructions to R/samples/ at each checkpoint. Stop it
at any time (SIGTERM checkpoints first); run the same command again to continue.

    train.py unet ... --decay-steps N [--decay-start S] [--lr-end 1e-5] [--steps S+N]

cools the U-Net's learning rate down (linearly, or --decay-shape cosine) for the last stretch of a
run; the schedule is saved in the checkpoint, so a plain resume continues it. With a time box,
`--minutes M --cooldown-min C` starts that cooldown C minutes before the end, over as many steps as
the measured speed fits in them.

--device cuda|cpu (default: cuda when available) puts the models, EMA, optimizer, data and noise on
that device, with TF32 and bf16 autocast of the forward passes on CUDA (--amp off: float32).
Checkpoints hold CPU tensors, so a run moves between a GPU machine and the CPU freely.
"""
import argparse
import copy
import json
import math
import os
import random
import resource
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
import st  # noqa: E402
from accel import (add_device_args, autocast, cpu_tree, describe, load_checkpoint, load_optimizer,  # noqa: E402
                   optimizer_kwargs, pick_device)
from configs import text_encoder_config, unet_config, vae_config  # noqa: E402
from data import EmojiData, caption  # noqa: E402
from sampling import alphas_cumprod, generate  # noqa: E402
from tokenizer import Tokenizer, read_clip_merges  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHEET_PROMPTS = ["tropical fish", "red apple", "cat face", "rocket", "sun", "pizza", "grinning face",
                 "red heart", "dog face", "banana", "house", "snowman", "octopus", "strawberry",
                 "automobile", "ghost"]
STOP = False


def on_term(*_):
    global STOP
    STOP = True


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(cpu_tree(obj), tmp)
    os.replace(tmp, path)


def sheet(images, path, labels=None, cols=8, scale=2):
    """[B, 3, H, W] in [0, 1] -> a PNG grid (nearest-upscaled)."""
    b, _, h, w = images.shape
    rows = math.ceil(b / cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    arr = (images.float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    for i in range(b):
        grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = arr[i]
    Image.fromarray(grid).resize((cols * w * scale, rows * h * scale), Image.NEAREST).save(path)


def lr_at(step, base, warmup, decay=None):
    """Linear warm-up to `base`; then, with `decay` ({"start", "steps", "lr_end", "shape"}), a
    cooldown from `base` at step `start` to `lr_end` at `start + steps` (linear or cosine), held at
    `lr_end` after it."""
    lr = base * min(1.0, (step + 1) / warmup)
    if decay:
        p = min(1.0, max(0.0, (step - decay["start"]) / decay["steps"]))
        f = 1 - p if decay["shape"] == "linear" else 0.5 * (1 + math.cos(math.pi * p))
        lr = decay["lr_end"] + (lr - decay["lr_end"]) * f
    return lr


def cooldown_by_time(args, state, rate, deadline):
    """--cooldown-min: the cooldown from now to the time box's end, over the steps the measured
    rate (steps/s, checkpoints included) fits in it; kept in the state as --decay-steps would be."""
    steps = max(1, int(rate * (deadline - time.time())))
    state["decay"] = {"start": state["step"], "steps": steps, "lr_end": args.lr_end, "shape": args.decay_shape}
    print(f"cooldown: lr {args.lr:g} -> {args.lr_end:g} ({args.decay_shape}) over steps {state['step']}–"
          f"{state['step'] + steps} ({rate:.2f} steps/s, {(deadline - time.time()) / 60:.1f} min left)", flush=True)
    return state["decay"]


def decay_schedule(args, state):
    """The U-Net's cooldown: the one the flags ask for (starting at --decay-start, or at the step the
    run resumes from), else the one saved in the checkpoint's state, else none. It is stored in the
    state, so a plain resume continues it."""
    if args.decay_steps:
        start = state["step"] if args.decay_start is None else args.decay_start
        state["decay"] = {"start": start, "steps": args.decay_steps, "lr_end": args.lr_end,
                          "shape": args.decay_shape}
    return state.get("decay")


class Ema:
    def __init__(self, modules, decay):
        self.decay = decay
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]

    @torch.no_grad()
    def update(self, modules, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for s, m in zip(self.shadow, modules):
            ps, pm = list(s.parameters()), [p.detach() for p in m.parameters()]
            torch._foreach_mul_(ps, d)  # one kernel per tensor list on CUDA, not two per tensor
            torch._foreach_add_(ps, pm, alpha=1 - d)


def setup(args):
    """Threads, signals, the device (args.dev) and the data, its images on that device."""
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    args.dev = pick_device(args.device)
    os.makedirs(os.path.join(args.run, "samples"), exist_ok=True)
    t0 = time.time()
    data = EmojiData(args.data, args.px)
    data.images = data.images.to(args.dev)
    print(f"{args.stage}: {describe(args.dev)}, amp {args.amp}; {len(data.items)} pictures at {args.px} px "
          f"loaded in {time.time() - t0:.1f} s", flush=True)
    return data


def noise_generator(dev, g, seed):
    """The generator of the training noise: the CPU one itself on the CPU (as before), else one
    on the device (no host round trip per step)."""
    return g if dev.type == "cpu" else torch.Generator(dev).manual_seed(seed)


def log_line(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------------------------------------
# VAE


def psnr(vae, images):
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(images[i:i + 64])[0]) for i in range(0, len(images), 64)])
    mse = ((rec.clamp(-1, 1) - images) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / mse), rec


def train_vae(args):
    data = setup(args)
    train_idx, eval_idx = data.indices("train"), data.indices("eval")
    # --decoder-only: the encoder of vae.pt (which the U-Net's latents come from) stays frozen and
    # the decoder keeps training into vae_dec.pt, as SD's fine-tuned decoders do.
    path = os.path.join(args.run, "vae_dec.pt" if args.decoder_only else "vae.pt")
    dev = args.dev
    cfg = vae_config(args.vae_channels, args.px)
    vae = models.AutoencoderKL(cfg)
    if args.decoder_only:
        ck = load_checkpoint(os.path.join(args.run, "vae.pt"))
        cfg = ck["config"]
        vae = models.AutoencoderKL(cfg)
        vae.load_state_dict(ck["model"])
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    vae.to(dev)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0, **optimizer_kwargs(dev))
    state = {"step": 0, "samples": 0, "cpu": 0.0, "wall": 0.0}
    if os.path.exists(path):
        ck = load_checkpoint(path)
        vae.load_state_dict(ck["model"])
        load_optimizer(opt, ck["opt"])
        state = ck["state"]
        print(f"resumed VAE at step {state['step']}", flush=True)
    elif args.decoder_only:
        state = dict(ck["state"])
    g = torch.Generator().manual_seed(1234 + state["step"])
    gd = noise_generator(dev, g, 1234 + state["step"])
    weights = data.weights(train_idx)
    eval_imgs = data.images[eval_idx]
    fixed = data.images[eval_idx[:16]]
    log = os.path.join(args.run, "vae_dec_log.jsonl" if args.decoder_only else "vae_log.jsonl")
    t_start, c_start = time.time(), cpu_seconds()
    t_ck, acc, n_acc = time.time(), 0.0, 0

    def checkpoint():
        state["cpu"] += cpu_seconds() - c_start_box[0]
        state["wall"] += time.time() - t_start_box[0]
        c_start_box[0], t_start_box[0] = cpu_seconds(), time.time()
        save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state, "config": cfg}, path)
        db, rec = psnr(vae.eval(), eval_imgs)
        vae.train()
        name = f"vae{'_dec' if args.decoder_only else ''}_{state['step']:06d}.png"
        sheet(torch.cat([fixed, rec[:16]]) / 2 + 0.5, os.path.join(args.run, "samples", name))
        log_line(log, {"step": state["step"], "samples": state["samples"], "eval_psnr": round(db, 2),
                       "cpu_s": round(state["cpu"]), "wall_s": round(state["wall"])})
        print(f"VAE step {state['step']}: eval PSNR {db:.2f} dB, {state['cpu'] / 3600:.2f} CPU-h", flush=True)

    c_start_box, t_start_box = [c_start], [t_start]
    deadline = time.time() + args.minutes * 60
    while not STOP and time.time() < deadline and state["step"] < args.steps:
        pick = torch.multinomial(weights, args.batch, replacement=True, generator=g)
        x = data.images[[train_idx[i] for i in pick]]  # [B, 3, px, px]
        with torch.set_grad_enabled(not args.decoder_only):
            with autocast(dev, args.amp):
                mean, logvar = vae.encode(x)
            mean, logvar = mean.float(), logvar.float()
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gd, device=dev)
        with autocast(dev, args.amp):
            rec = vae.decode(z)
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        grad = ((rec[..., 1:, :] - rec[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs().mean() + \
            ((rec[..., 1:] - rec[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs().mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l1 + 0.5 * grad + 0.1 * F.mse_loss(rec, x) + args.kl * kl
        for group in opt.param_groups:
            group["lr"] = lr_at(state["step"], args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        state["step"] += 1
        state["samples"] += args.batch
        acc, n_acc = acc + loss.detach().double(), n_acc + 1  # no host sync per step
        if state["step"] % args.log_every == 0:
            log_line(log, {"step": state["step"], "samples": state["samples"], "loss": round(float(acc) / n_acc, 5),
                           "cpu_s": round(state["cpu"] + cpu_seconds() - c_start_box[0]),
                           "wall_s": round(state["wall"] + time.time() - t_start_box[0])})
            acc, n_acc = 0.0, 0
        if time.time() - t_ck > args.every_min * 60:
            checkpoint()
            t_ck = time.time()
    checkpoint()


def normalised_vae(ck):
    """The trained VAE with per-channel latent mean/std folded into quant_conv and post_quant_conv,
    so encode() gives zero-mean, unit-std latents per channel (scaling_factor 1.0) and decode()
    still reconstructs exactly."""
    vae = models.AutoencoderKL(ck["config"])
    vae.load_state_dict(ck["model"])
    mu, sigma = ck["latent_mean"], ck["latent_std"]  # [L]
    lat = len(mu)
    with torch.no_grad():
        q, p = vae.quant_conv, vae.post_quant_conv
        q.weight[:lat] /= sigma[:, None, None, None]
        q.bias[:lat] = (q.bias[:lat] - mu) / sigma
        q.bias[lat:] -= 2 * torch.log(sigma)
        p.bias += (p.weight[:, :, 0, 0] @ mu)
        p.weight *= sigma[None, :, None, None]
    vae.config["scaling_factor"] = 1.0
    return vae.eval().requires_grad_(False)


def latent_stats(vae, images):
    with torch.no_grad():
        means = torch.cat([vae.encode(images[i:i + 128])[0] for i in range(0, len(images), 128)])
    return means.mean(dim=(0, 2, 3)).cpu(), means.std(dim=(0, 2, 3)).cpu()


# ---------------------------------------------------------------------------------------------
# U-Net + text encoder


def make_tokenizer(args):
    if not os.path.exists(args.clip_merges):
        raise SystemExit(f"--clip-merges {args.clip_merges}: not found; CLIP's bpe_simple_vocab_16e6.txt.gz "
                         "lives in ../shared/data/clip, and a shipped model's tokenizer/merges.txt holds the "
                         "same first merges (e.g. --clip-merges models/denoise-emoji/tokenizer/merges.txt)")
    merges = read_clip_merges(args.clip_merges, args.merges)
    if len(merges) < args.merges:
        raise SystemExit(f"--clip-merges {args.clip_merges} holds {len(merges)} merges, fewer than --merges "
                         f"{args.merges}")
    return Tokenizer(merges, args.max_length)


def vae_from_folder(folder):
    """A vae.pt made of an exported model's VAE (`--vae-from`): its latents are already normalised
    (mean 0, std 1: the folded statistics are the identity), so the U-Net trains on the shipped
    latent space, nothing large travels to a GPU machine, and export.py writes that VAE back bit
    for bit. Its training cost is taken from the folder's training.json."""
    cfg = json.load(open(os.path.join(folder, "vae", "config.json")))
    if cfg.get("scaling_factor", 1.0) != 1.0:
        raise SystemExit(f"--vae-from {folder}: scaling_factor {cfg['scaling_factor']}; only VAEs exported by "
                         "train/export.py (normalised latents, scaling_factor 1.0) can be reused")
    sd = st.load(os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"))
    models.AutoencoderKL(cfg).load_state_dict(sd, strict=True)  # the keys and shapes match the config
    info_path = os.path.join(folder, "training.json")
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    cpu = info.get("vae_cpu_h", 0.0) * 3600
    lat = cfg["latent_channels"]
    return {"model": sd, "config": cfg, "from": os.path.normpath(folder),
            "state": {"step": info.get("vae_step", 0), "samples": 0, "cpu": cpu, "wall": 0.0},
            "decoder_state": {"step": info.get("vae_decoder_step", info.get("vae_step", 0)),
                              "cpu": cpu + info.get("vae_decoder_cpu_h", 0.0) * 3600},
            "latent_mean": torch.zeros(lat), "latent_std": torch.ones(lat)}


def train_unet(args):
    data = setup(args)
    train_idx = data.indices("train")
    path = os.path.join(args.run, "unet.pt")
    dev = args.dev
    vae_path = os.path.join(args.run, "vae.pt")
    if args.vae_from and not os.path.exists(vae_path):
        save_atomic(vae_from_folder(args.vae_from), vae_path)
        print(f"vae.pt <- the VAE of {args.vae_from}", flush=True)
    vae_ck = load_checkpoint(vae_path)
    if "latent_mean" not in vae_ck:
        raw = models.AutoencoderKL(vae_ck["config"])
        raw.load_state_dict(vae_ck["model"])
        vae_ck["latent_mean"], vae_ck["latent_std"] = latent_stats(raw.to(dev).eval(), data.images[train_idx])
        save_atomic(vae_ck, vae_path)
    vae = normalised_vae(vae_ck).to(dev)
    if vae.config["sample_size"] != args.px:
        raise SystemExit(f"--px {args.px}, but the VAE of {vae_path} was trained at {vae.config['sample_size']} px")
    tok = make_tokenizer(args)
    ucfg = unet_config(args.unet_channels, args.px // vae.scale_factor, args.width, layers=args.layers)
    tcfg = text_encoder_config(len(tok.vocab), args.width, args.max_length, layers=args.text_layers,
                               heads=args.width // 32, bos=tok.bos, eos=tok.eos)
    unet, te = models.UNet2DConditionModel(ucfg), models.CLIPTextModel(tcfg)
    torch.nn.init.normal_(te.text_model.embeddings.token_embedding.weight, std=0.02)
    torch.nn.init.normal_(te.text_model.embeddings.position_embedding.weight, std=0.01)
    unet.to(dev)
    te.to(dev)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, **optimizer_kwargs(dev))
    state = {"step": 0, "samples": 0, "cpu": 0.0, "wall": 0.0}
    ema = Ema([unet, te], args.ema)
    if os.path.exists(path):
        ck = load_checkpoint(path)
        unet.load_state_dict(ck["unet"])
        te.load_state_dict(ck["text_encoder"])
        ema.shadow[0].load_state_dict(ck["ema_unet"])
        ema.shadow[1].load_state_dict(ck["ema_text_encoder"])
        load_optimizer(opt, ck["opt"])
        state = ck["state"]
        print(f"resumed U-Net at step {state['step']}", flush=True)
    decay = decay_schedule(args, state)
    if decay:
        print(f"lr {args.lr:g} -> {decay['lr_end']:g} ({decay['shape']}) over steps {decay['start']}–"
              f"{decay['start'] + decay['steps']}", flush=True)
    # latents of every image once: posterior mean and std, sampled per step
    with torch.no_grad():
        post = [vae.encode(data.images[i:i + 128]) for i in range(0, len(data.images), 128)]
    lat_mean = torch.cat([m for m, _ in post])  # [N, 4, h, w]
    lat_std = torch.cat([torch.exp(0.5 * lv) for _, lv in post])
    ac = alphas_cumprod().to(dev)
    snr = ac / (1 - ac)
    rng = random.Random(state["step"])
    g = torch.Generator().manual_seed(4321 + state["step"])
    gd = noise_generator(dev, g, 4321 + state["step"])
    if dev.type != "cpu":
        state["device"] = describe(dev)
    weights = data.weights(train_idx)
    empty = tok("")
    log = os.path.join(args.run, "unet_log.jsonl")
    t_box, c_box = [time.time()], [cpu_seconds()]
    t_ck, acc, n_acc = time.time(), 0.0, 0

    def checkpoint():
        state["cpu"] += cpu_seconds() - c_box[0]
        state["wall"] += time.time() - t_box[0]
        c_box[0], t_box[0] = cpu_seconds(), time.time()
        save_atomic({"unet": unet.state_dict(), "text_encoder": te.state_dict(),
                     "ema_unet": ema.shadow[0].state_dict(), "ema_text_encoder": ema.shadow[1].state_dict(),
                     "opt": opt.state_dict(), "state": state, "unet_config": ucfg, "text_config": tcfg,
                     "merges": args.merges, "max_length": args.max_length}, path)
        imgs = generate(ema.shadow[0], ema.shadow[1], vae, tok, SHEET_PROMPTS, list(range(16)), steps=20)
        sheet(imgs, os.path.join(args.run, "samples", f"unet_{state['step']:06d}.png"))
        log_line(log, {"step": state["step"], "samples": state["samples"], "checkpoint": True,
                       "cpu_s": round(state["cpu"]), "wall_s": round(state["wall"])})
        rate = (state["step"] - step0) / max(time.time() - t0, 1e-9)
        print(f"U-Net step {state['step']}: {state['samples']} samples, {state['cpu'] / 3600:.2f} CPU-h, "
              f"{state['wall'] / 60:.1f} min, {rate:.2f} steps/s here", flush=True)

    deadline = time.time() + args.minutes * 60
    t0, step0 = time.time(), state["step"]
    while not STOP and time.time() < deadline and state["step"] < args.steps:
        if args.cooldown_min and not decay and deadline - time.time() <= args.cooldown_min * 60 \
                and state["step"] - step0 >= 20:  # a speed to plan with
            decay = cooldown_by_time(args, state, (state["step"] - step0) / (time.time() - t0), deadline)
        pick = [train_idx[i] for i in torch.multinomial(weights, args.batch, replacement=True, generator=g)]
        z = lat_mean[pick] + lat_std[pick] * torch.randn(lat_mean[pick].shape, generator=gd, device=dev)  # [B, 4, h, w]
        caps = [caption(data.concepts[data.items[i]["concept"]], data.items[i]["style"], rng)
                if rng.random() >= args.drop else "" for i in pick]
        ids = torch.tensor([tok(c) if c else empty for c in caps]).to(dev)  # [B, L]
        t = torch.randint(0, 1000, (args.batch,), generator=g).to(dev)
        noise = torch.randn(z.shape, generator=gd, device=dev)
        a = ac[t][:, None, None, None]
        x_t = a.sqrt() * z + (1 - a).sqrt() * noise
        with autocast(dev, args.amp):
            pred = unet(x_t, t, te(ids))
        per = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))  # [B], float32 under autocast too
        w = torch.clamp(snr[t], max=args.min_snr) / snr[t] if args.min_snr > 0 else torch.ones_like(per)
        loss = (per * w).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(state["step"], args.lr, args.warmup, decay)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update([unet, te], state["step"])
        state["step"] += 1
        state["samples"] += args.batch
        acc, n_acc = acc + per.detach().mean().double(), n_acc + 1  # no host sync per step
        if state["step"] % args.log_every == 0:
            log_line(log, {"step": state["step"], "samples": state["samples"], "loss": round(float(acc) / n_acc, 5),
                           "lr": opt.param_groups[0]["lr"], "cpu_s": round(state["cpu"] + cpu_seconds() - c_box[0]),
                           "wall_s": round(state["wall"] + time.time() - t_box[0])})
            acc, n_acc = 0.0, 0
        if time.time() - t_ck > args.every_min * 60:
            checkpoint()
            t_ck = time.time()
    checkpoint()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["vae", "unet"])
    ap.add_argument("--data", default="/var/tmp/denoise-data/emoji")
    ap.add_argument("--run", default="/var/tmp/denoise-train/run1")
    ap.add_argument("--px", type=int, default=32)
    ap.add_argument("--vae-channels", type=lambda s: [int(c) for c in s.split(",")], default=[32, 64, 128])
    ap.add_argument("--unet-channels", type=lambda s: [int(c) for c in s.split(",")], default=[64, 128, 192])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--width", type=int, default=128, help="text encoder width = cross_attention_dim")
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--clip-merges", default=os.path.join(HERE, "..", "..", "shared", "data", "clip",
                                                            "bpe_simple_vocab_16e6.txt.gz"))
    ap.add_argument("--merges", type=int, default=8000)
    ap.add_argument("--max-length", type=int, default=24)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--decay-steps", type=int, default=0,
                    help="unet: cool the lr down to --lr-end over this many steps (kept in the checkpoint)")
    ap.add_argument("--decay-start", type=int, default=None, help="unet: first step of the cooldown "
                    "(default: the step the run resumes from)")
    ap.add_argument("--lr-end", type=float, default=1e-5)
    ap.add_argument("--decay-shape", choices=["linear", "cosine"], default="linear")
    ap.add_argument("--cooldown-min", type=float, default=0,
                    help="unet: with --minutes, cool the lr down to --lr-end over the last this many minutes")
    ap.add_argument("--vae-from", help="unet: without R/vae.pt, take the VAE of this exported folder "
                    "(e.g. models/denoise-emoji) instead of training one")
    ap.add_argument("--kl", type=float, default=1e-4)
    ap.add_argument("--decoder-only", action="store_true", help="vae: train the decoder on the frozen encoder")
    ap.add_argument("--drop", type=float, default=0.12, help="caption dropout (for guidance)")
    ap.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-γ loss weighting (0: off)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--steps", type=int, default=10 ** 9)
    ap.add_argument("--minutes", type=float, default=10 ** 9)
    ap.add_argument("--every-min", type=float, default=20)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    add_device_args(ap)
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 1e-3 if args.stage == "vae" else 5e-4
    if args.stage == "vae":
        args.batch = min(args.batch, 32)
        train_vae(args)
    else:
        train_unet(args)


if __name__ == "__main__":
    main()
