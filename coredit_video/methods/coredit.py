"""CoReDiT as the paper gives it: skip the most coherent tokens, attend over the rest, rebuild the skipped
outputs by eq. 3 (the coherence-weighted average of the retained outputs of the sub-grid cell, then grid, then
band). Gradients reach the retained outputs and, through the weights, the scores; the choice is not
differentiated."""
from __future__ import annotations

from typing import Optional

import torch

from .. import kernels
from ..ops import select_tokens
from .base import CallGeometry, Reduced, Selection, TokenReducer, gather_tokens


class CoReDiT(TokenReducer):
    name = "coredit"
    supports_cross_view = True
    supports_block_scope = True

    def selection_scores(self, x: torch.Tensor, geo: CallGeometry, sc: torch.Tensor) -> torch.Tensor:
        """``[F, N]`` scores the skipped tokens are chosen by (the highest, outside the m-stride pattern)."""
        return sc.detach()

    def select(self, x: torch.Tensor, geo: CallGeometry, sc: Optional[torch.Tensor]) -> Selection:
        b = geo.layout
        keep, skip = select_tokens(self.selection_scores(x, geo, sc), geo.hw, geo.ratio, b.stride, b.ordinal,
                                   geo.bands, budgets=geo.budgets)  # the call's budgets: one source
        return Selection(keep, skip, sc)

    def reduce(self, x: torch.Tensor, sel: Selection, geo: CallGeometry) -> Reduced:
        return Reduced(gather_tokens(x, sel.keep))

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        from .. import flops as F

        return {"reconstruction": F.reconstruction_flops(n, C)}  # eq. 3

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        b = geo.layout
        return kernels.reconstruct(y, sel.keep, sel.skip, sel.sc, geo.hw, b.grid, b.subgrid, geo.bands)
