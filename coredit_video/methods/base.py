"""What a token-reduction method is: how one spatial self-attention call selects, reduces, attends and restores.

A method is a :class:`TokenReducer` registered by name (:mod:`coredit_video.methods`). The core
(:func:`coredit_video.attention.pruned.pruned_self_attention`) runs every method the same way, on ``x [F, N, C]``
(``F`` = batch x views x frames on this rank, ``N`` = this rank's tokens of a frame):

1. ``choice = method.select(x, geo, sc)`` what to drop or merge
2. ``red = method.reduce(x, choice, geo)`` what attention sees: queries, and keys/values when they differ
3. ``y = attend(attn, red)``              the host's MHSA on the reduced tokens (local or over SP)
4. ``out = method.restore(y, x, choice, red, geo)``  ``[F, N, C]``

``sc [F, N]`` (float32) are the spatial-coherence scores, computed by the core only when the method uses them
(:attr:`TokenReducer.uses_scores`) or the schedule records statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from ..ops.selection import BlockLayout, CallGeometry, gather_tokens, scatter_rows  # noqa: F401 (the method API)


@dataclass(frozen=True)
class Selection:
    """The tokens one block retained: ``keep [F, N-K]``, ``skip [F, K]`` int64 and the scores ``sc [F, N]``
    they were chosen by (float32; reconstruction weights). ``F`` and ``N`` are this rank's frames and tokens."""

    keep: torch.Tensor
    skip: torch.Tensor
    sc: torch.Tensor


@dataclass
class Reduced:
    """What attention runs on. ``q [F, Nq, C]``: the query tokens; ``kv [F, Nk, C]``: the key / value tokens
    (``None``: the queries'); ``log_size [F, Nk]``: added to every query's logit of each key (ToMe's proportional
    attention; ``None``: no bias); ``state``: whatever the method's ``restore`` needs. Under sequence parallelism
    and in block scope one token set travels, ``q`` (block scope also drops ``log_size``: the block's own attention
    takes no bias), so a method that sets ``kv`` must declare ``supports_sp = False`` and ``supports_block_scope =
    False``; a call that breaks this raises."""

    q: torch.Tensor
    kv: Optional[torch.Tensor] = None
    log_size: Optional[torch.Tensor] = None
    state: Any = None


@dataclass
class AttentionResult:
    """What :func:`~coredit_video.attention.pruned.pruned_self_attention` returns: the output ``out [F, N, C]``,
    the CoReDiT ``selection`` it used (``None`` when dense or when the method has none), and the detached scores
    ``scores [F, N]`` when they were computed (schedule statistics)."""

    out: torch.Tensor
    selection: Optional[Selection] = None
    scores: Optional[torch.Tensor] = None


class TokenReducer:
    """One token-reduction method. Subclass, set the class attributes, implement the three steps, and register it
    with :func:`coredit_video.methods.register`.

    ``uses_scores``: ``select`` / ``restore`` read the coherence scores. ``supports_sp``: runs under sequence
    parallelism (its reduced queries and keys are equal per-rank counts of each rank's own bands).
    ``supports_cross_view``: its choice is a CoReDiT :class:`Selection` the block's cross-view attention may reuse.
    ``supports_block_scope``: its ``restore`` can rebuild a whole block's residual. ``trainable``: gradients
    reach the host's weights through it (a fine-tuning config naming a method that sets it ``False`` is refused).
    ``options``: the config fields its constructor takes. ``kv_only``: it reduces the keys and values only (every
    query attends). ``block_residual``: in block scope the skipped tokens
    receive a rebuilt residual (``False``: they are routed around the block).

    Its cost lives here too (``coredit_video.flops`` asks, per frame of one prunable block, FLOPs):
    :meth:`removed_tokens`, :meth:`restoration_cost` and :meth:`overhead_cost`. A subclass that changes how it
    reduces or restores overrides the matching one.
    """

    name: str = ""
    options: Tuple[str, ...] = ()  # PruneConfig fields passed to the constructor
    uses_scores: bool = True
    supports_sp: bool = True
    supports_cross_view: bool = False
    supports_block_scope: bool = False
    trainable: bool = True
    kv_only: bool = False
    block_residual: bool = True

    def select(self, x: torch.Tensor, geo: CallGeometry, sc: Optional[torch.Tensor]) -> Any:
        raise NotImplementedError

    def reduce(self, x: torch.Tensor, choice: Any, geo: CallGeometry) -> Reduced:
        raise NotImplementedError

    def restore(self, y: torch.Tensor, x: torch.Tensor, choice: Any, red: Reduced, geo: CallGeometry) -> torch.Tensor:
        raise NotImplementedError

    def restore_cross_view(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, geo: CallGeometry) -> torch.Tensor:
        """The outputs ``[F, N, C]`` of a cross-view call that reused this method's self-attention selection ``sel``
        (``supports_cross_view``): ``y`` holds the retained queries' outputs; the method reduced nothing for this call.
        The default is the method's own ``restore`` with no reduction (rules that do not read one)."""
        return self.restore(y, x, sel, None, geo)

    # ------------------------------------------------------------------ cost (FLOPs per frame and block)
    def removed_tokens(self, hw: Tuple[int, int], skipped: int) -> int:
        """Tokens (keys for a ``kv_only`` method) removed from a frame of ``hw`` for a CoReDiT budget of
        ``skipped``."""
        return skipped

    def restoration_cost(self, n: int, skipped: int, C: int, candidates: int, heads: int,
                         bias: bool = True) -> Dict[str, int]:
        """The rule that rebuilds the ``skipped`` of ``n`` tokens (attention outputs, or block residuals in block
        scope), by named term. ``candidates``: the sub-grid cell size ``sh*sw``; ``bias``: attention scope (a merge
        adds ``log(size)`` to its logits there)."""
        raise ValueError(f"method {self.name!r} has no restoration rule (no block scope)")

    def overhead_cost(self, hw: Tuple[int, int], skipped: int, C: int, candidates: int, heads: int,
                      scope: str = "attention") -> Dict[str, int]:
        """The method's own work on a frame of ``hw`` tokens with ``skipped`` removed (after
        :meth:`removed_tokens`), by named term; empty when nothing is removed. This default is the CoReDiT family's:
        scoring, and in block scope the gather of the block input and the residual, then the restoration."""
        from .. import flops as F

        n = hw[0] * hw[1]
        if not skipped:
            return {}
        terms = {"scoring": F.scoring_flops(n, C)} if self.uses_scores else {}
        if self.kv_only:
            return terms
        if scope == "block":
            terms["gather"] = F.gather_flops(n - skipped, C)
            if self.block_residual:
                terms["residual"] = F.residual_flops(n, C)
        terms.update(self.restoration_cost(n, skipped, C, candidates, heads, bias=scope == "attention"))
        return terms

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
