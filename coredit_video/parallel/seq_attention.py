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
                 kv_counts: Optional[Sequence[int]] = None, tag: str = "attn",
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``q [F, nq, h, d]``, ``k, v [F, nk, h, d]`` (this rank's tokens) -> ``[F, nq, h, d]``.

    ``q_counts`` / ``kv_counts``: query / key tokens held by each SP rank (``None``: all equal).
    Self-attention (same tensor counts) sends q, k and v in one all-to-all. ``bias [F, nk]``: this rank's keys'
    logit bias (proportional attention; a constant), gathered over the ranks like the keys.
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
    if bias is not None:  # every rank needs the whole sequence's bias: the same all-to-all as the keys, one "head" each
        P = h // qg.shape[2]
        bias = seq_to_heads(bias.detach()[:, :, None, None].expand(F, bias.shape[1], P, 1).contiguous(), group,
                            kv_counts, f"{tag}_bias")[:, :, 0, 0]
    o = attention(qg, kg, vg, scale, backend, dropout_p, bias)  # [F, N, h/P, d]
    counts = list(q_counts) if q_counts is not None else [nq] * (h // qg.shape[2])
    return heads_to_seq(o, group, counts, tag)


def sp_self_attention(attn: nn.Module, x: torch.Tensor, group, counts: Optional[Sequence[int]] = None,
                      backend: str = "auto", bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MHSA of a host attention module over the tokens of all SP ranks; ``x [F, n_r, C]`` -> ``[F, n_r, C]``.

    ``counts[j]`` is how many tokens rank ``j`` holds (pruning makes them differ in rare edge cases); ``bias
    [F, n_r]`` this rank's keys' logit bias (``coredit_merge``'s proportional attention).
    """
    q, k, v = qkv_heads(attn, x)
    o = sp_attention(q, k, v, group, attn.scale, backend, attn_dropout(attn), counts, counts, "self_attn", bias)
    return output_projection(attn, o)
