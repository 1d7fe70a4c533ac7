#!/usr/bin/python3
"""Builds the emoji image–caption data set from pinned npm tarballs (see train/manifest.json).

    /usr/bin/python3 train/build_data.py --out /var/tmp/denoise-data/emoji

Downloads the tarballs with `npm pack NAME@VERSION` into OUT/npm (skipped when present), checks each
sha256, then writes into OUT:
  images_64.npy   uint8 [N, 64, 64, 3], alpha composited on white
  items.json      per image: concept index, style, split ("train" or "eval", ~5 %, by a hash)
  concepts.json   per concept: label, tags, group, subgroup, hexcode, emoji (from emojibase-data)
  build.json      counts per style and split, tarball sha256s, seconds taken

Styles: "google" and "twitter" (emoji-datasource 64 px PNGs), "flat", "color" and "high contrast"
(Fluent UI Emoji SVGs, rasterised at 64 px by rsvg-convert from librsvg2-bin). Skin-tone variants
are left out (their base emoji is kept); emojibase's components and regional indicators too.
The data is never committed to the repository.
"""
import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 64
FLUENT_STYLES = {"flat": "flat", "modern": "color", "high-contrast": "high contrast"}
SKIN = re.compile(r"-(dark|light|medium|medium-dark|medium-light)$")
GROUP_COMPONENT = 2


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(npm_dir, pkg):
    path = os.path.join(npm_dir, f"{pkg['name']}-{pkg['version']}.tgz")
    if not os.path.exists(path):
        os.makedirs(npm_dir, exist_ok=True)
        subprocess.run(["npm", "pack", f"{pkg['name']}@{pkg['version']}"], cwd=npm_dir, check=True,
                       stdout=subprocess.DEVNULL)
    got = sha256(path)
    if got != pkg["sha256"]:
        sys.exit(f"{path}: sha256 {got} differs from the manifest's {pkg['sha256']}; delete the file "
                 f"to download it again, or update train/manifest.json if the pin changed on purpose")
    return path


def slug(label):
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace("'", "").replace("\u2019", "")).strip("-")


def plain_hex(code):
    return "-".join(c for c in code.upper().split("-") if c != "FE0F")


def on_white(rgba):
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def png_to_rgb(data):
    im = Image.open(io.BytesIO(data)).convert("RGBA")
    if im.size != (SIZE, SIZE):
        im = im.resize((SIZE, SIZE), Image.LANCZOS)
    return on_white(np.asarray(im))


def rasterise(svg):
    out = subprocess.run(["rsvg-convert", "-w", str(SIZE), "-h", str(SIZE), "-f", "png"], input=svg,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return png_to_rgb(out.stdout)


def split_of(key):
    return "eval" if hashlib.sha256(key.encode()).digest()[0] < 13 else "train"  # ~5 %


def load_concepts(path):
    with tarfile.open(path) as tf:
        data = json.load(tf.extractfile("package/en/data.json"))
    concepts = []
    for e in data:
        if e.get("group") in (None, GROUP_COMPONENT):
            continue
        concepts.append({"label": e["label"], "tags": e.get("tags", []), "group": e["group"],
                         "subgroup": e.get("subgroup"), "hexcode": e["hexcode"], "emoji": e["emoji"]})
    return concepts


def datasource_images(path, style, by_hex):
    """(concept index, rgb) for every emoji-datasource image whose code point emojibase names."""
    out, missing = [], 0
    with tarfile.open(path) as tf:
        emoji = json.load(tf.extractfile("package/emoji.json"))
        for e in emoji:
            ci = by_hex.get(plain_hex(e["unified"]))
            member = f"package/img/{style}/64/{e['image']}"
            if ci is None or not e.get(f"has_img_{style}"):
                missing += 1
                continue
            out.append((ci, png_to_rgb(tf.extractfile(member).read())))
    return out, missing


def fluent_images(path, by_slug, workers):
    """{style: [(concept index, rgb)]} for the Fluent SVGs whose name matches an emojibase label."""
    jobs, missing = [], {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            parts = m.name.split("/")
            if len(parts) != 4 or parts[1] != "icons" or not parts[3].endswith(".svg"):
                continue
            style, name = FLUENT_STYLES[parts[2]], parts[3][:-4]
            if SKIN.search(name):
                continue
            name = name[: -len("-default")] if name.endswith("-default") else name
            ci = by_slug.get(name)
            if ci is None:
                missing[style] = missing.get(style, 0) + 1
                continue
            jobs.append((style, ci, tf.extractfile(m).read()))
    out = {s: [] for s in FLUENT_STYLES.values()}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for (style, ci, _), rgb in zip(jobs, pool.map(lambda j: rasterise(j[2]), jobs)):
            out[style].append((ci, rgb))
    return out, missing


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/var/tmp/denoise-data/emoji")
    ap.add_argument("--workers", type=int, default=2, help="parallel rsvg-convert processes")
    args = ap.parse_args()
    t0 = time.time()
    manifest = json.load(open(os.path.join(HERE, "manifest.json")))
    paths = {p["name"]: fetch(os.path.join(args.out, "npm"), p) for p in manifest["packages"]}

    concepts = load_concepts(paths["emojibase-data"])
    by_hex = {plain_hex(c["hexcode"]): i for i, c in enumerate(concepts)}
    by_slug = {slug(c["label"]): i for i, c in enumerate(concepts)}
    per_style, missing = {}, {}
    for style in ("google", "twitter"):
        per_style[style], missing[style] = datasource_images(paths[f"emoji-datasource-{style}"], style, by_hex)
        print(f"{style}: {len(per_style[style])} images ({time.time() - t0:.0f} s)", flush=True)
    fluent, fluent_missing = fluent_images(paths["fluentui-emoji"], by_slug, args.workers)
    per_style.update(fluent)
    missing.update(fluent_missing)
    print(f"fluent: {sum(len(v) for v in fluent.values())} images ({time.time() - t0:.0f} s)", flush=True)

    images, items = [], []
    for style, pairs in per_style.items():
        for ci, rgb in pairs:
            key = f"{concepts[ci]['hexcode']}/{style}"
            items.append({"concept": ci, "style": style, "split": split_of(key)})
            images.append(rgb)
    used = sorted({it["concept"] for it in items})
    remap = {old: new for new, old in enumerate(used)}
    concepts = [concepts[i] for i in used]
    for it in items:
        it["concept"] = remap[it["concept"]]
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "images_64.npy"), np.stack(images))
    json.dump(items, open(os.path.join(args.out, "items.json"), "w"))
    json.dump(concepts, open(os.path.join(args.out, "concepts.json"), "w"), ensure_ascii=False)
    counts = {
        "images": len(items),
        "concepts": len(concepts),
        "per_style": {s: len(v) for s, v in per_style.items()},
        "unmatched_per_style": missing,
        "per_split": {s: sum(1 for it in items if it["split"] == s) for s in ("train", "eval")},
    }
    build = {"counts": counts, "packages": manifest["packages"], "seconds": round(time.time() - t0)}
    json.dump(build, open(os.path.join(args.out, "build.json"), "w"), indent=2)
    print(json.dumps(build["counts"], indent=2), f"\n{build['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
