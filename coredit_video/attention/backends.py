"""Attention on a host module's own weights: scaled dot-product backends (torch SDPA always; flash-attn /
xformers on CUDA when importable) and the dense MHSA around them.

The backends take ``q, k, v`` as ``[B, N, heads, head_dim]`` and return the same layout. The host module follows
MagicDrive-V2's (and OpenSora STDiT3's) layout: ``qkv`` Linear(C, 3C) whose rows are ``[q; k; v]``, per-head
``q_norm`` / ``k_norm``, ``proj`` Linear(C, C), ``num_heads``, ``head_dim``, ``scale`` and optionally
``attn_drop`` / ``proj_drop``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional, CUDA only
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # ImportError, or a broken CUDA build
    _flash_attn_func = None

try:  # optional, CUDA only
    import xformers.ops as _xops
except Exception:
    _xops = None

BACKENDS = ("auto", "sdpa", "flash", "xformers", "math")


def available_backends(device: torch.device, dtype: torch.dtype) -> list:
    """Backends usable for tensors of this device and dtype, best first."""
    out = []
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and _flash_attn_func is not None:
        out.append("flash")
    if device.type == "cuda" and _xops is not None:
        out.append("xformers")
    return out + ["sdpa", "math"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str = "auto",
              dropout_p: float = 0.0, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Softmax attention. ``q [B, Nq, h, d]``, ``k, v [B, Nk, h, d]`` -> ``[B, Nq, h, d]``.

    ``bias [B, Nk]``: added to every query's logit of each key (ToMe's proportional attention); flash-attn takes
    no bias, so a biased call on ``auto`` uses the next backend."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        usable = available_backends(q.device, q.dtype)
        backend = usable[1] if (bias is not None and usable[0] == "flash") else usable[0]
    elif backend not in available_backends(q.device, q.dtype):
        raise RuntimeError(
            f"attention backend {backend!r} is not usable for {q.dtype} tensors on {q.device}; "
            "install it (pip install 'coredit-video[gpu]') or use backend='auto'"
        )
    if bias is not None and backend == "flash":
        raise RuntimeError("the flash-attn backend takes no attention bias (proportional attention); use "
                           "backend='auto' or 'sdpa'")
    if backend == "flash":
        return _flash_attn_func(q, k, v, dropout_p=dropout_p, softmax_scale=scale)
    if backend == "xformers":
        xb = None if bias is None else bias[:, None, None, :].to(q.dtype).expand(
            q.shape[0], q.shape[2], q.shape[1], k.shape[1])
        return _xops.memory_efficient_attention(q, k, v, attn_bias=xb, p=dropout_p, scale=scale)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if backend == "sdpa":
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    else:  # "math": explicit softmax, the reference
        attn = (qt.float() * scale) @ kt.float().transpose(-2, -1)
        if bias is not None:
            attn = attn + bias[:, None, None, :].float()
        attn = attn.softmax(dim=-1)
        if dropout_p:
            attn = F.dropout(attn, dropout_p)
        out = (attn @ vt.float()).to(q.dtype)
    return out.transpose(1, 2)


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


def split_qkv_heads(attn: nn.Module, x: torch.Tensor, kv: torch.Tensor):
    """Queries from ``x [B, n, C]`` (``qkv.weight[:C]``), keys and values from ``kv [B, m, C]`` (the rest):
    normalised ``q [B, n, h, d]``, ``k, v [B, m, h, d]``. Used when queries and keys are different tokens
    (MagicDrive-V2's cross-view attention; K/V-reduced self-attention)."""
    C, h, d = x.shape[-1], attn.num_heads, attn.head_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(x, w[:C], None if b is None else b[:C]).unflatten(-1, (h, d))
    k, v = F.linear(kv, w[C:], None if b is None else b[C:]).unflatten(-1, (2, h, d)).unbind(-3)
    return attn.q_norm(q), attn.k_norm(k), v


def dense_self_attention(attn: nn.Module, x: torch.Tensor, backend: str = "auto", kv: Optional[torch.Tensor] = None,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Full MHSA with the host's weights: ``x [B, n, C]`` -> ``[B, n, C]``. ``kv [B, m, C]``: other tokens for the
    keys and values (default: ``x``); ``bias [B, m]``: added to each key's logits."""
    q, k, v = qkv_heads(attn, x) if kv is None else split_qkv_heads(attn, x, kv)
    o = attention(q, k, v, attn.scale, backend, attn_dropout(attn), bias)
    return output_projection(attn, o)
