"""Rectified-flow training loss with CoReDiT's two phases and optional distillation.

``L = L_ori + alpha * L_pred + beta * L_attn`` (paper sec. 4.1): ``L_ori`` is MagicDrive-V2's
velocity MSE, ``L_pred`` the MSE to a frozen dense teacher's velocity, ``L_attn`` the MSE between
student and teacher outputs of the most recently pruned block's self-attention. Each term is a
per-sample mean (as MagicDrive-V2's own loss), then averaged over the batch.

Samples whose time lies in the sampler's last ``late_steps`` steps run with ``c * r_l`` (the
controller's "late" phase), the rest with ``r_l``: the batch is split in two groups, each one
forward with one static shape per block, exactly the two graphs inference uses. The split, the
row slicing and the distillation terms are :mod:`.step`'s, the same ones MagicDrive-V2's
``coredit_rflow`` scheduler uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from ..rflow import RFlowConfig, add_noise
from .step import BlockCapture, distill_terms, per_sample_mse, run_phases, take_rows

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor, Dict], torch.Tensor]


@dataclass(frozen=True)
class DistillConfig:
    enabled: bool = False
    alpha: float = 0.5  # weight of L_pred
    beta: float = 0.5  # weight of L_attn

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"distill.alpha and distill.beta must be >= 0, got {self.alpha}, {self.beta}")


def flow_loss(
    model: nn.Module,
    x0: torch.Tensor,
    batch: Dict,
    t: torch.Tensor,
    noise: torch.Tensor,
    late: torch.Tensor,
    forward: Forward,
    rflow: RFlowConfig,
    controller=None,
    teacher: Optional[nn.Module] = None,
    distill: DistillConfig = DistillConfig(),
    attn_block: Optional[str] = None,
) -> Dict[str, torch.Tensor]:
    """Loss terms for latents ``x0 [B, ...]`` at times ``t [B]`` with ``noise`` like ``x0``.

    ``late [B]`` bool marks samples in the sampler's last steps. ``forward(model, x_t, t, batch)``
    calls the host. ``attn_block`` names the most recently pruned block's attention module (for
    ``L_attn``). Returns ``{"loss", "loss_ori", "loss_pred", "loss_attn"}`` (scalars).
    """
    x_t = add_noise(x0, noise, t, rflow)
    target = x0 - noise
    use_teacher = distill.enabled and teacher is not None
    B = x0.shape[0]

    def group(phase: str, idx: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        xt, tt, sub = take_rows(x_t, idx, B), take_rows(t, idx, B), take_rows(batch, idx, B)
        with BlockCapture(model, teacher if use_teacher else None, attn_block) as cap:
            v = forward(model, xt, tt, sub)
            terms = dict(ori=per_sample_mse(v, take_rows(target, idx, B)))
            if use_teacher:
                with torch.no_grad():
                    v_t = forward(teacher, xt, tt, sub)
        if use_teacher:
            terms.update(distill_terms(v, v_t, cap))
        return terms

    per = run_phases(controller, late, group)
    loss_ori = per["ori"].mean()
    zero = loss_ori.new_zeros(())
    loss_pred = per["pred"].mean() if use_teacher else zero
    loss_attn = per["attn"].mean() if use_teacher else zero
    loss = loss_ori + (distill.alpha * loss_pred + distill.beta * loss_attn if use_teacher else 0.0)
    return dict(loss=loss, loss_ori=loss_ori.detach(), loss_pred=loss_pred.detach(), loss_attn=loss_attn.detach())
