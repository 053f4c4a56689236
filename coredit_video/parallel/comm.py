"""Differentiable collectives for sequence parallelism, with a meter for the bytes they send.

Layouts (``F`` frames, ``n`` local tokens, ``h`` heads, ``e`` per-head features, ``P`` SP size):

- :func:`seq_to_heads`: ``[F, n_r, h, e]`` on rank ``r`` -> ``[F, sum(n), h/P, e]`` (gather the
  sequence, scatter the heads). Token counts ``n_0..n_{P-1}`` may differ between ranks.
- :func:`heads_to_seq`: its inverse, ``[F, sum(n), h/P, e]`` -> ``[F, n_r, h, e]``.
- :func:`split_seq` / :func:`gather_seq`: cut a tensor into this rank's contiguous slice along a
  dimension and put it back, with MagicDrive-V2's gradient scaling (``split``: gradient gathered
  and scaled by ``1/P``; ``gather``: gradient sliced and scaled by ``P``), so that averaging
  gradients over all ranks (DP x SP) gives the single-process gradient.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist


class CommMeter:
    """Counts what this process puts on the wire (bytes of send buffers, minus its own share)."""

    def __init__(self):
        self.calls = 0
        self.bytes_sent = 0
        self.elements_sent = 0
        self.by_tag: Dict[str, int] = {}  # elements sent per call site ("self_attn", "cross_view", ...)
        self.seconds = 0.0  # wall time inside the all-to-alls (CUDA synchronised when on GPU)

    def add(self, elements: int, element_size: int, tag: str = "") -> None:
        self.calls += 1
        self.elements_sent += int(elements)
        self.bytes_sent += int(elements) * int(element_size)
        self.by_tag[tag] = self.by_tag.get(tag, 0) + int(elements)


_METERS: List[CommMeter] = []


@contextlib.contextmanager
def measure_comm():
    """``with measure_comm() as m: ...`` records every all-to-all in the block (forward and backward)."""
    meter = CommMeter()
    _METERS.append(meter)
    try:
        yield meter
    finally:
        _METERS.remove(meter)


def _record(send_splits: Sequence[int], self_index: int, element_size: int, tag: str) -> None:
    if _METERS:
        n = sum(send_splits) - send_splits[self_index]
        for m in _METERS:
            m.add(n, element_size, tag)


def _all_to_all_flat(send: torch.Tensor, send_splits: List[int], recv_splits: List[int], group,
                     tag: str) -> torch.Tensor:
    _record(send_splits, dist.get_rank(group), send.element_size(), tag)
    recv = send.new_empty(sum(recv_splits))
    if not _METERS:
        dist.all_to_all_single(recv, send.contiguous(), recv_splits, send_splits, group=group)
        return recv
    sync = torch.cuda.synchronize if send.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    dist.all_to_all_single(recv, send.contiguous(), recv_splits, send_splits, group=group)
    sync()
    for m in _METERS:
        m.seconds += time.perf_counter() - t0
    return recv


def _seq_to_heads(x: torch.Tensor, counts: List[int], group, tag: str) -> torch.Tensor:
    P = len(counts)
    F, n, h, e = x.shape
    hs = h // P
    send = x.reshape(F, n, P, hs, e).permute(2, 0, 1, 3, 4).reshape(-1)  # [P, F, n, hs, e]
    per = F * hs * e
    recv = _all_to_all_flat(send, [per * n] * P, [per * c for c in counts], group, tag)
    parts = recv.split([per * c for c in counts])
    return torch.cat([p.view(F, c, hs, e) for p, c in zip(parts, counts)], dim=1)


def _heads_to_seq(y: torch.Tensor, counts: List[int], group, tag: str) -> torch.Tensor:
    P, r = len(counts), dist.get_rank(group)
    F, _, hs, e = y.shape
    n = counts[r]
    per = F * hs * e
    send = torch.cat([p.reshape(-1) for p in y.split(counts, dim=1)])
    recv = _all_to_all_flat(send, [per * c for c in counts], [per * n] * P, group, tag)
    return recv.view(P, F, n, hs, e).permute(1, 2, 0, 3, 4).reshape(F, n, P * hs, e)


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, counts, group, tag):
        ctx.counts, ctx.group, ctx.tag = counts, group, tag
        return _seq_to_heads(x, counts, group, tag)

    @staticmethod
    def backward(ctx, g):
        return _heads_to_seq(g.contiguous(), ctx.counts, ctx.group, ctx.tag), None, None, None


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, counts, group, tag):
        ctx.counts, ctx.group, ctx.tag = counts, group, tag
        return _heads_to_seq(y, counts, group, tag)

    @staticmethod
    def backward(ctx, g):
        return _seq_to_heads(g.contiguous(), ctx.counts, ctx.group, ctx.tag), None, None, None


def _check_counts(x: torch.Tensor, counts: Optional[Sequence[int]], group, seq_len: int) -> List[int]:
    P = dist.get_world_size(group)
    if x.dim() != 4:
        raise ValueError(f"expected [F, n, heads, features], got {tuple(x.shape)}")
    if x.shape[2] % P:
        raise ValueError(f"{x.shape[2]} heads do not divide by the SP size {P}; use a head count divisible by {P}")
    counts = [seq_len] * P if counts is None else [int(c) for c in counts]
    if len(counts) != P:
        raise ValueError(f"got {len(counts)} token counts for an SP group of {P} ranks")
    return counts


def seq_to_heads(x: torch.Tensor, group, counts: Optional[Sequence[int]] = None, tag: str = "") -> torch.Tensor:
    """``[F, n_r, h, e]`` -> ``[F, sum(counts), h/P, e]``; ``counts[j]`` = tokens rank ``j`` holds
    (all equal to ``n_r`` when ``None``). Differentiable; the backward is :func:`heads_to_seq`."""
    counts = _check_counts(x, counts, group, x.shape[1])
    if counts[dist.get_rank(group)] != x.shape[1]:
        raise ValueError(f"this rank holds {x.shape[1]} tokens but counts say {counts}")
    return _SeqToHeads.apply(x, counts, group, tag)


def heads_to_seq(y: torch.Tensor, group, counts: Sequence[int], tag: str = "") -> torch.Tensor:
    """Inverse of :func:`seq_to_heads`: ``[F, sum(counts), h/P, e]`` -> ``[F, counts[rank], h, e]``."""
    counts = [int(c) for c in counts]
    if y.dim() != 4 or y.shape[1] != sum(counts):
        raise ValueError(f"expected [F, {sum(counts)}, heads/P, features], got {tuple(y.shape)}")
    return _HeadsToSeq.apply(y, counts, group, tag)


# ---------------------------------------------------------------------- split / gather along S
class _Split(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        P, r = dist.get_world_size(group), dist.get_rank(group)
        return x.chunk(P, dim=dim)[r].contiguous()

    @staticmethod
    def backward(ctx, g):
        P = dist.get_world_size(ctx.group)
        return _all_gather(g, ctx.dim, ctx.group) / P, None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return _all_gather(x, dim, group)

    @staticmethod
    def backward(ctx, g):
        P, r = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return g.chunk(P, dim=ctx.dim)[r].contiguous() * P, None, None


def _all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def split_seq(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """This rank's contiguous ``1/P`` slice of ``x`` along ``dim`` (gradient: gathered, scaled 1/P)."""
    P = dist.get_world_size(group)
    if x.shape[dim] % P:
        raise ValueError(
            f"sequence length {x.shape[dim]} (dim {dim}) is not divisible by the SP size {P}; pad the "
            f"frame's token rows to a multiple of {P} (force_pad_h_for_sp_size)"
        )
    return _Split.apply(x, dim, group)


def gather_seq(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """Concatenate every rank's slice along ``dim`` (gradient: this rank's slice, scaled by P)."""
    return _Gather.apply(x, dim, group)
