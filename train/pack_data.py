#!/usr/bin/python3
"""Packs what a GPU training run needs and the repository lacks into `.train-data/` (git-ignored),
small enough to travel with the device tool's `carry` (64 MiB, the working tree included):

    .train-data/emoji/images_64.npy.xz   the data set's pictures: images_64.npy, xz-compressed
    .train-data/emoji/{concepts,items,build}.json
    .train-data/classifier.pt            eval.py's concept classifier

    pack_data.py [--data /var/tmp/denoise-data/emoji] [--classifier /var/tmp/denoise-train/classifier.pt]

EmojiData reads the packed folder as it reads the built one; this script checks that both give the
same uint8 pictures and the same training tensors, and prints what would travel.
"""
import argparse
import lzma
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_data import sha256  # noqa: E402
from data import IMAGES, PACKED, EmojiData, load_images  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
JSONS = ["concepts.json", "items.json", "build.json"]
MiB = 1 << 20


def copy_atomic(src, dst):
    shutil.copyfile(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


def pack(args):
    out = os.path.join(args.out, "emoji")
    os.makedirs(out, exist_ok=True)
    src = os.path.join(args.data, IMAGES)
    t0 = time.time()
    with open(src, "rb") as f, lzma.open(os.path.join(out, PACKED + ".tmp"), "wb", preset=args.preset) as z:
        shutil.copyfileobj(f, z, 1 << 22)
    os.replace(os.path.join(out, PACKED + ".tmp"), os.path.join(out, PACKED))
    print(f"{PACKED}: {os.path.getsize(src) / 1e6:.1f} MB -> {os.path.getsize(os.path.join(out, PACKED)) / 1e6:.1f} MB "
          f"(xz -{args.preset}, {time.time() - t0:.0f} s)", flush=True)
    for name in JSONS:
        copy_atomic(os.path.join(args.data, name), os.path.join(out, name))
    copy_atomic(args.classifier, os.path.join(args.out, "classifier.pt"))


def check(args):
    """The packed folder gives the built folder's pictures and training tensors exactly."""
    out = os.path.join(args.out, "emoji")
    t0 = time.time()
    packed = load_images(out)
    print(f"unpacked in {time.time() - t0:.1f} s", flush=True)
    assert np.array_equal(packed, load_images(args.data)), "packed pictures differ from the built ones"
    for name in JSONS:
        assert sha256(os.path.join(out, name)) == sha256(os.path.join(args.data, name)), name
    assert sha256(os.path.join(args.out, "classifier.pt")) == sha256(args.classifier)
    for px in (32, 64):
        a, b = EmojiData(args.data, px), EmojiData(out, px)
        assert torch.equal(a.images, b.images) and a.items == b.items and a.concepts == b.concepts, px
    print(f"check: the packed folder gives the same {len(packed)} uint8 pictures and the same EmojiData "
          "tensors (32 and 64 px), items and concepts as the built one", flush=True)


def git_bytes(*flags):
    names = subprocess.run(["git", "ls-files", "-z", *flags], cwd=ROOT, capture_output=True, check=True).stdout
    files = [os.path.join(ROOT, n) for n in names.decode().split("\0") if n]
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def report(args):
    carried = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    tree = git_bytes() + git_bytes("--others", "--exclude-standard")
    ignored = subprocess.run(["git", "check-ignore", "-q", args.out], cwd=ROOT).returncode == 0
    print(f"{os.path.relpath(args.out, ROOT)}: {carried / MiB:.1f} MiB; the working tree (tracked and untracked, not "
          f"ignored) {tree / MiB:.1f} MiB; together {(carried + tree) / MiB:.1f} of the 64 MiB a device call carries"
          + ("" if ignored else f"\nWARNING: {args.out} is not git-ignored: it would travel twice"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/var/tmp/denoise-data/emoji", help="the built data set (build_data.py)")
    ap.add_argument("--classifier", default="/var/tmp/denoise-train/classifier.pt", help="eval.py classifier")
    ap.add_argument("--out", default=os.path.join(ROOT, ".train-data"))
    ap.add_argument("--preset", type=int, default=6, help="xz preset (6: 14 MB in ~30 s; 9 saves little)")
    args = ap.parse_args()
    for path in [os.path.join(args.data, n) for n in [IMAGES, *JSONS]] + [args.classifier]:
        if not os.path.exists(path):
            raise SystemExit(f"{path}: not found (build the data with train/build_data.py, the classifier with "
                             "train/eval.py classifier)")
    torch.set_num_threads(2)
    pack(args)
    check(args)
    report(args)


if __name__ == "__main__":
    main()
