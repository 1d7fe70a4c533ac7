"""A CLIP-format byte-level BPE tokenizer made from OpenAI CLIP's merges truncated to the first N
(so token ids equal real CLIP's for every token it keeps; only <|startoftext|> and <|endoftext|>
move to the end of the shorter vocabulary). Written as a transformers/diffusers `tokenizer/` folder:
vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json.

The pre-tokenizer is CLIP's pattern with Python's `re` classes standing in for \\p{L} / \\p{N}
(Debian lacks the `regex` module); for the captions and prompts used here the ids equal our
engine's tokenizer (checked by the equivalence fixture and the data check in train/README.md).
"""
import gzip
import html
import json
import os
import re

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PATTERN = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def read_clip_merges(path, count):
    """The first `count` merges of CLIP's bpe_simple_vocab_16e6.txt(.gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:]
    return [tuple(line.split()) for line in lines[:count]]


class Tokenizer:
    def __init__(self, merges, max_length):
        self.byte_encoder = bytes_to_unicode()
        chars = list(self.byte_encoder.values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
        self.merges = merges
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.max_length = max_length
        self.bos, self.eos = self.vocab[BOS], self.vocab[EOS]
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            first, second = self.merges[rank]
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        self.cache[token] = word
        return word

    def encode(self, text):
        """Token ids without start/end tokens."""
        text = re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).lower()
        ids = []
        for piece in PATTERN.findall(text):
            token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids += [self.vocab[t] for t in self.bpe(token)]
        return ids

    def __call__(self, text):
        """[bos, ids[:max_length-2], eos] padded with eos to max_length (SD 1.x padding)."""
        ids = [self.bos] + self.encode(text)[: self.max_length - 2] + [self.eos]
        return ids + [self.eos] * (self.max_length - len(ids))

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.vocab, f, ensure_ascii=False, indent=0)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        special = {"content": None, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
        added = {str(self.vocab[t]): {**special, "content": t, "special": True} for t in (BOS, EOS)}
        config = {
            "added_tokens_decoder": added, "bos_token": BOS, "clean_up_tokenization_spaces": True,
            "eos_token": EOS, "errors": "replace", "model_max_length": self.max_length, "pad_token": EOS,
            "tokenizer_class": "CLIPTokenizer", "unk_token": EOS,
        }
        json.dump(config, open(os.path.join(folder, "tokenizer_config.json"), "w"), indent=2)
        tok = lambda t: {**special, "content": t}  # noqa: E731
        json.dump({"bos_token": tok(BOS), "eos_token": tok(EOS), "pad_token": EOS, "unk_token": tok(EOS)},
                  open(os.path.join(folder, "special_tokens_map.json"), "w"), indent=2)

    @staticmethod
    def load(folder):
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line]
        config = json.load(open(os.path.join(folder, "tokenizer_config.json")))
        return Tokenizer(merges, config["model_max_length"])
