"""Block scope (``prune.scope="block"``): a prunable spatial block runs its own, unchanged forward on the retained
tokens of every view-frame, and the skipped tokens receive a block residual rebuilt from retained neighbours.

Every frame keeps the same number of tokens (budgets depend on the ratio, not on the content), so the block sees an
ordinary batch ``[B*NC, T*S', C]`` with ``S' = N - K``: its self-attention, cross-attention, cross-view attention and
MLP all run on ``S'`` tokens per view-frame (cross-view pairs the views as before; the positional embedding was added
before the blocks). Selection is made once per block from the block input ``x`` (same scores, bands, m-stride,
schedule and late-step decay as attention scope). The block runs on the method's reduced tokens (the retained tokens'
inputs; for ``coredit_merge`` the size-weighted averages of each retained token and the skipped tokens merged into it,
without proportional attention: the block's own attention takes no bias, as in tomesd). The skipped tokens' residual
``block(x) - x`` is rebuilt by the method's restoration rule (eq. 3 for ``coredit``, the target's residual for
``coredit_copy`` / ``coredit_merge``) from the retained tokens' residuals ``block(x_reduced) - x_reduced``.

The adapter says where a block's arguments sit (:attr:`~coredit_video.adapters.base.HostAdapter.block_args`:
positions and names of ``x``, ``T`` and ``S``); nothing of the block's code changes. A block that returns a tuple
(MagicDrive-V2's control blocks return ``(x, after_proj(x))``) needs ``block_args["derived"] = (1, name)``: element
0 is the block output (its residual rebuilt as above) and element 1 is ``block.<name>`` of it, recomputed on the
rebuilt output so that every token keeps ``out[1] == block.<name>(out[0])``.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn

from .attention.pruned import call_scores, reduce_call
from .patched_attention import call_on_rank, sp_size_of
from .methods import Reduced, Selection, gather_tokens
from .step_cache import (captured_branches, full_context_attention, full_context_cross_view, regate, split_gated,
                         stale_first_selection)


def _get(args: tuple, kwargs: dict, where: Tuple[int, str]):
    i, k = where
    return args[i] if len(args) > i else kwargs[k]


def _set(args: tuple, kwargs: dict, where: Tuple[int, str], value) -> Tuple[tuple, dict]:
    i, k = where
    if len(args) > i:
        return args[:i] + (value,) + args[i + 1:], kwargs
    return args, dict(kwargs, **{k: value})


def run_block_scope(controller, ordinal: int, block: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Block ``ordinal`` on its retained tokens; ``x [B*NC, T*S, C]`` -> ``[B*NC, T*S, C]``."""
    spec = controller.adapter.block_args
    x, T = _get(args, kwargs, spec["x"]), int(_get(args, kwargs, spec["T"]))
    BN, L, C = x.shape
    S = L // T
    frames = x.reshape(BN * T, S, C)
    call = call_on_rank(controller, ordinal, frames, "block")
    geo, method = call.geo, controller.method
    forward = type(block).forward
    cache = controller.step_cache
    slot = call.ctx.slot if cache is not None else None
    entry = cache.get(slot, ordinal, frames) if slot is not None else None
    stale_first = geo.skipped > 0 and entry is not None  # the cache's selection reads the scores too
    sc = call_scores(frames, geo, method, stats=controller.collecting_stats, needed=stale_first)
    if controller.collecting_stats:
        controller.record_scores(ordinal, sc.detach(), geo, sp_size_of(controller.sp_group))
    cfg = controller.cfg
    gated = slot is not None and cfg.cache_form == "gated"
    every = slot is not None and cfg.cache_context != "retained"
    cross_view = controller.full_context_cross_views.get(ordinal) if slot is not None else None
    if cross_view is not None and call.ctx.views is None:
        raise RuntimeError(f"{controller.names[ordinal]}: cache_context='all' needs the views of this forward "
                           "(ForwardContext.views), which the adapter did not describe; use cache_context='self'")
    names = controller.adapter.gated_branches
    gates = controller.adapter.block_gates(block, args, kwargs) if gated else None
    attn = controller.modules[ordinal]
    if geo.skipped == 0:
        with (captured_branches(block, names) if gated else nullcontext({})) as got, \
                (full_context_attention(attn, None, None) if every else nullcontext({})) as seen, \
                (full_context_cross_view(cross_view, call.ctx.views, None, None) if cross_view is not None
                 else nullcontext({})) as seen_cv:
            out = forward(block, *args, **kwargs)
        if slot is not None:  # a dense step fills the cache with every token's residual
            first = out[0] if isinstance(out, (tuple, list)) else out
            residual = (first.reshape(BN * T, S, C) - frames).detach()
            parts = split_gated(residual, {k: v.detach() for k, v in got.items()}, names, gates, T) if gated else None
            cache.record(slot, ordinal, None, frames, residual, None, cfg.cache_select, parts, seen.get("inputs"),
                         seen_cv.get("inputs"))
        return out
    if call.counts is not None and len(set(call.counts)) > 1:
        raise ValueError(f"{controller.names[ordinal]}: block scope under sequence parallelism needs equal retained "
                         f"counts on every rank, got {call.counts}; lower the ratio (or use scope='attention')")
    if entry is not None:  # the cache replaces the method's restoration: the freshest tokens skip, the stalest run
        change = None
        if entry.inputs is not None:  # relative move of each token's input since it was last computed
            change = (frames - entry.inputs).norm(dim=-1) / entry.inputs.norm(dim=-1).clamp_min(1e-6)
        keep, skip = stale_first_selection(
            sc, entry.age, geo.hw, geo.budgets, geo.layout.stride, geo.layout.ordinal + call.ctx.step, geo.bands,
            cfg.max_stale, cfg.cache_select, seed=(call.ctx.step * 131 + ordinal) * 7 + slot,
            group=controller.sp_group if call.counts is not None else None, change=change)
        sel, red = Selection(keep, skip, sc), Reduced(gather_tokens(frames, keep))
    else:
        sel, red = reduce_call(frames, geo, method, sc)
    if red.kv is not None:
        raise ValueError(f"prune.method={method.name!r} gives keys and values apart from its queries (Reduced.kv); "
                         "in block scope the whole block runs on one token set (Reduced.q): its class must set "
                         "supports_block_scope = False")
    kept = red.q  # [BN*T, S', C]
    R = kept.shape[1]
    args, kwargs = _set(args, kwargs, spec["x"], kept.reshape(BN, T * R, C))
    args, kwargs = _set(args, kwargs, spec["S"], R)
    context = entry.attn_inputs if (every and entry is not None) else None
    cv_context = entry.cross_view_inputs if (cross_view is not None and entry is not None) else None
    with (captured_branches(block, names) if gated else nullcontext({})) as got, \
            (full_context_attention(attn, context, sel.keep, cfg.backend) if context is not None
             else nullcontext({})) as seen, \
            (full_context_cross_view(cross_view, call.ctx.views, cv_context, sel.keep) if cv_context is not None
             else nullcontext({})) as seen_cv:
        out = forward(block, *args, **kwargs)
    derived = None
    if isinstance(out, (tuple, list)):
        derived = spec.get("derived")
        if derived is None or len(out) != 2 or derived[0] != 1:
            raise ValueError(f"{controller.names[ordinal]}: the block returns {len(out)} outputs; block scope rebuilds "
                             "the first and needs the adapter's block_args['derived'] = (1, name) for the other "
                             "(output 1 = block.<name>(output 0)); use scope='attention'")
        out = out[0]
    out_kept = out.reshape(BN * T, R, C)
    idx = sel.keep.unsqueeze(-1).expand(-1, -1, C)
    if entry is not None:
        # the computed tokens' new residuals over the cache (gradients reach them; cached rows are constants)
        residual = regate(entry, gates, T).to(out_kept.dtype).scatter(1, idx, out_kept - kept)
    else:
        residual = method.restore(out_kept - kept, frames, sel, red, geo)  # [BN*T, S, C]
    if slot is not None:
        parts = None
        if gated:
            parts = split_gated((out_kept - kept).detach(), {k: v.detach() for k, v in got.items()}, names, gates, T)
        cache.record(slot, ordinal, entry, frames, residual, sel.keep, cfg.cache_select, parts, seen.get("inputs"),
                     seen_cv.get("inputs"))
    full = (frames + residual).reshape(BN, L, C)
    if derived is None:
        return full
    return full, getattr(block, derived[1])(full)


@dataclass(eq=False)
class BlockScopePatch:
    """The instance-level ``forward`` of one prunable spatial block in block scope (the block's own signature)."""

    controller: object
    ordinal: int
    block: nn.Module

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return run_block_scope(self.controller, self.ordinal, self.block, args, kwargs)
