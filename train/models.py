"""Stable Diffusion's three models in plain PyTorch (>= 1.13), with diffusers' / transformers' class
and parameter names, so that `state_dict()` keys are the checkpoint keys diffusers writes:
AutoencoderKL, UNet2DConditionModel and CLIPTextModel, built from the same config dicts as their
`config.json` files. Only what Stable Diffusion 1.x uses is here (GroupNorm ResNets, GEGLU
transformers, 1x1-conv projections, ε-prediction); nothing is copied from diffusers.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# shared blocks


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, groups, eps, temb=None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        if temb is not None:
            self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))  # [B, Cout, H, W]
        if temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x
        return skip + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv; the VAE pads (0, 1, 0, 1) itself (padding=0), the U-Net uses padding=1."""

    def __init__(self, ch, vae):
        super().__init__()
        self.vae = vae
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0 if vae else 1)

    def forward(self, x):
        if self.vae:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, size=None):
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


def attention(q, k, v, heads):
    """[B, Lq, C] x [B, Lk, C] -> [B, Lq, C], softmax(q k^T / sqrt(d)) v per head."""
    b, lq, c = q.shape
    d = c // heads
    q = q.view(b, lq, heads, d).transpose(1, 2)  # [B, h, Lq, d]
    k = k.view(b, -1, heads, d).transpose(1, 2)
    v = v.view(b, -1, heads, d).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)), dim=-1)  # [B, h, Lq, Lk]
    return (w @ v).transpose(1, 2).reshape(b, lq, c)


class Attention(nn.Module):
    """diffusers `Attention` (to_q/to_k/to_v/to_out.0); `bias` for the VAE's mid-block attention."""

    def __init__(self, dim, heads, context_dim=None, bias=False, group_norm=None):
        super().__init__()
        self.heads = heads
        if group_norm is not None:
            self.group_norm = nn.GroupNorm(group_norm[0], dim, eps=group_norm[1])
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, context=None):
        ctx = x if context is None else context
        return self.to_out[0](attention(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads))


class VaeMidAttention(Attention):
    """The VAE mid block's single-head self-attention over pixels, with its residual."""

    def __init__(self, ch, groups, eps):
        super().__init__(ch, 1, bias=True, group_norm=(groups, eps))

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        t = super().forward(t).transpose(1, 2).reshape(b, c, h, w)
        return x + t


# ---------------------------------------------------------------------------------------------
# AutoencoderKL


class _VaeMid(nn.Module):
    def __init__(self, ch, groups, eps, add_attention):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([VaeMidAttention(ch, groups, eps)] if add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class _VaeDown(nn.Module):
    def __init__(self, cin, cout, layers, groups, eps, down):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if j == 0 else cout, cout, groups, eps) for j in range(layers)])
        if down:
            self.downsamplers = nn.ModuleList([Downsample2D(cout, vae=True)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
        return x


class _VaeUp(nn.Module):
    def __init__(self, cin, cout, layers, groups, eps, up):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if j == 0 else cout, cout, groups, eps) for j in range(layers)])
        if up:
            self.upsamplers = nn.ModuleList([Upsample2D(cout)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, g, n = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            _VaeDown(ch[max(i - 1, 0)], ch[i], n, g, 1e-6, i < len(ch) - 1) for i in range(len(ch))])
        self.mid_block = _VaeMid(ch[-1], g, 1e-6, cfg.get("mid_block_add_attention", True))
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)  # [B, C0, H, W]
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)  # [B, Clast, H/f, W/f]
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # [B, 2L, H/f, W/f]


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        rev, g, n = list(reversed(cfg["block_out_channels"])), cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], rev[0], 3, padding=1)
        self.mid_block = _VaeMid(rev[0], g, 1e-6, cfg.get("mid_block_add_attention", True))
        self.up_blocks = nn.ModuleList([
            _VaeUp(rev[max(i - 1, 0)], rev[i], n + 1, g, 1e-6, i < len(rev) - 1) for i in range(len(rev))])
        self.conv_norm_out = nn.GroupNorm(g, rev[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rev[-1], cfg["out_channels"], 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))  # [B, Clast, h, w]
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # [B, 3, h*f, w*f]


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = dict(cfg)
        lat = cfg["latent_channels"]
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * lat, 2 * lat, 1)
        self.post_quant_conv = nn.Conv2d(lat, lat, 1)

    @property
    def scale_factor(self):
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    def encode(self, x):
        """Images in [-1, 1] -> (mean, logvar), each [B, L, H/f, W/f] (unscaled)."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        """Unscaled latents -> images, about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------------------------------------
