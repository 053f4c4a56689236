"""What a host adapter tells the plugin about a DiT."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch.nn as nn


class HostAdapter:
    """Subclass, register with ``@HOST_ADAPTERS.register_module()``, and implement the four methods.

    - ``matches(model)``: recognise the host (by class name, so importing us never imports it).
    - ``prunable_blocks(model, groups)``: ``[(name, attention_module)]`` of spatial self-attentions in
      plan order; each module has MagicDrive-V2's ``qkv``/``q_norm``/``k_norm``/``proj`` layout and
      receives ``[frames, tokens, C]``.
    - ``attach(model, controller)``: hooks that tell the controller each forward's padded token
      grid (``controller.set_frame((H, W))``); returns removable handles.
    - ``sp_group(model)``: the host's sequence-parallel process group, or ``None``.
    """

    default_groups: Tuple[str, ...] = ()

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
    def hook_blocks(model: nn.Module, controller, hook) -> list:
        """A forward pre-hook (``with_kwargs``) on the block holding each prunable attention; returns handles."""
        return [model.get_submodule(name.rsplit(".", 1)[0]).register_forward_pre_hook(hook, with_kwargs=True)
                for name in controller.names]

    def sp_group(self, model: nn.Module):
        return None
