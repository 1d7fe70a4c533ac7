#!/usr/bin/python3
"""Copies what notebooks/04_training.ipynb retells from a training run into train/results/: the
logs (JSON lines), a few sample sheets at successive checkpoints, VAE reconstruction sheets, and a
sheet of data-set pictures with their captions. Small files only (the data set is never committed).

    results.py --run /var/tmp/denoise-train/run1 [--data /var/tmp/denoise-data/emoji]
"""
import argparse
import json
import os
import random
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data import EmojiData, caption  # noqa: E402
from train import SHEET_PROMPTS, sheet  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results")


def spread(names, k):
    """At most k names, evenly spaced, always the first and the last."""
    if len(names) <= k:
        return names
    return [names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="/var/tmp/denoise-train/run1")
    ap.add_argument("--data", default="/var/tmp/denoise-data/emoji")
    ap.add_argument("--sheets", type=int, default=8, help="U-Net sample sheets to keep")
    args = ap.parse_args()
    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "samples"), exist_ok=True)
    for name in ("vae_log.jsonl", "vae_dec_log.jsonl", "unet_log.jsonl"):
        src = os.path.join(args.run, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(OUT, "logs", name))
    samples = sorted(os.listdir(os.path.join(args.run, "samples")))
    for old in os.listdir(os.path.join(OUT, "samples")):
        os.remove(os.path.join(OUT, "samples", old))
    keep = spread([s for s in samples if s.startswith("unet_")], args.sheets)
    keep += spread([s for s in samples if s.startswith("vae_0")], 3)
    keep += spread([s for s in samples if s.startswith("vae_dec_")], 2)
    for s in keep:
        shutil.copy(os.path.join(args.run, "samples", s), os.path.join(OUT, "samples", s))
    json.dump({"sheet_prompts": SHEET_PROMPTS, "vae_rows": "top two rows: held-out pictures; bottom two: "
               "their reconstructions"}, open(os.path.join(OUT, "samples", "about.json"), "w"), indent=1)
    data = EmojiData(args.data, 32)
    rng = random.Random(3)
    idx = rng.sample(data.indices("train"), 24)
    sheet(data.images[idx] / 2 + 0.5, os.path.join(OUT, "dataset_samples.png"), cols=8, scale=2)
    caps = [caption(data.concepts[data.items[i]["concept"]], data.items[i]["style"], rng) for i in idx]
    json.dump({"captions": caps, "columns": 8, "scale": 2}, open(os.path.join(OUT, "dataset_samples.json"), "w"),
              indent=1, ensure_ascii=False)
    build = json.load(open(os.path.join(args.data, "build.json")))
    json.dump(build["counts"], open(os.path.join(OUT, "dataset_counts.json"), "w"), indent=1)
    print(f"{len(keep)} sheets, logs and dataset samples -> {OUT}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
