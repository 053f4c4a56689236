"""The patched forwards and what one call of them runs: this rank's geometry, the method's reduced
self-attention (local or over sequence parallelism), and the block's pruned cross-view attention.

Each prunable attention module gets a :class:`SelfAttentionPatch` (its cross-view attention a
:class:`CrossViewPatch`) as its instance ``forward``; the patch reads the controller (ratios, phase, current
forward) and runs the attention here. Nothing under :mod:`coredit_video.attention` calls back: the result comes
back as an :class:`~coredit_video.methods.AttentionResult` and the controller files what it needs from it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from .attention import call_scores, pruned_cross_view_attention, pruned_self_attention
from .attention.backends import attn_dropout
from .attention.cross_view import CrossViewAttend, local_cross_view_attend
from .forward_context import ForwardContext
from .methods import CallGeometry
from .ops import band_budgets
from .parallel.seq_attention import sp_attention, sp_self_attention


def sp_size_of(group) -> int:
    """Ranks in a sequence-parallel process group (1 without one)."""
    return dist.get_world_size(group) if group is not None else 1


@dataclass(frozen=True)
class CallOnRank:
    """One block call on this rank: its forward's context, its geometry, and the retained tokens per frame held by
    each SP rank (``counts``; ``None`` without SP)."""

    ctx: ForwardContext
    geo: CallGeometry
    counts: Optional[List[int]]


def call_on_rank(controller, ordinal: int, x: torch.Tensor, what: str) -> CallOnRank:
    """Geometry of block ``ordinal`` for ``x [rows, tokens, C]`` in the current forward (budgets computed once per
    forward). Under SP this rank holds rows ``[rank*H/P, (rank+1)*H/P)`` of every frame, i.e. ``bands/P`` whole
    bands: selection and restoration run on them alone, the m-stride pattern shifted to stay in frame
    coordinates."""
    if not controller.hooks.bound:  # a copy whose host hooks have not run yet: take this process's SP group
        controller.hooks.rebind(controller)
    ctx = controller.context
    if ctx is None or ctx.hw is None:
        raise RuntimeError(
            f"{controller.names[ordinal]} ran before the host told its frame size; call the model's forward "
            "(the adapter hooks it) or controller.set_frame((H, W)) first"
        )
    (H, W), P = ctx.hw, sp_size_of(controller.sp_group)
    if x.dim() != 3 or x.shape[1] * P != H * W:
        share = f" (this rank's 1/{P} share: {H // P} of {H} rows)" if P > 1 else ""
        raise ValueError(
            f"{controller.names[ordinal]} {what}: expected [frames, {H * W // P} tokens{share}, C], got "
            f"{tuple(x.shape)}; the adapter's frame size does not match this block's input"
        )
    ratio, bands = controller.effective_ratio(ordinal, ctx.phase), controller.bands
    layout = controller.layouts[ordinal]
    budgets = ctx.budgets.get((ordinal, ratio))
    if budgets is None:
        budgets = ctx.budgets[(ordinal, ratio)] = band_budgets(ctx.hw, ratio, layout.stride, layout.ordinal, bands)
    if P == 1:
        return CallOnRank(ctx, CallGeometry.of(ctx.hw, ratio, layout, bands, budgets), None)
    rank, h, per_rank = dist.get_rank(controller.sp_group), H // P, bands // P
    counts = [h * W - sum(budgets[j * per_rank:(j + 1) * per_rank]) for j in range(P)]
    local = replace(layout, ordinal=layout.ordinal - rank * h)
    mine = tuple(budgets[rank * per_rank:(rank + 1) * per_rank])
    return CallOnRank(ctx, CallGeometry.of((h, W), ratio, local, per_rank, mine), counts)


def run_self_attention(controller, ordinal: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reduced self-attention of block ``ordinal`` on ``x [frames, tokens, C]``."""
    call = call_on_rank(controller, ordinal, x, "self-attention")
    geo, method, cfg = call.geo, controller.method, controller.cfg
    attend = None
    if call.counts is not None:
        if not method.supports_sp:
            raise ValueError(f"prune.method={method.name!r} runs without sequence parallelism; set "
                             "parallel.sp_size=1 or pick a method that supports it")
        group, counts = controller.sp_group, call.counts

        def attend(a: nn.Module, red) -> torch.Tensor:  # the all-to-all carries one token set per rank: red.q
            if red.kv is not None:
                raise ValueError(f"prune.method={method.name!r} gives keys and values apart from its queries "
                                 "(Reduced.kv), which sequence parallelism does not carry; its class must set "
                                 "supports_sp = False")
            return sp_self_attention(a, red.q, group, counts, cfg.backend, red.log_size)
    res = pruned_self_attention(attn, x, geo.hw, geo.ratio, geo.layout, geo.bands, cfg.backend, attend=attend,
                                budgets=geo.budgets, method=method, scores=controller.collecting_stats)
    if res.scores is not None:
        controller.record_scores(ordinal, res.scores, geo, sp_size_of(controller.sp_group))
    if ordinal in controller.cross_view_ordinals and cfg.cross_view_select == "self":
        call.ctx.retained[ordinal] = res.selection
    return res.out


