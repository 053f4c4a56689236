"""CoReDiT pruned self-attention: score, select, attend on retained tokens only, reconstruct.

Data flow for one frame batch ``x [F, N, C]`` (``F`` = batch x views x frames, ``N = H*W``):

1. ``sc = spatial_coherence(x)``                  ``[F, N]`` float32
2. ``keep, skip = select_tokens(sc)``             ``[F, N-K]``, ``[F, K]``
3. ``x_keep = x[keep]``                           ``[F, N-K, C]``
4. ``y_keep = proj(MHSA(qkv(x_keep)))``           ``[F, N-K, C]`` (only retained tokens)
5. ``y = reconstruct(y_keep, keep, skip, sc)``    ``[F, N, C]``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..ops import band_budgets, select_tokens
from .baselines import bipartite_merge, random_scores, scatter_rows
from .dense import dense_self_attention
from .dispatch import reconstruct, spatial_coherence


@dataclass(frozen=True)
class BlockLayout:
    """Per-block pruning geometry: ordinal ``l`` in the plan, grid and sub-grid, m-stride."""

    ordinal: int
    grid: Tuple[int, int]
    subgrid: Tuple[int, int]
    stride: int


@dataclass(frozen=True)
class Selection:
    """The tokens one block retained: ``keep [F, N-K]``, ``skip [F, K]`` int64 and the scores ``sc [F, N]``
    they were chosen by (float32; reconstruction weights). ``F`` and ``N`` are this rank's frames and tokens."""

    keep: torch.Tensor
    skip: torch.Tensor
    sc: torch.Tensor


def choose_tokens(x: torch.Tensor, hw: Tuple[int, int], ratio: float, layout: BlockLayout, bands: int = 1,
                  on_scores: Optional[Callable[[torch.Tensor], None]] = None,
                  budgets: Optional[Sequence[int]] = None, method: str = "coredit") -> Optional[Selection]:
    """Score ``x [F, N, C]`` and pick the retained tokens; ``None`` when the budget is 0 (dense).

    ``budgets``: per-band skip counts when the caller already has them (:func:`band_budgets`).
    ``method="random"``: the random-selection baseline picks the tokens (scores still weight reconstruction)."""
    K = sum(budgets if budgets is not None else band_budgets(hw, ratio, layout.stride, layout.ordinal, bands))
    if K == 0 and on_scores is None:
        return None
    sc = spatial_coherence(x, hw, layout.grid, bands)
    if on_scores is not None:
        on_scores(sc.detach())
    if K == 0:
        return None
    select_by = random_scores(x, layout.ordinal) if method == "random" else sc.detach()
    keep, skip = select_tokens(select_by, hw, ratio, layout.stride, layout.ordinal, bands)
    return Selection(keep, skip, sc)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [F, N, C]``, ``idx [F, n]`` -> ``[F, n, C]`` (contiguous).

    One row gather over the flattened frames (``index_select``: whole rows, one index per row), not an
    element-wise ``gather`` with an expanded index."""
    Fr, N, C = x.shape
    flat = (idx + torch.arange(Fr, device=idx.device).view(Fr, 1) * N).reshape(-1)
    return x.reshape(Fr * N, C).index_select(0, flat).view(Fr, idx.shape[1], C)


def pruned_self_attention(
    attn: nn.Module,
    x: torch.Tensor,
    hw: Tuple[int, int],
    ratio: float,
    layout: BlockLayout,
    bands: int = 1,
    backend: str = "auto",
    attend: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
    on_scores: Optional[Callable[[torch.Tensor], None]] = None,
    on_select: Optional[Callable[[Optional[Selection]], None]] = None,
    budgets: Optional[Sequence[int]] = None,
    method: str = "coredit",
) -> torch.Tensor:
    """Self-attention of ``x [F, N, C]`` with the ``ratio`` most coherent tokens skipped.

    ``attend(attn, x_keep) -> y_keep`` computes MHSA on retained tokens (default: local dense
    attention; sequence parallelism passes one that crosses the all-to-all). ``on_scores(sc)``
    receives the detached ``[F, N]`` scores (for schedule statistics); ``on_select(selection)`` the
    retained set (``None`` when dense), which the block's cross-view attention may reuse. Ratio 0 runs
    the dense attention on all tokens with no scoring. ``method`` other than ``"coredit"`` swaps in a
    baseline of the quality study at the same budget (:mod:`.baselines`).
    """
    if x.dim() != 3:
        raise ValueError(f"self-attention input must be [F, N, C], got {tuple(x.shape)}")
    attend = attend or (lambda a, t: dense_self_attention(a, t, backend))
    if method == "tome":
        K = sum(budgets if budgets is not None else band_budgets(hw, ratio, layout.stride, layout.ordinal, bands))
        if on_scores is not None:
            on_scores(spatial_coherence(x, hw, layout.grid, bands).detach())
        if K == 0:
            return attend(attn, x)
        merged, unmerge = bipartite_merge(x, hw, K)
        return unmerge(attend(attn, merged))
    sel = choose_tokens(x, hw, ratio, layout, bands, on_scores, budgets, method)
    if on_select is not None:
        on_select(sel)
    if sel is None:
        return attend(attn, x)
    y_keep = attend(attn, gather_tokens(x, sel.keep))
    if method == "no_reconstruction":
        return scatter_rows(y_keep, sel.keep, x.shape[1])
    return reconstruct(y_keep, sel.keep, sel.skip, sel.sc, hw, layout.grid, layout.subgrid, bands)
