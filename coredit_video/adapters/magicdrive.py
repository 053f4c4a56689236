"""Adapter for MagicDrive-V2's ``MagicDriveSTDiT3`` (``flymin/MagicDrive-V2`` @ 4ed72c6).

Recognised by class name, so importing coredit_video never imports MagicDrive-V2. What it relies
on (read from MagicDrive-V2's public code, none of it copied):

- ``model.forward(x, timestep, ...)`` with ``x [B, C*NC, T, Hx, Wx]`` latents and ``model.patch_size``;
- spatial blocks called as ``block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S, NC, mv_order_map,
  t_order_map)``, where ``S`` is this rank's share of the (padded) ``H*W`` tokens under SP;
- each block's ``attn`` (``MultiHeadAttention`` / ``SeqParallelMultiHeadAttention``) has ``qkv``,
  ``q_norm``, ``k_norm``, ``proj``, ``num_heads``, ``head_dim``, ``scale`` and is called ``attn(x)``;
- the SP group lives in ``magicdrivedit.acceleration.parallel_states`` and the all-to-all splits the
  sequence contiguously across ranks (scatter heads, gather sequence), which is also ours.

The padded height is never recomputed here (MagicDrive-V2 pads H for ``force_pad_h_for_sp_size``,
a random ``simulate_sp_size`` during training, or the SP size): each spatial block's ``S`` gives it,
``H = S * sp_size / W``.
"""
from __future__ import annotations

import math
import sys

from ..registry import HOST_ADAPTERS
from .base import HostAdapter

CLASS_NAMES = ("MagicDriveSTDiT3",)


def _sp_group_of(model):
    if not getattr(model, "enable_sequence_parallelism", False):
        return None
    states = sys.modules.get("magicdrivedit.acceleration.parallel_states")
    if states is None:
        raise RuntimeError("the model has enable_sequence_parallelism=True but MagicDrive-V2's parallel_states "
                           "module is not imported; create its groups before coredit_video.apply")
    return states.get_sequence_parallel_group()


@HOST_ADAPTERS.register_module(name="magicdrive_v2")
class MagicDriveV2Adapter(HostAdapter):
    default_groups = ("base_blocks_s", "control_blocks_s")

    def matches(self, model) -> bool:
        return any(cls.__name__ in CLASS_NAMES for cls in type(model).__mro__)

    def prunable_blocks(self, model, groups=None):
        blocks = super().prunable_blocks(model, groups)
        for name, attn in blocks:
            if getattr(attn, "is_cross_attention", False):
                raise ValueError(f"{name} is a cross-attention (use_st_cross_attn); only self-attention is pruned")
        return blocks

    def attach(self, model, controller) -> list:
        state = {"W": None}
        sp_size = 1 if controller.sp_group is None else controller.sp_group_size

        def learn_width(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            pw = module.patch_size[2]
            state["W"] = math.ceil(x.shape[-1] / pw)
            controller.timestep = args[1] if len(args) > 1 else kwargs.get("timestep")

        def enter_block(module, args, kwargs):
            t_mlp = args[2] if len(args) > 2 else kwargs["t"]
            S = args[7] if len(args) > 7 else kwargs["S"]
            W = state["W"]
            if W is None:
                raise RuntimeError("a MagicDrive-V2 spatial block ran outside the model's forward; the adapter "
                                   "learns the frame width from MagicDriveSTDiT3.forward")
            full = int(S) * sp_size
            if full % W:
                raise ValueError(f"spatial block got S={S} tokens on each of {sp_size} SP ranks, not whole rows of "
                                 f"width {W}; check the model's padding")
            H = full // W
            if H % controller.bands:
                raise ValueError(
                    f"MagicDrive-V2 padded the frame to {H} token rows, which do not split into bands="
                    f"{controller.bands} ({sp_size} SP ranks x {controller.bands // sp_size} bands each). Set "
                    f"force_pad_h_for_sp_size={controller.bands} in the model config (or, for training, make every "
                    f"simulate_sp_size entry a multiple of {controller.bands}), or choose bands dividing {H}")
            if controller.hw != (H, W):
                controller.set_frame((H, W), timestep=controller.timestep)
            controller.enter_block(t_mlp, (H, W))

        handles = [model.register_forward_pre_hook(learn_width, with_kwargs=True)]
        for name in controller.names:
            block = model.get_submodule(name.rsplit(".", 1)[0])
            handles.append(block.register_forward_pre_hook(enter_block, with_kwargs=True))
        return handles

    def sp_group(self, model):
        return _sp_group_of(model)
