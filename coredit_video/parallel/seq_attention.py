"""Attention under sequence parallelism (Ulysses / MagicDrive-V2 layout).

Each rank holds a contiguous slice of every frame's tokens. Projections run locally on that
slice; one all-to-all gathers the sequence and scatters the heads, every rank attends over the
whole (retained) sequence for ``heads / P`` heads, and the inverse all-to-all brings each rank its
own tokens back with all heads before the output projection.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..attention.backends import attention
from ..attention.backends import attn_dropout, output_projection, qkv_heads
from .comm import heads_to_seq, seq_to_heads


def sp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group, scale: float, backend: str = "auto",
                 dropout_p: float = 0.0, q_counts: Optional[Sequence[int]] = None,
                 kv_counts: Optional[Sequence[int]] = None, tag: str = "attn") -> torch.Tensor:
    """``q [F, nq, h, d]``, ``k, v [F, nk, h, d]`` (this rank's tokens) -> ``[F, nq, h, d]``.

    ``q_counts`` / ``kv_counts``: query / key tokens held by each SP rank (``None``: all equal).
    Self-attention (same tensor counts) sends q, k and v in one all-to-all.
    """
    F, nq, h, d = q.shape
    same = q.shape == k.shape and (q_counts is None) == (kv_counts is None) and (
        q_counts is None or list(q_counts) == list(kv_counts))
    if same:
        qkv = seq_to_heads(torch.cat([q, k, v], dim=-1), group, q_counts, tag)  # [F, N, h/P, 3d]
        qg, kg, vg = qkv.split(d, dim=-1)
    else:
        qg = seq_to_heads(q, group, q_counts, tag)
        kg, vg = seq_to_heads(torch.cat([k, v], dim=-1), group, kv_counts, tag).split(d, dim=-1)
    o = attention(qg, kg, vg, scale, backend, dropout_p)  # [F, N, h/P, d]
    counts = list(q_counts) if q_counts is not None else [nq] * (h // qg.shape[2])
    return heads_to_seq(o, group, counts, tag)


def sp_self_attention(attn: nn.Module, x: torch.Tensor, group, counts: Optional[Sequence[int]] = None,
                      backend: str = "auto") -> torch.Tensor:
    """MHSA of a host attention module over the tokens of all SP ranks; ``x [F, n_r, C]`` -> ``[F, n_r, C]``.

    ``counts[j]`` is how many tokens rank ``j`` holds (pruning makes them differ in rare edge cases).
    """
    q, k, v = qkv_heads(attn, x)
    o = sp_attention(q, k, v, group, attn.scale, backend, attn_dropout(attn), counts, counts, "self_attn")
    return output_projection(attn, o)
