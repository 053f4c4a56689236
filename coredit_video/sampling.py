"""Rectified-flow sampling (MagicDrive-V2's sampler) with CoReDiT's last-step decay.

``t_i = (1 - i/S) * T`` for ``i < S``, each transformed for the clip's resolution and length;
``z <- z + v * (t_i - t_{i+1}) / T`` with ``t_S = 0``; classifier-free guidance
``v = v_u + g (v_c - v_u)`` over one doubled batch. Before step ``i`` the controller is told the
step index, so the last ``late_steps`` steps run with ``c * r_l``.
"""
from __future__ import annotations

import sys
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .rflow import RFlowConfig, sampling_timesteps
from .training.losses import Forward


def _cat(a: Dict, b: Dict) -> Dict:
    out = {}
    for k, v in a.items():
        if torch.is_tensor(v) and v.dim() > 0:
            out[k] = torch.cat([v, b[k]])
        elif isinstance(v, list):
            out[k] = v + b[k]
        else:
            out[k] = v
    return out


@torch.no_grad()
def sample(model: nn.Module, forward: Forward, noise: torch.Tensor, cond: Dict, null: Optional[Dict],
           rflow: RFlowConfig, height: float, width: float, num_frames: int, controller=None,
           guidance: Optional[float] = None, progress: bool = False,
           on_step: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """Denoise ``noise [B, ...]`` into latents; ``cond`` / ``null`` are the conditional and
    unconditional inputs for ``forward(model, z, t, batch)`` (``null=None`` or guidance 1: no CFG).
    ``height`` / ``width`` (pixels) and ``num_frames`` select the timestep transform."""
    g = rflow.cfg_scale if guidance is None else guidance
    use_cfg = null is not None and g != 1.0
    batch = _cat(cond, null) if use_cfg else cond
    ts = sampling_timesteps(rflow, height, width, num_frames)
    S = len(ts)
    z = noise.clone()
    B = z.shape[0]
    from tqdm import tqdm

    for i in tqdm(range(S), disable=not progress, desc="sample", leave=False, file=sys.stderr):
        if controller is not None:
            controller.set_step(i, S)
        t = torch.full((B,), ts[i], device=z.device)
        if use_cfg:
            v = forward(model, torch.cat([z, z]), torch.cat([t, t]), batch)
            v_c, v_u = v.chunk(2)
            v = v_u + g * (v_c - v_u)
        else:
            v = forward(model, z, t, batch)
        dt = (ts[i] - (ts[i + 1] if i + 1 < S else 0.0)) / rflow.num_timesteps
        z = z + v * dt
        if on_step is not None:
            on_step(i, z)
    if controller is not None:
        controller.set_phase("main")
    return z
