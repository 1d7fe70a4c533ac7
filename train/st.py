"""safetensors read/write for torch tensors (the format is an 8-byte header length, a JSON header,
then the raw little-endian data); Debian has no `safetensors` package, and the format is small."""
import json
import struct

import numpy as np
import torch

DTYPES = {"F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
          "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32)}


def load(path):
    """{name: float32 torch tensor} from a safetensors file (F16 upcast)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DTYPES[info["dtype"]][0]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32) if arr.dtype == np.float16 else arr.copy())
    return out


def save(path, tensors, dtype="F16"):
    """Writes {name: tensor} with float tensors cast to `dtype`, keys sorted, 8-byte aligned."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        kind = dtype if t.is_floating_point() else {torch.int64: "I64", torch.int32: "I32"}[t.dtype]
        arr = t.to(DTYPES[kind][1]).contiguous().numpy()
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
