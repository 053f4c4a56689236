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

Every model forward opens a new pruning context (``controller.set_frame``) at its first spatial block,
so the phase set before a forward (``set_step`` / ``set_phase``) is the one it prunes with, even when a
no-grad sampling loop hands every forward's ``t_mlp`` the same storage. A gradient-checkpoint
recompute is recognised by its ``t_mlp``: the controller keeps that forward's phase and frame
(``controller.frame_of``), even after later forwards of other phases or frame sizes.

Checked against a real checkout by ``tests/test_magicdrive_adapter.py`` (``MAGICDRIVE_V2_ROOT``).
"""
from __future__ import annotations

import math
import sys

from ..registry import HOST_ADAPTERS
from .base import HostAdapter

CLASS_NAMES = ("MagicDriveSTDiT3",)


def _rows(S: int, W: int, controller) -> int:
    """Padded token rows of the frame from a spatial block's ``S`` (this rank's share under SP)."""
    sp_size = controller.sp_group_size
    full = S * sp_size
    if full % W:
        raise ValueError(f"spatial block got S={S} tokens on each of {sp_size} SP ranks, not whole rows of "
                         f"width {W}; check the model's padding")
    H = full // W
    if H % controller.bands:
        raise ValueError(
            f"MagicDrive-V2 padded the frame to {H} token rows (width {W}), which do not split into bands="
            f"{controller.bands} ({sp_size} SP ranks x {controller.bands // sp_size} bands each). MagicDrive-V2 "
            f"pads H only while H*W is not a multiple of force_pad_h_for_sp_size (inference) / the drawn "
            f"simulate_sp_size entry (training) / the SP size: set force_pad_h_for_sp_size={controller.bands} "
            f"(or make every simulate_sp_size entry a multiple of {controller.bands}) where that pads H to a "
            f"multiple of {controller.bands}, use a frame whose token rows are, or choose bands dividing {H}")
    return H


def _sp_group_of(model):
    if not getattr(model, "enable_sequence_parallelism", False):
        return None
    states = sys.modules.get("magicdrivedit.acceleration.parallel_states")
    if states is None:
        raise RuntimeError("the model has enable_sequence_parallelism=True but MagicDrive-V2's parallel_states "
                           "module is not imported; create its groups before coredit_video.apply")
    try:
        return states.get_sequence_parallel_group()
    except RuntimeError as exc:  # MagicDrive-V2 raises when the group was never set
        raise RuntimeError("the model has enable_sequence_parallelism=True but MagicDrive-V2's sequence-parallel "
                           "group is not set (parallel_states.set_sequence_parallel_group); create its groups "
                           "before coredit_video.apply") from exc


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
        # Each model forward starts a new pruning context (``set_frame``) at its first spatial block, the first
        # place where both W (from x) and this forward's padded H (from S) are known. Any other block (later
        # in the same forward, or a gradient-checkpoint recompute of an older one) finds its forward's frame,
        # phase and width in the controller by its t_mlp.
        state = {"W": None, "new": False}

        def learn_width(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            state["W"] = math.ceil(x.shape[-1] / module.patch_size[2])
            state["new"] = True

        def enter_block(module, args, kwargs):
            t_mlp = args[2] if len(args) > 2 else kwargs["t"]
            S = args[7] if len(args) > 7 else kwargs["S"]
            if state["new"]:  # first spatial block of a new forward (a freed t_mlp's address may come back)
                state["new"] = False
                W = state["W"]
                H = _rows(int(S), W, controller)
                controller.set_frame((H, W))
            else:
                frame = controller.frame_of(t_mlp)
                if frame is None:
                    raise RuntimeError("a MagicDrive-V2 spatial block ran outside the model's forward; the adapter "
                                       "learns the frame width from MagicDriveSTDiT3.forward")
                W = frame[1]
                H = _rows(int(S), W, controller)
            controller.enter_block(t_mlp, (H, W))

        return ([model.register_forward_pre_hook(learn_width, with_kwargs=True)]
                + self.hook_blocks(model, controller, enter_block))

    def sp_group(self, model):
        return _sp_group_of(model)
