"""Multi-head self-attention computed with a host attention module's own weights.

The host module follows MagicDrive-V2's (and OpenSora STDiT3's) layout: ``qkv`` Linear(C, 3C)
whose rows are ``[q; k; v]``, per-head ``q_norm`` / ``k_norm``, ``proj`` Linear(C, C),
``num_heads``, ``head_dim``, ``scale`` and optionally ``attn_drop`` / ``proj_drop``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backends import attention


def qkv_heads(attn: nn.Module, x: torch.Tensor):
    """``x [B, n, C]`` -> normalised ``q, k`` and ``v``, each ``[B, n, heads, head_dim]``."""
    B, n, _ = x.shape
    q, k, v = attn.qkv(x).view(B, n, 3, attn.num_heads, attn.head_dim).unbind(2)
    return attn.q_norm(q), attn.k_norm(k), v


def output_projection(attn: nn.Module, o: torch.Tensor) -> torch.Tensor:
    """``o [B, n, heads, head_dim]`` -> ``[B, n, C]`` through ``proj`` (and ``proj_drop``)."""
    B, n = o.shape[:2]
    out = attn.proj(o.reshape(B, n, -1))
    drop = getattr(attn, "proj_drop", None)
    return drop(out) if drop is not None else out


def attn_dropout(attn: nn.Module) -> float:
    drop = getattr(attn, "attn_drop", None)
    return float(drop.p) if (drop is not None and attn.training) else 0.0


def dense_self_attention(attn: nn.Module, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Full MHSA over ``x [B, n, C]`` -> ``[B, n, C]`` with the host's weights."""
    q, k, v = qkv_heads(attn, x)
    o = attention(q, k, v, attn.scale, backend, attn_dropout(attn))
    return output_projection(attn, o)
