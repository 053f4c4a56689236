"""Scaled dot-product attention backends: torch SDPA always; flash-attn / xformers on CUDA when importable.

All take ``q, k, v`` as ``[B, N, heads, head_dim]`` and return the same layout.
"""
from __future__ import annotations

import torch
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
              dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention. ``q [B, Nq, h, d]``, ``k, v [B, Nk, h, d]`` -> ``[B, Nq, h, d]``."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = available_backends(q.device, q.dtype)[0]
    elif backend not in available_backends(q.device, q.dtype):
        raise RuntimeError(
            f"attention backend {backend!r} is not usable for {q.dtype} tensors on {q.device}; "
            "install it (pip install 'coredit-video[gpu]') or use backend='auto'"
        )
    if backend == "flash":
        return _flash_attn_func(q, k, v, dropout_p=dropout_p, softmax_scale=scale)
    if backend == "xformers":
        return _xops.memory_efficient_attention(q, k, v, p=dropout_p, scale=scale)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(qt, kt, vt, dropout_p=dropout_p, scale=scale)
    else:  # "math": explicit softmax, the reference
        attn = (qt.float() * scale) @ kt.float().transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        if dropout_p:
            attn = F.dropout(attn, dropout_p)
        out = (attn @ vt.float()).to(q.dtype)
    return out.transpose(1, 2)
