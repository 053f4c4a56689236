"""Ablation ``no_reconstruction``: CoReDiT's selection; skipped tokens get a zero attention output, so the block's
residual passes them through unchanged."""
from __future__ import annotations

from typing import Optional

import torch

from .base import CallGeometry, Reduced, Selection, scatter_rows
from .coredit import CoReDiT


class NoReconstruction(CoReDiT):
    name = "no_reconstruction"
    supports_cross_view = False
    supports_block_scope = True  # skipped tokens keep their input: the block is routed around them
    block_residual = False

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        return {}

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        return scatter_rows(y, sel.keep, x.shape[1])
