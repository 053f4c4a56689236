"""Adapter for the built-in host (:class:`coredit_video.embedded.host.MultiViewSTDiT`)."""
from __future__ import annotations

import torch

from ...adapters.base import HostAdapter
from ...attention import ViewPairs
from ...registry import HOST_ADAPTERS


def ring_pairs(B: int, NC: int, T: int, device=None) -> ViewPairs:
    """The built-in host's cross-view rows: query row ``f = (b*NC + v)*T + t`` is frame ``f``; its key row
    holds frames ``(b, v-1, t)`` then ``(b, v+1, t)`` (views on a ring)."""
    f = torch.arange(B * NC * T, device=device).view(B, NC, T)
    kv = torch.stack([f.roll(1, dims=1), f.roll(-1, dims=1)], dim=-1)  # [B, NC, T, 2]
    return ViewPairs.build(f.reshape(-1), kv.reshape(-1, 2), B * NC * T)


@HOST_ADAPTERS.register_module(name="builtin")
class BuiltinHostAdapter(HostAdapter):
    default_groups = ("base_blocks_s", "control_blocks_s")
    block_args = {"x": (0, "x"), "T": (3, "T"), "S": (4, "S")}  # blk(x, cond, t_mod, T, S, NC)

    def block_gates(self, block, args, kwargs):
        """``gate_msa`` and ``gate_mlp`` of :class:`MultiViewSTDiT3Block` (chunks 2 and 5 of its modulation)."""
        t_mod = args[2] if len(args) > 2 else kwargs["t_mod"]
        BN, C = t_mod.shape[0], block.scale_shift_table.shape[1]
        mod = block.scale_shift_table[None] + t_mod.view(BN, 6, C)
        return mod[:, 2:3], mod[:, 5:6]

    def matches(self, model) -> bool:
        from .mv_stdit import MultiViewSTDiT

        return isinstance(model, MultiViewSTDiT)

    def attach(self, model, controller) -> list:
        def begin_forward(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            controller.begin_forward(hw=module.token_grid(x))

        def enter_block(module, args, kwargs):  # blk(x, cond, t_mod, T, S, NC): t_mod keys the forward
            get = lambda i, k: args[i] if len(args) > i else kwargs[k]  # noqa: E731
            ctx = controller.forwards.enter_block(get(2, "t_mod"))
            if controller.needs_views and ctx.views is None:
                x, T, NC = get(0, "x"), int(get(3, "T")), int(get(5, "NC"))
                ctx.views = ring_pairs(x.shape[0] // NC, NC, T, x.device)

        return ([model.register_forward_pre_hook(begin_forward, with_kwargs=True)]
                + self.hook_blocks(model, controller, enter_block))

    def sp_group(self, model):
        return getattr(model, "sp_group", None)
