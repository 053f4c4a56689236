"""What a host adapter tells the plugin about a DiT."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn


class HostAdapter:
    """Subclass, register with ``@HOST_ADAPTERS.register_module()``, and implement the four methods.

    - ``matches(model)``: recognise the host (by class name, so importing us never imports it).
    - ``prunable_blocks(model, groups)``: ``[(name, attention_module)]`` of spatial self-attentions in
      plan order; each module has MagicDrive-V2's ``qkv``/``q_norm``/``k_norm``/``proj`` layout and
      receives ``[frames, tokens, C]``.
    - ``attach(model, controller)``: hooks that open each forward's context
      (``controller.begin_forward``), bind every prunable block to it (``controller.forwards.enter_block``),
      and, with cross-view pruning on, describe the views (``ForwardContext.views``); returns removable
      handles.
    - ``sp_group(model)``: the host's sequence-parallel process group, or ``None``.

    ``block_args`` (positions / names of ``x``, ``T`` and ``S`` in a spatial block's forward) enables
    ``prune.scope="block"``.

    ``cross_view_blocks`` (cross-view attentions next to the prunable self-attentions) works for any host
    whose spatial blocks hold a ``cross_view_attn`` called as ``cross_view_attn(x, cond)``.
    """

    default_groups: Tuple[str, ...] = ()
    # where a spatial block's forward takes x [B*NC, T*S, C], T and S: (position, keyword); block scope needs them
    block_args: Optional[Dict[str, Tuple[int, str]]] = None
    # the gated step cache (prune.cache_form="gated"): the submodules of a spatial block whose outputs its adaLN
    # gates scale (self-attention, MLP); block_gates gives the gates
    gated_branches: Tuple[str, str] = ("attn", "mlp")

    def block_gates(self, block: nn.Module, args: tuple, kwargs: dict):
        """``(gate_attn, gate_mlp)`` ``[B*NC, 1, C]`` (or per frame, ``[B*NC*T, 1, C]``, where frames differ, as
        MagicDrive-V2's ``x_mask`` first frames do) of one spatial block call (the adaLN gates of its
        self-attention and MLP branches), or ``None`` where the adapter does not know them (the gated step cache
        then refuses)."""
        return None

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def prunable_blocks(self, model: nn.Module, groups: Optional[Sequence[str]] = None) -> List[Tuple[str, nn.Module]]:
        out = []
        for group in groups or self.default_groups:
            blocks = getattr(model, group, None)
            if blocks is None:
                raise ValueError(f"{type(model).__name__} has no block group {group!r}; "
                                 f"choose from {list(self.default_groups)}")
            out += [(f"{group}.{i}.attn", blk.attn) for i, blk in enumerate(blocks)]
        return out

    def attach(self, model: nn.Module, controller) -> list:
        raise NotImplementedError

    @staticmethod
    def cross_view_blocks(model: nn.Module, names: Sequence[str]) -> List[Tuple[str, nn.Module, int]]:
        """``[(name, cross_view_attn, ordinal)]`` for every prunable block (``names`` in plan order) whose
        block has a cross-view attention; ``ordinal`` is the block's, so both share one ratio."""
        out = []
        for ordinal, name in enumerate(names):
            block = model.get_submodule(name.rsplit(".", 1)[0])
            attn = getattr(block, "cross_view_attn", None)
            if isinstance(attn, nn.Module):
                out.append((f"{name.rsplit('.', 1)[0]}.cross_view_attn", attn, ordinal))
        return out

    @staticmethod
    def hook_blocks(model: nn.Module, controller, hook) -> list:
        """A forward pre-hook (``with_kwargs``) on the block holding each prunable attention; returns handles."""
        return [model.get_submodule(name.rsplit(".", 1)[0]).register_forward_pre_hook(hook, with_kwargs=True)
                for name in controller.names]

    def sp_group(self, model: nn.Module):
        return None
