"""Where the trainer computes: the `--device` choice (CUDA when present, else the CPU), TF32 and
bf16 autocast on CUDA, and checkpoints that load anywhere (tensors saved on the CPU, loaded with
map_location="cpu"). On the CPU nothing changes: no autocast, and `.cpu()` of a CPU tensor is itself.
"""
import contextlib

import torch


def add_device_args(ap, amp=True):
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available, else cpu)")
    if amp:
        ap.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                        help="bf16 autocast of the forward passes (auto: on with CUDA, off on the CPU); "
                             "losses, EMA and optimizer stay in float32")


def pick_device(name=None):
    """The torch.device asked for, with TF32 matmuls/convolutions and cuDNN autotuning on CUDA."""
    dev = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                             "use --device cpu")
        enable_tf32()
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
    return dev


def enable_tf32():
    """TF32 for float32 matmuls and convolutions (the VAE encode, sampling, and whatever autocast
    leaves in float32). torch >= 2.9 has per-backend `fp32_precision` and warns about (and, mixed
    with it, can refuse) the older `allow_tf32` flags, so only one of the two APIs is used."""
    matmul = torch.backends.cuda.matmul
    try:
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "tf32"
            torch.backends.cudnn.conv.fp32_precision = "tf32"
        else:
            matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    except (AttributeError, RuntimeError) as e:  # speed only: never stop a run for it
        print(f"TF32 left as it was: {e}", flush=True)


def device_of(module):
    """The device a module's parameters live on."""
    return next(module.parameters()).device


def describe(dev):
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)} (torch {torch.__version__})"
    return f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads)"


def autocast(dev, amp):
    """bf16 autocast for a forward pass (matmuls and convolutions in bf16; norms and softmax in
    float32 as autocast's op lists say), or nothing."""
    if amp == "off" or (amp == "auto" and dev.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def cpu_tree(obj):
    """A state (dicts, lists, tuples of tensors) with every tensor on the CPU, so a checkpoint
    written on a GPU loads on a machine without one."""
    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, dict):
        return type(obj)((k, cpu_tree(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_tree(v) for v in obj)
    return obj


def load_checkpoint(path):
    """Our own checkpoint (configs, optimizer state, tensors) onto the CPU; torch >= 2.6 would
    refuse its non-tensor parts by default (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def optimizer_kwargs(dev):
    """AdamW's fused CUDA kernel when on CUDA (torch >= 2), else the defaults (as before)."""
    if dev.type == "cuda" and int(torch.__version__.split(".")[0]) >= 2:
        return {"fused": True}
    return {}


FLAGS = ("fused", "foreach", "capturable", "differentiable", "decoupled_weight_decay")


def load_optimizer(opt, state):
    """opt.load_state_dict, keeping this optimizer's own implementation flags (fused, foreach,
    capturable, …): a checkpoint written with the fused CUDA AdamW resumes on the CPU and back."""
    own = {k: v for k, v in opt.defaults.items() if k in FLAGS}
    opt.load_state_dict(state)
    for group in opt.param_groups:
        for k in [k for k in group if k in FLAGS and k not in own]:
            del group[k]
        group.update(own)
        if group.get("fused") or group.get("capturable"):  # their step counters live on the device
            for p in group["params"]:
                s = opt.state.get(p, {})
                if torch.is_tensor(s.get("step")):
                    s["step"] = s["step"].to(device=p.device, dtype=torch.float32)
