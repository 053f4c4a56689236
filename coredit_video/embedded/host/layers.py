"""Layers of the built-in MagicDrive-shaped host, with MagicDrive-V2's attention parameter names.

Written from the interface MagicDrive-V2 exposes (``qkv``, ``q_norm``, ``k_norm``, ``proj``,
``q_linear``/``kv_linear`` for cross-attention); no code is taken from it.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn

from ...attention.backends import attention, attn_dropout, dense_self_attention, output_projection
from ...parallel.seq_attention import sp_attention, sp_self_attention


class GroupRef:
    """A mutable slot holding a process group, shared by a model and its layers.

    Process groups cannot be copied or pickled; this slot survives ``copy.deepcopy`` (an EMA or
    teacher copy shares the group) and pickles as empty (a loaded model runs without SP until
    ``set_sequence_parallel``).
    """

    __slots__ = ("group",)

    def __init__(self, group=None):
        self.group = group

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return GroupRef, ()

    @property
    def size(self) -> int:
        return dist.get_world_size(self.group) if self.group is not None else 1


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN-single modulation: ``x * (1 + scale) + shift``."""
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Self-attention ``[B, N, C] -> [B, N, C]`` (MagicDrive-V2 ``Attention`` layout).

    ``sp`` (a :class:`GroupRef`, set by the host on spatial blocks):
    when it holds a group of P > 1 ranks, ``N`` is this rank's share and attention runs over all
    ranks' tokens through the all-to-all.
    """

    sp = None

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, backend: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        norm = (lambda: nn.LayerNorm(self.head_dim, eps=1e-6)) if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(), norm()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def sp_group(self):
        return self.sp.group if self.sp is not None and self.sp.size > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self.sp_group()
        if group is not None:
            return sp_self_attention(self, x, group, backend=self.backend)
        return dense_self_attention(self, x, self.backend)


class MultiHeadAttention(Attention):
    """Attention from ``x [B, N, C]`` to ``cond [B, M, C]``: q from ``qkv.weight[:C]``, k/v from the rest
    (MagicDrive-V2's cross-view layout)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        w, b = self.qkv.weight, self.qkv.bias
        q = nn.functional.linear(x, w[:C], b[:C]).unflatten(-1, (self.num_heads, self.head_dim))
        kv = nn.functional.linear(cond, w[C:], b[C:]).unflatten(-1, (2, self.num_heads, self.head_dim))
        k, v = kv.unbind(-3)
        q, k, group = self.q_norm(q), self.k_norm(k), self.sp_group()
        if group is not None:  # keys are the neighbours' tokens held by this rank; key order is irrelevant
            o = sp_attention(q, k, v, group, self.scale, self.backend, attn_dropout(self), tag="cross_view")
        else:
            o = attention(q, k, v, self.scale, self.backend, attn_dropout(self))
        return output_projection(self, o)


class MultiHeadCrossAttention(nn.Module):
    """Cross-attention to condition tokens ``cond [B, L, C]`` (``q_linear``, ``kv_linear``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__()
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        q = self.q_linear(x).unflatten(-1, (self.num_heads, self.head_dim))
        k, v = self.kv_linear(cond).unflatten(-1, (2, self.num_heads, self.head_dim)).unbind(-3)
        o = attention(q, k, v, self.head_dim ** -0.5, self.backend)
        return self.proj(o.flatten(-2))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features -> MLP, ``t [B] -> [B, C]``."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``[h*w, dim]`` (row-major)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    out = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    emb = torch.cat(out, dim=1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


def sincos_1d(n: int, dim: int, device=None) -> torch.Tensor:
    """``[n, dim]`` fixed sine-cosine embedding of positions ``0..n-1``."""
    half = dim // 2
    omega = 1.0 / (10000 ** (torch.arange(half, device=device, dtype=torch.float32) / half))
    args = torch.arange(n, device=device, dtype=torch.float32)[:, None] * omega
    return nn.functional.pad(torch.cat([args.sin(), args.cos()], 1), (0, dim - 2 * half))