def run_cross_view(controller, ordinal: int, attn: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Cross-view attention of block ``ordinal``: ``x [rows, tokens, C]`` to ``cond [rows, J*tokens, C]``, pruned as
    ``cfg.cross_view`` says; the host's own forward when nothing is skipped."""
    call = call_on_rank(controller, ordinal, x, "cross-view attention")
    geo, method = call.geo, controller.method
    if geo.skipped == 0:
        return type(attn).forward(attn, x, cond)
    pairs = call.ctx.views
    if pairs is None:
        raise RuntimeError(f"{controller.cross_view_names[0]}: the adapter did not describe the views of this "
                           "forward (ForwardContext.views); cross-view pruning needs them")
    if controller.cfg.cross_view_select == "self":
        sel = call.ctx.retained.pop(ordinal, None)
        if sel is None:
            raise RuntimeError(f"{controller.names[ordinal]}: cross-view attention ran before the block's "
                               "self-attention chose its tokens (cross_view_select='self')")
    else:
        first = x.index_select(0, pairs.first)
        sel = method.select(first, geo, call_scores(first, geo, method, needed=True))
    restore = lambda y, xq, sel_q: method.restore_cross_view(y, xq, sel_q, geo)  # noqa: E731
    return pruned_cross_view_attention(attn, x, cond, pairs, sel, controller.cfg.cross_view, geo.hw, geo.layout,
                                       geo.bands, cross_view_attend(controller, attn, call, pairs.kv.shape[1]),
                                       restore)


def cross_view_attend(controller, attn: nn.Module, call: CallOnRank, J: int) -> CrossViewAttend:
    """Softmax attention for a cross-view call: local, or over the SP all-to-all with this call's token counts."""
    if call.counts is None:
        return local_cross_view_attend(attn, controller.cfg.backend)
    group, backend, counts = controller.sp_group, controller.cfg.backend, call.counts
    kv_counts = [J * c for c in counts]

    def attend(q, k, v, q_pruned: bool):
        q_counts = counts if q_pruned else None
        return sp_attention(q, k, v, group, attn.scale, backend, attn_dropout(attn), q_counts, kv_counts,
                            tag="cross_view")

    return attend


@dataclass(eq=False)
class SelfAttentionPatch:
    """The instance-level ``forward`` of one prunable attention: ``x [frames, tokens, C]`` -> same shape."""

    controller: object
    ordinal: int
    attn: nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return run_self_attention(self.controller, self.ordinal, self.attn, x)


@dataclass(eq=False)
class CrossViewPatch(SelfAttentionPatch):
    """The instance-level ``forward`` of the cross-view attention of prunable block ``ordinal``:
    ``x [rows, tokens, C]``, ``cond [rows, J*tokens, C]`` -> ``[rows, tokens, C]``."""

    def __call__(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return run_cross_view(self.controller, self.ordinal, self.attn, x, cond)
