"""A compact MagicDrive-shaped multi-view spatial-temporal DiT (the built-in host).

Like MagicDrive-V2's ``MagicDriveSTDiT3``: latents of ``NC`` camera views are patchified into
``S = h*w`` tokens per frame; each depth step runs a *spatial* block (self-attention over one
view-frame's ``h x w`` tokens as ``[B*NC*T, S, C]``, cross-view attention to the neighbour views,
cross-attention to condition tokens, MLP, adaLN-single modulation) and a *temporal* block
(attention over frames, ``[B*NC*S, T, C]``). An optional control branch (``control_blocks_s`` /
``control_blocks_t``) reads a BEV map and feeds the base branch through zero-initialised
projections. Block and attention parameter names follow MagicDrive-V2.

One input goes beyond MagicDrive-V2: ``view_layout``, the boxes and the road map already projected into each
view (``embedded.world.condition.view_layout``), patch-embedded by ``view_layout_embedder`` (zero-initialised)
and added to the tokens of both branches. MagicDrive-V2 learns that projection from box tokens, camera
parameters and a BEV map with 1.1 B parameters and nuScenes; a 0.5 M-parameter host trained for hours on a CPU
does not (without it, the shipped host put object-coloured blobs near the boxes but no box shapes).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ...parallel.comm import gather_seq, split_seq
from .layers import (Attention, GroupRef, Mlp, MultiHeadAttention, MultiHeadCrossAttention, TimestepEmbedder,
                     sincos_1d, sincos_2d, t2i_modulate)


@dataclass(frozen=True)
class HostConfig:
    hidden: int = 64
    depth: int = 2
    control_depth: int = 1
    num_heads: int = 4
    mlp_ratio: float = 4.0
    in_channels: int = 4
    patch: Tuple[int, int, int] = (1, 2, 2)
    cond_dim: int = 32  # width of the condition tokens (text / boxes) handed in as ``y``
    cam_dim: int = 12  # flattened camera parameters per view (intrinsics + extrinsics)
    map_channels: int = 3  # BEV map channels read by the control branch
    view_layout_channels: int = 0  # per-view layout channels (0: no layout input; see ``view_layout_embedder``)
    views: int = 6
    force_pad_h_for_sp_size: Optional[int] = None  # pad token rows to a multiple of this
    qk_norm: bool = True
    backend: str = "auto"
    grad_checkpoint: bool = False

    def __post_init__(self):
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by num_heads={self.num_heads}")
        if self.control_depth > self.depth:
            raise ValueError(f"control_depth={self.control_depth} cannot exceed depth={self.depth}")


HOST_PRESETS = {
    "tiny": HostConfig(view_layout_channels=15),  # the embedded world's ``condition.VIEW_LAYOUT_CHANNELS``
    "small": HostConfig(hidden=192, depth=4, control_depth=2, num_heads=6, in_channels=8),
    "base": HostConfig(hidden=576, depth=12, control_depth=6, num_heads=8, in_channels=16, cond_dim=256),
    "xl": HostConfig(hidden=1152, depth=28, control_depth=13, num_heads=16, in_channels=16, cond_dim=4096),
}


def host_config(preset: str = "tiny", **overrides) -> HostConfig:
    if preset not in HOST_PRESETS:
        raise ValueError(f"unknown host preset {preset!r}; choose one of {sorted(HOST_PRESETS)}")
    return replace(HOST_PRESETS[preset], **overrides)


class MultiViewSTDiT3Block(nn.Module):
    """One spatial (``temporal=False``) or temporal block. ``x [B*NC, T*S, C]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, temporal: bool, cross_view: bool,
                 qk_norm: bool = True, backend: str = "auto"):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(dim, heads, qk_norm=qk_norm, backend=backend)
        self.cross_attn = MultiHeadCrossAttention(dim, heads, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(dim, mlp_ratio)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)
        self.skip_cross_view = temporal or not cross_view
        if not self.skip_cross_view:
            self.norm3 = nn.LayerNorm(dim, eps=1e-6)
            self.cross_view_attn = MultiHeadAttention(dim, heads, qk_norm=qk_norm, backend=backend)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t_mod: torch.Tensor, T: int, S: int,
                NC: int) -> torch.Tensor:
        """``x [B*NC, T*S, C]``, ``y [B*NC, L, C]``, ``t_mod [B*NC, 6C]`` -> ``[B*NC, T*S, C]``."""
        BN, _, C = x.shape
        mod = self.scale_shift_table[None] + t_mod.view(BN, 6, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        if self.temporal:
            x_m = x_m.view(BN, T, S, C).transpose(1, 2).reshape(BN * S, T, C)
            x_m = self.attn(x_m).view(BN, S, T, C).transpose(1, 2).reshape(BN, T * S, C)
        else:
            x_m = self.attn(x_m.reshape(BN * T, S, C)).view(BN, T * S, C)
        x = x + gate_msa * x_m
        if not self.skip_cross_view:
            x = x + self._cross_view(self.norm3(x), T, S, NC)
        x = x + self.cross_attn(x, y)
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(x_m)

    def _cross_view(self, x: torch.Tensor, T: int, S: int, NC: int) -> torch.Tensor:
        """Each view attends to its left and right neighbours' tokens of the same frame."""
        BN, _, C = x.shape
        v = x.view(BN // NC, NC, T, S, C)
        neigh = torch.cat([v.roll(1, dims=1), v.roll(-1, dims=1)], dim=3)  # [B, NC, T, 2S, C]
        out = self.cross_view_attn(v.reshape(-1, S, C), neigh.reshape(-1, 2 * S, C))
        return out.view(BN, T * S, C)


class MultiViewSTDiT(nn.Module):
    """Built-in host. ``forward(x [B, NC, Cin, T, H, W], timestep [B], y [B, L, cond_dim],
    cams [B, NC, cam_dim] | None, bev_map [B, Cm, Hm, Wm] | None, view_layout [B, NC, Cl, T, H', W'] | None)
    -> velocity [B, NC, Cin, T, H, W]``; ``view_layout`` may have any resolution (pooled to the latents')."""

    def __init__(self, config: HostConfig = HostConfig()):
        super().__init__()
        self.config = cfg = config
        C = cfg.hidden
        self.x_embedder = nn.Conv3d(cfg.in_channels, C, kernel_size=cfg.patch, stride=cfg.patch)
        self.t_embedder = TimestepEmbedder(C)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.y_embedder = nn.Sequential(nn.Linear(cfg.cond_dim, C), nn.GELU(approximate="tanh"), nn.Linear(C, C))
        self.camera_embedder = nn.Linear(cfg.cam_dim, C)
        if cfg.view_layout_channels:
            self.view_layout_embedder = nn.Conv3d(cfg.view_layout_channels, C, kernel_size=cfg.patch,
                                                  stride=cfg.patch)
            nn.init.zeros_(self.view_layout_embedder.weight)  # zero-init: a host trained without it is unchanged
            nn.init.zeros_(self.view_layout_embedder.bias)

        def block(temporal: bool, cross_view: bool) -> MultiViewSTDiT3Block:
            return MultiViewSTDiT3Block(C, cfg.num_heads, cfg.mlp_ratio, temporal, cross_view, cfg.qk_norm,
                                        cfg.backend)

        self.base_blocks_s = nn.ModuleList([block(False, True) for _ in range(cfg.depth)])
        self.base_blocks_t = nn.ModuleList([block(True, False) for _ in range(cfg.depth)])
        self.control_blocks_s = nn.ModuleList([block(False, False) for _ in range(cfg.control_depth)])
        self.control_blocks_t = nn.ModuleList([block(True, False) for _ in range(cfg.control_depth)])
        if cfg.control_depth:
            self.controlnet_cond_embedder = nn.Conv2d(cfg.map_channels, C, kernel_size=3, padding=1)
            self.before_proj = nn.Linear(C, C)
            self.after_proj = nn.ModuleList([nn.Linear(C, C) for _ in range(cfg.control_depth)])
            for p in self.after_proj:  # zero-init: the control branch starts as a no-op
                nn.init.zeros_(p.weight)
                nn.init.zeros_(p.bias)
        self.final_norm = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.final_scale_shift_table = nn.Parameter(torch.randn(2, C) / C ** 0.5)
        self.final_linear = nn.Linear(C, math.prod(cfg.patch) * cfg.in_channels)
        self.sp = GroupRef()
        for blk in [*self.base_blocks_s, *self.control_blocks_s]:
            blk.attn.sp = self.sp
            if not blk.skip_cross_view:
                blk.cross_view_attn.sp = self.sp

    @property
    def sp_group(self):
        """The sequence-parallel group the spatial blocks split their tokens over (``None``: no SP)."""
        return self.sp.group if self.sp.size > 1 else None

    def set_sequence_parallel(self, group) -> None:
        """Run with sequence parallelism over ``group`` (``None`` to turn it off). Every rank of the
        group must call forward with the same inputs; each computes ``1/P`` of every frame's rows."""
        if group is not None and self.config.num_heads % dist.get_world_size(group):
            raise ValueError(f"{self.config.num_heads} heads do not divide by the SP size "
                             f"{dist.get_world_size(group)}; choose an SP size dividing the head count")
        self.sp.group = group

    def token_grid(self, x: torch.Tensor) -> Tuple[int, int]:
        """Padded per-frame token grid ``(h, w)`` of latents ``x [B, NC, Cin, T, H, W]``."""
        _, ph, pw = self.config.patch
        h, w = math.ceil(x.shape[-2] / ph), math.ceil(x.shape[-1] / pw)
        pad = self.config.force_pad_h_for_sp_size or self.sp.size
        if pad > 1:
            h = math.ceil(h / pad) * pad
        return h, w

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, y: torch.Tensor,
                cams: Optional[torch.Tensor] = None, bev_map: Optional[torch.Tensor] = None,
                view_layout: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 6:
            raise ValueError(f"x must be [B, NC, C, T, H, W] latents, got shape {tuple(x.shape)}")
        B, NC, Cin, T0, H0, W0 = x.shape
        pt, ph, pw = cfg.patch
        h, w = self.token_grid(x)
        T = math.ceil(T0 / pt)
        pad = (0, w * pw - W0, 0, h * ph - H0, 0, T * pt - T0)
        x = F.pad(x, pad)
        S, C = h * w, cfg.hidden
        tok = self.x_embedder(x.flatten(0, 1))  # [B*NC, C, T, h, w]
        if view_layout is not None and cfg.view_layout_channels:
            lay = F.adaptive_avg_pool3d(view_layout.flatten(0, 1).to(x.dtype), (T0, H0, W0))
            tok = tok + self.view_layout_embedder(F.pad(lay, pad))
        tok = tok.flatten(3).permute(0, 2, 3, 1)  # [B*NC, T, S, C]
        tok = tok + sincos_2d(h, w, C, x.device).to(tok.dtype)[None, None]
        tok = tok + sincos_1d(T, C, x.device).to(tok.dtype)[None, :, None]
        tok = tok.reshape(B * NC, T * S, C)

        t = self.t_embedder(timestep)  # [B, C]
        t_mod = self.t_block(t).repeat_interleave(NC, dim=0)  # [B*NC, 6C]
        cond = self.y_embedder(y)  # [B, L, C]
        cond = cond.unsqueeze(1).expand(B, NC, *cond.shape[1:])
        if cams is not None:
            cond = torch.cat([cond, self.camera_embedder(cams).unsqueeze(2)], dim=2)
        cond = cond.reshape(B * NC, -1, C)

        ctrl = None
        if cfg.control_depth and bev_map is not None:
            m = self.controlnet_cond_embedder(bev_map)  # [B, C, Hm, Wm]
            m = F.adaptive_avg_pool2d(m, (h, w)).flatten(2).transpose(1, 2)  # [B, S, C]
            m = m.repeat_interleave(NC, dim=0).repeat(1, T, 1)  # [B*NC, T*S, C]
            ctrl = tok + self.before_proj(m)
        group = self.sp_group
        if group is not None:  # each rank takes a contiguous 1/P of every frame's rows
            P = dist.get_world_size(group)
            tok = split_seq(tok.view(B * NC, T, S, C), group, dim=2).view(B * NC, T * S // P, C)
            if ctrl is not None:
                ctrl = split_seq(ctrl.view(B * NC, T, S, C), group, dim=2).view(B * NC, T * S // P, C)
            S = S // P
        args = (cond, t_mod, T, S, NC)
        for i in range(cfg.depth):
            if ctrl is not None and i < cfg.control_depth:
                ctrl = self._run(self.control_blocks_s[i], ctrl, *args)
                ctrl = self._run(self.control_blocks_t[i], ctrl, *args)
                tok = tok + self.after_proj[i](ctrl)
            tok = self._run(self.base_blocks_s[i], tok, *args)
            tok = self._run(self.base_blocks_t[i], tok, *args)

        if group is not None:
            tok = gather_seq(tok.view(B * NC, T, S, C), group, dim=2).reshape(B * NC, T * S * P, C)
        shift, scale = (self.final_scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        shift, scale = shift.repeat_interleave(NC, 0), scale.repeat_interleave(NC, 0)
        out = self.final_linear(t2i_modulate(self.final_norm(tok), shift, scale))  # [B*NC, T*S, p*Cin]
        out = out.view(B, NC, T, h, w, pt, ph, pw, Cin)
        out = out.permute(0, 1, 8, 2, 5, 3, 6, 4, 7).reshape(B, NC, Cin, T * pt, h * ph, w * pw)
        return out[..., :T0, :H0, :W0]

    def _run(self, blk: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
        if self.config.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, *args, use_reentrant=False)
        return blk(x, *args)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
