"""Token downsampling (ToDo, arXiv 2402.13573) at a ratio: keys and values come from the input with some 2x2 cells
average-pooled; every query attends, nothing needs rebuilding.

ToDo pools every 2x2 cell (ratio 0.75). At a lower ratio ``r`` each band pools ``ceil(K_b / 3)`` of its whole 2x2
cells (``K_b`` = CoReDiT's budget of the band; a pooled cell removes 3 keys), the most redundant first: the cells
whose normalised tokens have the longest mean (``|mean xhat|``, 1 for four identical directions), ties to the lower
cell. Cells are anchored at each band's first row; a cell clipped by the band or frame edge is never pooled. Linear in
N. Gradients reach every query and, through the means, every key / value input."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..ops.partition import on_device, partition
from .base import CallGeometry, Reduced, TokenReducer, gather_tokens


def pooled_cells(x: torch.Tensor, geo: CallGeometry) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which 2x2 cells to pool: ``cells [F, P]`` (cell ids, ascending), ``unpooled [F, N - 4P]`` (token indices,
    ascending) and the cell id of every token ``cell [N]``."""
    Fr, N, C = x.shape
    part = partition(geo.hw, (2, 2), 1, geo.bands)
    cell = on_device(part.cell, x.device)
    size = torch.bincount(part.cell, minlength=part.n_cell).to(x.device)
    per_band = part.n_cell // geo.bands
    n_pool = [min(math.ceil(k / 3), int((size.view(geo.bands, per_band)[b] == 4).sum()))
              for b, k in enumerate(geo.budgets)]
    P = sum(n_pool)
    with torch.no_grad():
        xf = x.detach().float()
        xhat = xf / torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(1e-12)
        mean = xhat.new_zeros(Fr, part.n_cell, C).index_add_(1, cell, xhat) / 4
        score = torch.linalg.vector_norm(mean, dim=-1).masked_fill(size.view(1, -1) != 4, float("-inf"))
        score = score.view(Fr, geo.bands, per_band)
        # unique keys ordered by (score, -cell), as CoReDiT's selection orders tokens
        order = torch.sort(score, dim=-1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(2, order, torch.arange(per_band, device=x.device).expand_as(order))
        k_band = torch.tensor(n_pool, device=x.device).view(1, geo.bands, 1)
        pooled = (rank < k_band).view(Fr, part.n_cell)  # [F, n_cell]
        cells = pooled.nonzero()[:, 1].view(Fr, P)
        tok_pooled = pooled[:, cell]  # [F, N]
        unpooled = (~tok_pooled).nonzero()[:, 1].view(Fr, N - 4 * P)
    return cells, unpooled, cell


class TokenDownsampling(TokenReducer):
    name = "todo"
    uses_scores = False
    supports_sp = False
    kv_only = True

    def removed_tokens(self, hw, skipped):
        """Keys dropped: ``ceil(K/3)`` whole 2x2 cells pooled (each 4 -> 1), at most the frame's cells."""
        from .. import flops as F

        return F.todo_dropped_keys(hw, skipped) if skipped else 0

    def overhead_cost(self, hw, skipped, C, candidates, heads, scope="attention"):
        from .. import flops as F

        n = hw[0] * hw[1]
        return {"todo_rank": F.todo_rank_flops(n, C), "todo_pool": F.todo_pool_flops(n, C)} if skipped else {}

    def select(self, x: torch.Tensor, geo: CallGeometry, sc: Optional[torch.Tensor]):
        return pooled_cells(x, geo)

    def reduce(self, x: torch.Tensor, choice, geo: CallGeometry) -> Reduced:
        cells, unpooled, cell = choice
        Fr, N, C = x.shape
        n_cell = int(cell.max()) + 1
        means = x.new_zeros(Fr, n_cell, C).index_add(1, cell, x) / 4
        kv = torch.cat([gather_tokens(x, unpooled), gather_tokens(means, cells)], dim=1)
        return Reduced(x, kv=kv)

    def restore(self, y: torch.Tensor, x: torch.Tensor, choice, red: Reduced, geo: CallGeometry) -> torch.Tensor:
        return y
