"""The core of a reduced spatial self-attention: any registered method, one path, no branch on its name.

For ``x [F, N, C]`` (``F`` = batch x views x frames, ``N = H*W`` of this rank):

1. ``sc = spatial_coherence(x)``            ``[F, N]`` float32, when the method or the statistics need it
2. ``choice = method.select(x, geo, sc)``   e.g. CoReDiT's ``keep [F, N-K]`` / ``skip [F, K]``
3. ``red = method.reduce(x, choice, geo)``  e.g. ``x[keep]`` ``[F, N-K, C]``
4. ``y = attend(attn, red)``                ``proj(MHSA(qkv(.)))`` on the reduced tokens only
5. ``out = method.restore(y, x, choice, red, geo)``  ``[F, N, C]``, e.g. eq. 3

It returns what the caller needs (:class:`~coredit_video.methods.AttentionResult`) and calls nothing back. Steps 1-3
are :func:`call_scores` and :func:`reduce_call`, which block scope (:mod:`coredit_video.block_scope`) and the
cross-view attention's own selection run too: scoring happens here only.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .. import kernels
from ..methods import DEFAULT_METHOD, AttentionResult, BlockLayout, CallGeometry, Reduced, TokenReducer, build_method
from .backends import dense_self_attention

# attend(attn, reduced) -> [F, Nq, C]: the host's MHSA on the reduced tokens
SelfAttend = Callable[[nn.Module, Reduced], torch.Tensor]


def local_attend(backend: str = "auto") -> SelfAttend:
    """MHSA on this process's tokens (no sequence parallelism)."""
    return lambda attn, red: dense_self_attention(attn, red.q, backend, red.kv, red.log_size)


def call_scores(x: torch.Tensor, geo: CallGeometry, method: TokenReducer, stats: bool = False,
                needed: bool = False) -> Optional[torch.Tensor]:
    """Step 1: ``sc [F, N]`` float32 for ``x [F, N, C]``, when the schedule's statistics ask (``stats``, also at
    ratio 0), the method reads them on a call that skips, or the caller needs them (``needed``); else ``None``."""
    if stats or needed or (geo.skipped and method.uses_scores):
        return kernels.spatial_coherence(x, geo.hw, geo.layout.grid, geo.bands)
    return None


def reduce_call(x: torch.Tensor, geo: CallGeometry, method: TokenReducer,
                sc: Optional[torch.Tensor]) -> Tuple[Any, Reduced]:
    """Steps 2-3 on a call that skips: the method's choice for ``x [F, N, C]`` (what it drops or merges) and what
    attention (or, in block scope, the whole block) runs on."""
    choice = method.select(x, geo, sc)
    return choice, method.reduce(x, choice, geo)


def pruned_self_attention(
    attn: nn.Module,
    x: torch.Tensor,
    hw: Tuple[int, int],
    ratio: float,
    layout: BlockLayout,
    bands: int = 1,
    backend: str = "auto",
    attend: Optional[SelfAttend] = None,
    budgets: Optional[Sequence[int]] = None,
    method: Union[str, TokenReducer] = DEFAULT_METHOD,
    scores: bool = False,
) -> AttentionResult:
    """Self-attention of ``x [F, N, C]`` with a ``ratio`` of each band's tokens reduced by ``method``.

    ``attend(attn, reduced)`` computes the MHSA (default :func:`local_attend`; sequence parallelism passes one
    over the all-to-all). ``budgets``: per-band skip counts when the caller has them (:func:`band_budgets`).
    ``scores``: also return the detached coherence scores (schedule statistics), even when nothing is skipped.
    A zero budget runs the dense attention on all tokens.
    """
    if x.dim() != 3:
        raise ValueError(f"self-attention input must be [F, N, C], got {tuple(x.shape)}")
    method = build_method(method) if isinstance(method, str) else method
    attend = attend or local_attend(backend)
    geo = CallGeometry.of(hw, ratio, layout, bands, budgets)
    sc = call_scores(x, geo, method, stats=scores)
    stats = sc.detach() if scores else None
    if geo.skipped == 0:
        return AttentionResult(attend(attn, Reduced(x)), None, stats)
    choice, red = reduce_call(x, geo, method, sc)
    out = method.restore(attend(attn, red), x, choice, red, geo)
    return AttentionResult(out, choice if method.supports_cross_view else None, stats)