# UNet2DConditionModel


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, context_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class Transformer2DModel(nn.Module):
    def __init__(self, ch, heads, context_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, heads, context_dim)])
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).view(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        for blk in self.transformer_blocks:
            t = blk(t, context)
        return x + self.proj_out(t.transpose(1, 2).reshape(b, c, h, w))


class _UNetBlock(nn.Module):
    """Down or up block: resnets (+ attentions) (+ down/upsampler); up blocks consume skips."""

    def __init__(self, cins, cout, temb, groups, eps, heads, context_dim, cross, sampler):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ci, cout, groups, eps, temb) for ci in cins])
        if cross:
            self.attentions = nn.ModuleList(
                [Transformer2DModel(cout, heads, context_dim, groups) for _ in cins])
        if sampler == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(cout, vae=False)])
        elif sampler == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(cout)])

    def _layer(self, j, x, temb, context):
        x = self.resnets[j](x, temb)
        if hasattr(self, "attentions"):
            x = self.attentions[j](x, context)
        return x

    def down(self, x, temb, context):
        skips = []
        for j in range(len(self.resnets)):
            x = self._layer(j, x, temb, context)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips

    def up(self, x, skips, temb, context, size=None):
        for j in range(len(self.resnets)):
            x = self._layer(j, torch.cat([x, skips.pop()], dim=1), temb, context)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, size)
        return x


class _UNetMid(nn.Module):
    def __init__(self, ch, temb, groups, eps, heads, context_dim):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, groups, eps, temb) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2DModel(ch, heads, context_dim, groups)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def timestep_features(t, dim, flip_sin_to_cos=True, shift=0.0):
    """diffusers' Timesteps: exp(-ln(10000)·i/(half−shift)) frequencies; [cos, sin] when flipped."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift))
    args = t.float()[:, None] * freqs[None, :]  # [B, half]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if flip_sin_to_cos else emb


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = dict(cfg)
        ch, n = cfg["block_out_channels"], cfg["layers_per_block"]
        g, eps, ctx = cfg["norm_num_groups"], cfg["norm_eps"], cfg["cross_attention_dim"]
        heads = cfg["attention_head_dim"]
        heads = heads if isinstance(heads, list) else [heads] * len(ch)
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["down_block_types"]):
            cin = ch[max(i - 1, 0)]
            self.down_blocks.append(_UNetBlock(
                [cin if j == 0 else ch[i] for j in range(n)], ch[i], temb, g, eps, heads[i], ctx,
                kind == "CrossAttnDownBlock2D", "down" if i < len(ch) - 1 else None))
        self.mid_block = _UNetMid(ch[-1], temb, g, eps, heads[-1], ctx)
        rev, rheads = list(reversed(ch)), list(reversed(heads))
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, cout, cin = rev[max(i - 1, 0)], rev[i], rev[min(i + 1, len(ch) - 1)]
            cins = [(prev if j == 0 else cout) + (cin if j == n else cout) for j in range(n + 1)]
            self.up_blocks.append(_UNetBlock(
                cins, cout, temb, g, eps, rheads[i], ctx, kind == "CrossAttnUpBlock2D",
                "up" if i < len(ch) - 1 else None))
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, sample, timestep, context):
        """sample [B, 4, h, w], timestep [B] (0..999), context [B, 77, D] -> ε [B, 4, h, w]."""
        ch0 = self.config["block_out_channels"][0]
        temb = self.time_embedding(timestep_features(
            timestep, ch0, self.config.get("flip_sin_to_cos", True), self.config.get("freq_shift", 0)))
        x = self.conv_in(sample)  # [B, C0, h, w]
        skips = [x]
        for b in self.down_blocks:
            x, s = b.down(x, temb, context)
            skips += s
        x = self.mid_block(x, temb, context)
        for i, b in enumerate(self.up_blocks):
            n = len(b.resnets)
            mine, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[-2:] if skips and hasattr(b, "upsamplers") else None
            x = b.up(x, mine, temb, context, size)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# ---------------------------------------------------------------------------------------------
# CLIPTextModel


class CLIPAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        b, n, c = x.shape
        d = c // self.heads
        q = self.q_proj(x).view(b, n, self.heads, d).transpose(1, 2)  # [B, h, L, d]
        k = self.k_proj(x).view(b, n, self.heads, d).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, d).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(d)) + mask, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, n, c))


class CLIPMLP(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class CLIPEncoderLayer(nn.Module):
    def __init__(self, dim, heads, inner, eps):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = CLIPAttention(dim, heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = CLIPMLP(dim, inner)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _Embeddings(nn.Module):
    def __init__(self, vocab, positions, dim):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.position_embedding = nn.Embedding(positions, dim)


class _Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([
            CLIPEncoderLayer(cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"],
                             cfg["layer_norm_eps"]) for _ in range(cfg["num_hidden_layers"])])


class _TextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = _Embeddings(cfg["vocab_size"], cfg["max_position_embeddings"], cfg["hidden_size"])
        self.encoder = _Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])


class CLIPTextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = dict(cfg)
        self.text_model = _TextTransformer(cfg)

    def forward(self, ids):
        """ids [B, L] -> last_hidden_state [B, L, D] (causal self-attention)."""
        tm = self.text_model
        n = ids.shape[1]
        x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[:n]
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1)  # [L, L]
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        return tm.final_layer_norm(x)
