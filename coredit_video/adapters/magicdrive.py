"""Adapter for MagicDrive-V2's ``MagicDriveSTDiT3`` (``flymin/MagicDrive-V2`` @ 4ed72c6).

Recognised by class name, so importing coredit_video never imports MagicDrive-V2. What it relies
on (read from MagicDrive-V2's public code, none of it copied):

- ``model.forward(x, timestep, ...)`` with ``x [B, C*NC, T, Hx, Wx]`` latents and ``model.patch_size``;
- spatial blocks called as ``block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S, NC, mv_order_map,
  t_order_map)``, where ``S`` is this rank's share of the (padded) ``H*W`` tokens under SP;
- each block's ``attn`` (``MultiHeadAttention`` / ``SeqParallelMultiHeadAttention``) has ``qkv``,
  ``q_norm``, ``k_norm``, ``proj``, ``num_heads``, ``head_dim``, ``scale`` and is called ``attn(x)``;
- the SP group lives in ``magicdrivedit.acceleration.parallel_states`` and the all-to-all splits the
  sequence contiguously across ranks (scatter heads, gather sequence), which is also ours;
- base spatial blocks call ``cross_view_attn(x_targets, x_neighbors)`` with one row per (target,
  neighbour) pair: for each ``target, neighbours`` of ``mv_order_map`` in order, for each neighbour, the
  ``B*T`` frames ``(b, t)`` of that pair (``_construct_attn_input_from_map(..., cat_seq=False)``); the
  block sums the pair outputs per target. Control blocks have no ``cross_view_attn``.

The padded height is never recomputed here (MagicDrive-V2 pads H for ``force_pad_h_for_sp_size``,
a random ``simulate_sp_size`` during training, or the SP size): each spatial block's ``S`` gives it,
``H = S * sp_size / W``.

Every model forward opens a new pruning context (``controller.begin_forward``, with the frame width);
its first spatial block adopts it and tells the padded height, so the phase set before a forward
(``set_step`` / ``set_phase``) is the one it prunes with, even when a no-grad sampling loop hands every
forward's ``t_mlp`` the same storage. A gradient-checkpoint recompute is recognised by its ``t_mlp``:
``controller.forwards.enter_block`` returns that forward's context (phase, frame, views), even after later
forwards of other phases or frame sizes.

Checked against a real checkout by ``tests/test_magicdrive_adapter.py`` (``MAGICDRIVE_V2_ROOT``).
"""
from __future__ import annotations

import math
import sys

import torch

from ..attention import ViewPairs
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


def order_map_pairs(B: int, NC: int, T: int, mv_order_map, device=None) -> ViewPairs:
    """MagicDrive-V2's cross-view rows (``cat_seq=False``): for each ``target, neighbours`` of the map and
    each neighbour, the ``B*T`` rows ``(b, t)``; query = frame ``(b*NC + target)*T + t``, key = the
    neighbour's frame."""
    bt = torch.arange(B, device=device).view(B, 1) * (NC * T) + torch.arange(T, device=device).view(1, T)
    q, kv = [], []
    for target, neighbours in mv_order_map.items():
        for nb in neighbours:
            q.append(bt.reshape(-1) + int(target) * T)
            kv.append(bt.reshape(-1) + int(nb) * T)
    if not q:
        raise ValueError("mv_order_map lists no (target, neighbour) pair")
    return ViewPairs.build(torch.cat(q), torch.cat(kv), B * NC * T)


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
    # MultiViewSTDiT3Block.forward(x, y, t, mask, x_mask, t0, T, S, NC, mv_order_map, t_order_map)
    block_args = {"x": (0, "x"), "T": (6, "T"), "S": (7, "S"), "derived": (1, "after_proj")}  # control: (x, skip)

    def block_gates(self, block, args, kwargs):
        """``gate_msa`` and ``gate_mlp`` of ``MultiViewSTDiT3Block`` (chunks 2 and 5 of ``scale_shift_table + t``,
        each sample's repeated over its ``NC`` views): ``[B*NC, 1, C]``; with ``x_mask`` per frame ``[B*NC*T, 1, C]``,
        the frames ``x_mask`` marks False taking the ``t0`` gates, as the block's ``t_mask_select`` does."""
        get = lambda i, k: args[i] if len(args) > i else kwargs.get(k)  # noqa: E731
        t, x_mask, t0, T, NC = get(2, "t"), get(4, "x_mask"), get(5, "t0"), int(get(6, "T")), int(get(8, "NC"))

        def gates(tt):
            mod = (block.scale_shift_table[None] + tt.reshape(tt.shape[0], 6, -1)).repeat_interleave(NC, 0)
            return mod[:, 2:3], mod[:, 5:6]

        g = gates(t)
        if x_mask is None:
            return g
        keep = x_mask.reshape(-1, 1, 1)  # [B*NC*T, 1, 1]: True takes t's gates
        return tuple(torch.where(keep, a.repeat_interleave(T, 0), z.repeat_interleave(T, 0))
                     for a, z in zip(g, gates(t0)))

    def matches(self, model) -> bool:
        return any(cls.__name__ in CLASS_NAMES for cls in type(model).__mro__)

    def prunable_blocks(self, model, groups=None):
        blocks = super().prunable_blocks(model, groups)
        for name, attn in blocks:
            if getattr(attn, "is_cross_attention", False):
                raise ValueError(f"{name} is a cross-attention (use_st_cross_attn); only self-attention is pruned")
        return blocks

    def attach(self, model, controller) -> list:
        # The model forward knows W (from x); the first spatial block knows this forward's padded H (from S).
        def begin_forward(module, args, kwargs):
            x = args[0] if args else kwargs["x"]
            controller.begin_forward(width=math.ceil(x.shape[-1] / module.patch_size[2]))

        def enter_block(module, args, kwargs):
            get = lambda i, k: args[i] if len(args) > i else kwargs[k]  # noqa: E731
            ctx = controller.forwards.enter_block(get(2, "t"))
            if ctx.width is None:
                raise RuntimeError("a MagicDrive-V2 spatial block ran outside the model's forward; the adapter "
                                   "learns the frame width from MagicDriveSTDiT3.forward")
            controller.forwards.set_frame_height(ctx, _rows(int(get(7, "S")), ctx.width, controller))
            if controller.needs_views and ctx.views is None and get(9, "mv_order_map") is not None:
                x, T, NC = get(0, "x"), int(get(6, "T")), int(get(8, "NC"))
                ctx.views = order_map_pairs(x.shape[0] // NC, NC, T, get(9, "mv_order_map"), x.device)

        return ([model.register_forward_pre_hook(begin_forward, with_kwargs=True)]
                + self.hook_blocks(model, controller, enter_block))

    def sp_group(self, model):
        return _sp_group_of(model)
