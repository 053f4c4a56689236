"""Rectified-flow training loss with CoReDiT's two phases and optional distillation.

``L = L_ori + alpha * L_pred + beta * L_attn`` (paper sec. 4.1): ``L_ori`` is MagicDrive-V2's
velocity MSE, ``L_pred`` the MSE to a frozen dense teacher's velocity, ``L_attn`` the MSE between
student and teacher outputs of the most recently pruned block's self-attention.

Samples whose time lies in the sampler's last ``late_steps`` steps run with ``c * r_l`` (the
controller's "late" phase), the rest with ``r_l``: the batch is split in two groups, each one
forward with one static shape per block, exactly the two graphs inference uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..rflow import RFlowConfig, add_noise

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor, Dict], torch.Tensor]


@dataclass(frozen=True)
class DistillConfig:
    enabled: bool = False
    alpha: float = 0.5  # weight of L_pred
    beta: float = 0.5  # weight of L_attn

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"distill.alpha and distill.beta must be >= 0, got {self.alpha}, {self.beta}")


def take(batch: Dict, idx: torch.Tensor) -> Dict:
    """Rows ``idx`` of every tensor (and list) in a batch dict."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() > 0:
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, list):
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    return out


class _Capture:
    """Forward hook keeping one module's outputs, in call order."""

    def __init__(self, module: Optional[nn.Module]):
        self.outputs: List[torch.Tensor] = []
        self.handle = module.register_forward_hook(self._hook) if module is not None else None

    def _hook(self, module, args, out):
        self.outputs.append(out)

    def close(self):
        if self.handle is not None:
            self.handle.remove()


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
    cap_s = _Capture(model.get_submodule(attn_block) if use_teacher and attn_block else None)
    cap_t = _Capture(teacher.get_submodule(attn_block) if use_teacher and attn_block else None)
    preds, teach, order = [], [], []
    try:
        for phase, idx in (("main", (~late).nonzero().flatten()), ("late", late.nonzero().flatten())):
            if idx.numel() == 0:
                continue
            if controller is not None:
                controller.set_phase(phase)
            sub = take(batch, idx)
            preds.append(forward(model, x_t[idx], t[idx], sub))
            if use_teacher:
                with torch.no_grad():
                    teach.append(forward(teacher, x_t[idx], t[idx], sub))
            order.append(idx)
    finally:
        cap_s.close()
        cap_t.close()
        if controller is not None:
            controller.set_phase("main")
    perm = torch.cat(order)
    v = torch.cat(preds)
    loss_ori = F.mse_loss(v.float(), target[perm].float())
    zero = loss_ori.new_zeros(())
    loss_pred = F.mse_loss(v.float(), torch.cat(teach).float()) if use_teacher else zero
    if use_teacher and cap_s.outputs:
        loss_attn = sum(F.mse_loss(a.float(), b.float().detach(), reduction="sum")
                        for a, b in zip(cap_s.outputs, cap_t.outputs)) / sum(a.numel() for a in cap_s.outputs)
    else:
        loss_attn = zero
    loss = loss_ori + (distill.alpha * loss_pred + distill.beta * loss_attn if use_teacher else 0.0)
    return dict(loss=loss, loss_ori=loss_ori.detach(), loss_pred=loss_pred.detach(), loss_attn=loss_attn.detach())
