"""CoReDiT with rule (b): a skipped token's output is the average of the retained outputs of its sub-grid cell,
weighted by ``softmax(cos(x_i, x_j) / temperature)`` over those retained tokens ``j`` (cosine of the block inputs);
where the cell holds none, eq. 3 (its grid, then its band). A low temperature tends to rule (a)'s copy, a high one
to the cell's plain mean.

Gradients flow to the retained outputs and, through the weights, to the block inputs (as eq. 3's flow to the
scores); the choice of skipped tokens is not differentiated. Linear in N: a cell holds at most ``sh*sw`` tokens."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.cells import cell_similarity, replace_skipped, retained_mask, to_cells, token_rows
from .base import CallGeometry, Reduced, Selection
from .coredit import CoReDiT


class CoReDiTSharp(CoReDiT):
    name = "coredit_sharp"
    options = ("temperature",)

    def __init__(self, temperature: float = 0.05):
        self.temperature = float(temperature)

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        from .. import flops as F

        return {"cosine_normalise": F.cosine_normalise_flops(n, C),
                "cell_similarity": F.cell_similarity_flops(skipped, candidates, C),
                "softmax": F.softmax_flops(skipped, candidates),
                "weighted_sum": F.weighted_sum_flops(skipped, candidates, C)}

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        b = geo.layout
        y_full = super().restore(y, x, sel, red, geo)  # eq. 3: retained rows exact, the fallback for empty cells
        sim, members = cell_similarity(x, retained_mask(sel.keep, x.shape[1]), geo.hw, b.grid, b.subgrid, geo.bands)
        finite = torch.isfinite(sim)
        any_kept = finite.any(-1, keepdim=True)  # [F, n_sub, S, 1]: the cell holds a retained token
        w = torch.softmax(torch.where(any_kept, sim, torch.zeros_like(sim)) / self.temperature, dim=-1)
        w = torch.where(finite, w, torch.zeros_like(w))  # [F, n_sub, S, S]
        acc = torch.promote_types(y.dtype, torch.float32)
        est_cells = w @ to_cells(y_full.to(acc), members)  # [F, n_sub, S, C]
        est = token_rows(est_cells, sel.skip, geo.hw, b.grid, b.subgrid, geo.bands).to(y.dtype)  # [F, K, C]
        has = token_rows(any_kept.squeeze(-1), sel.skip, geo.hw, b.grid, b.subgrid, geo.bands)  # [F, K]
        return replace_skipped(y_full, sel.skip, est, has)
