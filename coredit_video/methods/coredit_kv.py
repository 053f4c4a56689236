"""K/V-only CoReDiT: CoReDiT's selection drops the keys and values of the skipped tokens; every query attends, so
nothing needs rebuilding (AsymRnR: queries are the sensitive side). Gradients reach every query and the retained
keys / values. Not under sequence parallelism yet (the SP self-attention sends equal query and key counts)."""
from __future__ import annotations

from typing import Optional

import torch

from .base import CallGeometry, Reduced, Selection, gather_tokens
from .coredit import CoReDiT


class CoReDiTKV(CoReDiT):
    name = "coredit_kv"
    supports_sp = False
    supports_cross_view = False
    supports_block_scope = False
    kv_only = True

    def reduce(self, x: torch.Tensor, sel: Selection, geo: CallGeometry) -> Reduced:
        return Reduced(x, kv=gather_tokens(x, sel.keep))

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        return y
