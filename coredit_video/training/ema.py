"""Exponential moving average of a model's parameters (fp32 shadow copy).

With ``step`` given, the decay warms up as ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's
``num_updates`` rule): a run from random weights does not carry its initialisation in the average for
thousands of steps (at ``decay=0.999`` a fixed decay still holds 37% of it after 1000 steps).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: Dict[str, torch.Tensor] = {
            n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def decay_at(self, step: Optional[int]) -> float:
        """The decay used at optimizer step ``step`` (0-based; ``None``: the fixed decay)."""
        return self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: Optional[int] = None) -> None:
        d = self.decay_at(step)
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {n: t.clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, sd: dict) -> None:
        missing = set(self.shadow) - set(sd["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        self.decay = sd["decay"]
        self.shadow = {n: t.clone().float() for n, t in sd["shadow"].items()}

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same parameter names)."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))
