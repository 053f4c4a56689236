"""Adapter for the built-in host :class:`coredit_video.models.MultiViewSTDiT`."""
from __future__ import annotations

from ..registry import HOST_ADAPTERS
from .base import HostAdapter


@HOST_ADAPTERS.register_module(name="builtin")
class BuiltinHostAdapter(HostAdapter):
    default_groups = ("base_blocks_s", "control_blocks_s")

    def matches(self, model) -> bool:
        from ..models import MultiViewSTDiT

        return isinstance(model, MultiViewSTDiT)

    def attach(self, model, controller) -> list:
        def learn_frame(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            controller.set_frame(module.token_grid(x))

        def enter_block(module, args, kwargs):  # blk(x, cond, t_mod, T, S, NC): t_mod keys the forward
            controller.enter_block(args[2] if len(args) > 2 else kwargs["t_mod"])

        return ([model.register_forward_pre_hook(learn_frame, with_kwargs=True)]
                + self.hook_blocks(model, controller, enter_block))

    def sp_group(self, model):
        return getattr(model, "sp_group", None)
