"""CoReDiT pruned cross-view attention: neighbour views' keys (and the target's queries) on retained tokens.

A cross-view call is ``attn(x [F', n, C], cond [F', J*n, C])``: every query row holds one target
view-frame's ``n`` tokens, every key row the tokens of ``J`` neighbour view-frames side by side (the
built-in host: ``J = 2``, one softmax over both neighbours; MagicDrive-V2: ``J = 1``, one row per
(target, neighbour) pair, the host sums the pair outputs). :class:`ViewPairs` names the view-frame
of every row and chunk as an index into the ``F`` frames of the block's spatial self-attention
(``[B*NC*T, n, C]``, frame ``(b*NC + view)*T + t``), so a :class:`~coredit_video.methods.Selection` made for those
frames (by the self-attention, or fresh from the cross-view input) applies to any host's layout.

Modes (prune config ``cross_view``):

- ``"kv"``: keys and values from each neighbour frame's retained tokens only; every query attends.
- ``"qkv"``: queries from the target's retained tokens too; the skipped outputs are rebuilt with the
  coherence-weighted reconstruction (after the output projection: it is affine and the
  reconstruction a convex combination, so the order does not matter), or the method's own restoration rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from .backends import attention, attn_dropout, output_projection, split_qkv_heads
from ..kernels import reconstruct
from ..methods.base import Selection
from ..ops.selection import BlockLayout, gather_tokens

# attend(q, k, v, q_pruned) -> o; all [rows, tokens, heads, head_dim]
CrossViewAttend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
# restore(y_keep [F', n-K, C], x [F', n, C], selection of the query rows) -> [F', n, C]
Restore = Callable[[torch.Tensor, torch.Tensor, Selection], torch.Tensor]


@dataclass(frozen=True)
class ViewPairs:
    """Which self-attention frame every row of a cross-view call reads.

    ``q [F']``: frame of each query row; ``kv [F', J]``: frame of each of the ``J`` chunks of its key
    row; ``first [F]``: one query row holding each frame (the rows a fresh score reads).
    """

    q: torch.Tensor
    kv: torch.Tensor
    first: torch.Tensor

    @classmethod
    def build(cls, q: torch.Tensor, kv: torch.Tensor, frames: int) -> ViewPairs:
        q, kv = q.long(), kv.long().view(q.shape[0], -1)
        first = torch.full((frames,), -1, dtype=torch.long, device=q.device)
        rows = torch.arange(q.shape[0], device=q.device)
        first.scatter_reduce_(0, q, rows, reduce="amin", include_self=False)
        if bool((first < 0).any()):
            raise ValueError(f"cross-view rows cover {int((first >= 0).sum())} of {frames} view-frames as targets; "
                             "every view must be some row's target")
        return cls(q, kv, first)


def local_cross_view_attend(attn: nn.Module, backend: str = "auto") -> CrossViewAttend:
    """Attention on this process's rows (no sequence parallelism)."""
    return lambda q, k, v, q_pruned: attention(q, k, v, attn.scale, backend, attn_dropout(attn))


def neighbour_keep(sel: Selection, pairs: ViewPairs, n: int) -> torch.Tensor:
    """``[F', J*R]`` indices into the key rows ``[F', J*n, C]`` of every neighbour chunk's retained tokens."""
    J = pairs.kv.shape[1]
    idx = sel.keep[pairs.kv]  # [F', J, R]
    idx = idx + torch.arange(J, device=idx.device).view(1, J, 1) * n
    return idx.reshape(idx.shape[0], -1)


def pruned_cross_view_attention(
    attn: nn.Module,
    x: torch.Tensor,
    cond: torch.Tensor,
    pairs: ViewPairs,
    sel: Selection,
    mode: str,
    hw,
    layout: BlockLayout,
    bands: int = 1,
    attend: Optional[CrossViewAttend] = None,
    restore: Optional[Restore] = None,
) -> torch.Tensor:
    """Cross-view attention of ``x [F', n, C]`` to ``cond [F', J*n, C]`` on the tokens ``sel`` retained.

    ``sel`` indexes the ``F`` self-attention frames (``[F, n-K]``); ``hw`` / ``layout`` / ``bands`` are the
    frame geometry of this process's ``n`` tokens (as for the self-attention). ``attend(q, k, v, q_pruned)``
    runs the softmax attention (default: local; sequence parallelism passes one over the all-to-all).
    ``restore(y_keep, x, sel_q)`` rebuilds the skipped query rows in ``qkv`` mode (default: eq. 3).
    Returns ``[F', n, C]``.
    """
    if mode not in ("kv", "qkv"):
        raise ValueError(f"pruned cross-view mode must be 'kv' or 'qkv', got {mode!r}")
    n = x.shape[1]
    if cond.shape[0] != x.shape[0] or cond.shape[1] != pairs.kv.shape[1] * n:
        raise ValueError(f"cross-view keys {tuple(cond.shape)} are not {pairs.kv.shape[1]} neighbour frames of "
                         f"{n} tokens for each of the {x.shape[0]} query rows")
    attend = attend or local_cross_view_attend(attn)
    cond_keep = gather_tokens(cond, neighbour_keep(sel, pairs, n))
    if mode == "kv":
        q, k, v = split_qkv_heads(attn, x, cond_keep)
        return output_projection(attn, attend(q, k, v, False))
    q_keep = sel.keep[pairs.q]
    q, k, v = split_qkv_heads(attn, gather_tokens(x, q_keep), cond_keep)
    y_keep = output_projection(attn, attend(q, k, v, True))
    sel_q = Selection(q_keep, sel.skip[pairs.q], sel.sc[pairs.q])
    if restore is not None:
        return restore(y_keep, x, sel_q)
    return reconstruct(y_keep, q_keep, sel_q.skip, sel_q.sc, hw, layout.grid, layout.subgrid, bands)
