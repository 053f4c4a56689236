"""Rectified flow as MagicDrive-V2 trains and samples it (written from its documented behaviour).

Convention (MagicDrive-V2 / OpenSora ``RFLOW``): time ``t`` in ``[0, num_timesteps]``,
``t = num_timesteps`` is pure noise; ``x_t = (1 - t/T) x_0 + (t/T) noise``; the model predicts
the velocity ``v = x_0 - noise``; sampling integrates ``z <- z + v * (t_i - t_{i+1}) / T`` from
``t_0 = T`` down to 0. The timestep transform shifts ``t`` towards noise for large videos:
``t' = a t / (1 + (a - 1) t)`` on ``t/T``, with ``a = sqrt(H W / 512^2) * sqrt(frames') * scale``
and ``frames' = num_frames // 17 * 5`` (1 for a single frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass(frozen=True)
class RFlowConfig:
    """Every choice of the flow; defaults follow MagicDrive-V2's stage-3 config."""

    num_timesteps: int = 1000
    num_sampling_steps: int = 30
    cfg_scale: float = 2.0
    sample_method: str = "logit-normal"  # training timesteps: "logit-normal" | "uniform"
    loc: float = 0.0
    scale: float = 1.0
    use_timestep_transform: bool = True
    transform_scale: float = 1.0
    base_resolution: int = 512 * 512
    base_num_frames: int = 1
    # frames' in the transform: "magicdrive" (num_frames // 17 * 5, an error below 17 frames), "cog"
    # (num_frames // 4 + num_frames % 2: MagicDrive-V2's cog_style_trans=True, its stage-3 configs),
    # "clamp" ("magicdrive", at least 1: short clips of the embedded default), "ignore" (frames' = 1)
    frame_rule: str = "magicdrive"

    def __post_init__(self):
        if self.frame_rule not in ("magicdrive", "cog", "clamp", "ignore"):
            raise ValueError(
                f"frame_rule must be 'magicdrive', 'cog', 'clamp' or 'ignore', got {self.frame_rule!r}")
        if self.sample_method not in ("logit-normal", "uniform"):
            raise ValueError(f"sample_method must be 'logit-normal' or 'uniform', got {self.sample_method!r}")
        if self.num_sampling_steps < 1 or self.num_timesteps < 1:
            raise ValueError("num_sampling_steps and num_timesteps must be >= 1")


def effective_frames(num_frames: torch.Tensor, rule: str = "magicdrive") -> torch.Tensor:
    """MagicDrive-V2's frame count in the transform: 1 for images, else ``num_frames // 17 * 5``."""
    nf = num_frames.float()
    if rule == "ignore":
        return torch.ones_like(nf)
    if rule == "cog":
        out = torch.div(nf, 4, rounding_mode="floor") + torch.remainder(nf, 2)
        return torch.where(nf == 1, torch.ones_like(out), out)
    out = torch.div(nf, 17, rounding_mode="floor") * 5
    out = torch.where(nf == 1, torch.ones_like(out), out)
    if rule == "clamp":
        out = out.clamp_min(1)
    if (out < 1).any():
        raise ValueError(f"num_frames {sorted(set(num_frames.tolist()))} give a transformed frame count < 1 "
                         "(need 1 or >= 17 frames, or frame_rule='clamp')")
    return out


def timestep_transform(t: torch.Tensor, height: torch.Tensor, width: torch.Tensor, num_frames: torch.Tensor,
                       cfg: RFlowConfig) -> torch.Tensor:
    """``t [B]`` in ``[0, T]`` -> transformed ``[B]``; ``height``/``width`` in pixels, ``num_frames`` video frames."""
    T = cfg.num_timesteps
    u = t.float() / T
    ratio_space = (height.float() * width.float() / cfg.base_resolution).sqrt()
    ratio_time = (effective_frames(num_frames, cfg.frame_rule) / cfg.base_num_frames).sqrt()
    a = ratio_space * ratio_time * cfg.transform_scale
    return a * u / (1 + (a - 1) * u) * T


def _as_batch(v, B: int, device=None) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32, device=device)
    return t.expand(B) if t.dim() == 0 else t


def training_timesteps(B: int, cfg: RFlowConfig, height, width, num_frames,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Training times ``[B]``: logit-normal (or uniform) on ``[0, T]``, then the timestep transform."""
    if cfg.sample_method == "uniform":
        u = torch.rand(B, generator=generator)
    else:  # LogisticNormal with one dimension: sigmoid of a Gaussian
        u = torch.sigmoid(torch.randn(B, generator=generator) * cfg.scale + cfg.loc)
    t = u * cfg.num_timesteps
    if cfg.use_timestep_transform:
        t = timestep_transform(t, _as_batch(height, B), _as_batch(width, B), _as_batch(num_frames, B), cfg)
    return t


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cfg: RFlowConfig) -> torch.Tensor:
    """``x_t = (1 - t/T) x0 + (t/T) noise``; ``t [B]`` broadcast over the other dims."""
    s = (t.float() / cfg.num_timesteps).view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def sampling_timesteps(cfg: RFlowConfig, height: float, width: float, num_frames: int) -> List[float]:
    """The sampler's ``num_sampling_steps`` times ``t_0 > t_1 > ...`` for one resolution and length."""
    S, T = cfg.num_sampling_steps, cfg.num_timesteps
    ts = torch.tensor([(1.0 - i / S) * T for i in range(S)], dtype=torch.float32)
    if cfg.use_timestep_transform:
        ones = torch.ones_like(ts)
        ts = timestep_transform(ts, ones * height, ones * width, ones * num_frames, cfg)
    return ts.tolist()


def late_threshold(cfg: RFlowConfig, late_steps: int, height: float, width: float, num_frames: int) -> float:
    """Diffusion times ``t <= threshold`` fall in the sampler's last ``late_steps`` steps (step ``i``
    integrates ``(t_{i+1}, t_i]``, the last one down to 0). ``-inf`` when ``late_steps`` is 0."""
    if late_steps <= 0:
        return -math.inf
    ts = sampling_timesteps(cfg, height, width, num_frames)
    return ts[max(0, len(ts) - late_steps)]


def late_mask(t: torch.Tensor, cfg: RFlowConfig, late_steps: int, height, width, num_frames) -> torch.Tensor:
    """``[B]`` bool: which training samples are in the last ``late_steps`` sampling steps of the sampler
    run at each sample's own resolution and length."""
    B = t.shape[0]
    h, w, f = _as_batch(height, B), _as_batch(width, B), _as_batch(num_frames, B)
    thr = torch.tensor([late_threshold(cfg, late_steps, float(h[i]), float(w[i]), int(f[i])) for i in range(B)])
    return t.float().cpu() <= thr
