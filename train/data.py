"""The emoji data set as tensors, captions and sampling weights (built by train/build_data.py)."""
import io
import json
import lzma
import os
import random

import numpy as np
import torch
import torch.nn.functional as F

# Sampling weight per emojibase group: common, distinctive things (animals, food, travel, activities)
# over the many look-alike people, symbols and flags.
GROUP_WEIGHT = {0: 1.5, 1: 0.4, 3: 2.5, 4: 2.5, 5: 1.5, 6: 1.5, 7: 1.0, 8: 0.4, 9: 0.25}
STYLE_WEIGHT = {"google": 1.0, "twitter": 1.0, "flat": 1.0, "color": 1.0, "high contrast": 0.3}
GROUPS = {0: "smileys & emotion", 1: "people & body", 3: "animals & nature", 4: "food & drink",
          5: "travel & places", 6: "activities", 7: "objects", 8: "symbols", 9: "flags"}


IMAGES = "images_64.npy"  # [N, 64, 64, 3] uint8, as build_data.py writes it
PACKED = IMAGES + ".xz"  # the same .npy file, xz-compressed by pack_data.py (104 -> 14 MB)


def load_images(root):
    """The [N, 64, 64, 3] uint8 pictures of a data folder, from images_64.npy or its packed copy."""
    path = os.path.join(root, IMAGES)
    if os.path.exists(path):
        return np.load(path)
    if os.path.exists(os.path.join(root, PACKED)):
        with lzma.open(os.path.join(root, PACKED)) as f:
            return np.load(io.BytesIO(f.read()))
    raise SystemExit(f"{root}: neither {IMAGES} nor {PACKED}; build the data set with train/build_data.py "
                     "(or pack one with train/pack_data.py)")


class EmojiData:
    def __init__(self, root, px):
        self.root = root
        self.concepts = json.load(open(os.path.join(root, "concepts.json")))
        self.items = json.load(open(os.path.join(root, "items.json")))
        imgs = torch.from_numpy(load_images(root)).permute(0, 3, 1, 2).float()
        if px != 64:
            imgs = F.interpolate(imgs, size=(px, px), mode="area")  # box filter: 2x2 mean at 32 px
        self.images = (imgs / 127.5 - 1.0).contiguous()  # [N, 3, px, px] in [-1, 1]
        self.px = px

    def indices(self, split):
        return [i for i, it in enumerate(self.items) if it["split"] == split]

    def weights(self, idx):
        w = [GROUP_WEIGHT.get(self.concepts[self.items[i]["concept"]]["group"], 1.0)
             * STYLE_WEIGHT[self.items[i]["style"]] for i in idx]
        return torch.tensor(w, dtype=torch.float64)


def article(text):
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def caption(concept, style, rng: random.Random):
    """A training caption: the label, sometimes with an article, a tag or the style. High-contrast
    pictures always say so, so a plain prompt asks for a coloured emoji."""
    label = concept["label"]
    tags = [t for t in concept.get("tags", []) if t.lower() != label.lower()]
    r = rng.random()
    if r < 0.5:
        text = label
    elif r < 0.65:
        text = article(label)
    elif r < 0.85 or not tags:
        text = f"{label}, {style}" if style != "high contrast" else label
    else:
        text = f"{label}, {rng.choice(tags)}"
    if style == "high contrast":
        text += ", high contrast"
    return text
