"""``apply(model, cfg) -> controller`` and ``remove(model)``: explicit, idempotent, undoable patches.

Each prunable attention module (and, with ``cross_view`` on, the cross-view attention of its block)
gets an instance-level ``forward`` override and a plain-Python ``_coredit`` attribute (the same
:class:`~.patched_attention.SelfAttentionPatch` / :class:`~.patched_attention.CrossViewPatch`); nothing is
registered as a parameter or buffer, so the host's state-dict keys never change. ``remove`` deletes both and the
adapter's hooks.

A patched model survives ``copy.deepcopy`` and ``torch.save`` / ``torch.load``: the patches and the
hooks the model holds are small picklable objects that reach the controller, and a copied controller
rebinds itself to its own model (adapter hooks, SP group) on first use. An EMA copied after ``apply``
therefore prunes with its own controller (``get_controller(ema)``), with its own ratios and phase.
"""
from __future__ import annotations

from typing import Any, Optional

import torch.nn as nn

from . import adapters  # noqa: F401  (registers the built-in adapters)
from .adapters.base import HostAdapter
from .config import PruneConfig
from .controller import PruningController
from .block_scope import BlockScopePatch
from .patched_attention import CrossViewPatch, SelfAttentionPatch, sp_size_of
from .registry import find_adapter

_CONTROLLER_ATTR = "_coredit_controller"


def apply(model: nn.Module, cfg: Any = None, **overrides) -> PruningController:
    """Patch the spatial self-attentions of ``model`` for CoReDiT pruning; returns the controller.

    ``cfg`` is a :class:`PruneConfig`, a dict / mmengine ``ConfigDict``, or ``None`` (defaults,
    ratio 0). Applying again replaces the previous patch (same result as one ``apply``).
    """
    cfg = PruneConfig.build(cfg, **overrides)
    remove(model)
    adapter = find_adapter(model, cfg.adapter)
    blocks = adapter.prunable_blocks(model, cfg.blocks)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no prunable blocks in groups {cfg.blocks}")
    group = adapter.sp_group(model)
    sp_size = sp_size_of(group)
    bands = cfg.bands or sp_size
    if bands % sp_size:
        raise ValueError(f"bands={bands} must be a multiple of the sequence-parallel size {sp_size}")
    for name, attn in blocks:
        if attn.num_heads % sp_size:
            raise ValueError(f"{name}: {attn.num_heads} heads do not divide by the SP size {sp_size}")
        if getattr(attn, "rope", None) not in (None, False):
            raise ValueError(f"{name}: rotary embeddings in spatial self-attention are not supported")
    if cfg.step_cache and cfg.cache_form == "gated" and type(adapter).block_gates is HostAdapter.block_gates:
        raise ValueError(f"cache_form='gated' needs the adapter's block gates, which the {type(adapter).__name__} "
                         "does not give; use cache_form='residual'")
    if cfg.cache_context != "retained" and sp_size > 1:
        raise ValueError(f"cache_context={cfg.cache_context!r} runs without sequence parallelism (each rank would "
                         "need every rank's cached keys); use cache_context='retained' or parallel.sp_size=1")
    controller = PruningController(model, cfg, adapter, blocks, bands)
    controller.sp_group = group
    if cfg.scope == "block":
        if adapter.block_args is None:
            raise ValueError(f"the {type(adapter).__name__} adapter does not describe its blocks' arguments "
                             "(block_args); use scope='attention'")
        for ordinal, block in enumerate(controller.blocks):
            block.__dict__["_coredit"] = block.__dict__["forward"] = BlockScopePatch(controller, ordinal, block)
        if cfg.step_cache and cfg.cache_context == "all":
            controller.full_context_cross_views = {
                ordinal: attn for _, attn, ordinal in adapter.cross_view_blocks(model, controller.names)}
    else:
        for ordinal, (_, attn) in enumerate(blocks):
            attn.__dict__["_coredit"] = attn.__dict__["forward"] = SelfAttentionPatch(controller, ordinal, attn)
    if cfg.cross_view != "off" and cfg.scope == "attention":
        for name, attn, ordinal in adapter.cross_view_blocks(model, controller.names):
            attn.__dict__["_coredit"] = attn.__dict__["forward"] = CrossViewPatch(controller, ordinal, attn)
            controller.cross_view_names.append(name)
            controller.cross_view_modules.append(attn)
            controller.cross_view_ordinals.add(ordinal)
    if sp_size > 1 and not controller.method.supports_sp:
        raise ValueError(f"prune.method={cfg.method!r} runs without sequence parallelism; set parallel.sp_size=1 "
                         "or pick a method that supports it")
    controller.hooks.bind(controller)
    model.__dict__[_CONTROLLER_ATTR] = controller
    return controller


def remove(model: nn.Module) -> bool:
    """Undo :func:`apply`; returns whether a patch was there."""
    controller: Optional[PruningController] = model.__dict__.pop(_CONTROLLER_ATTR, None)
    if controller is None:
        return False
    for attn in [*controller.modules, *controller.cross_view_modules, *controller.blocks]:
        attn.__dict__.pop("forward", None)
        attn.__dict__.pop("_coredit", None)
    controller.hooks.remove()
    if controller.step_cache is not None:
        controller.step_cache.end_loop()  # the cached residuals are freed with the patch
    return True


def get_controller(model: nn.Module) -> Optional[PruningController]:
    return model.__dict__.get(_CONTROLLER_ATTR)
