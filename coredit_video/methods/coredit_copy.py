"""CoReDiT with rule (a): a skipped token's output is a copy of the output of the most similar retained token of its
sub-grid cell (cosine of the block inputs); where the cell holds none, eq. 3 (its grid, then its band).

Gradients flow to the copied retained outputs only (the argmax is not differentiated) and, on the eq. 3 fallback,
as eq. 3 says. Linear in N: a cell holds at most ``sh*sw`` tokens."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..ops.cells import cell_similarity, token_rows
from ..ops.partition import partition
from ..ops.tables import on_device
from .base import CallGeometry, Reduced, Selection, gather_tokens
from .coredit import CoReDiT


def retained_mask(sel: Selection, n: int) -> torch.Tensor:
    """``[F, n]`` bool: the tokens ``sel`` retained."""
    mask = torch.zeros(sel.keep.shape[0], n, dtype=torch.bool, device=sel.keep.device)
    return mask.scatter_(1, sel.keep, True)


def nearest_retained(x: torch.Tensor, sel: Selection, geo: CallGeometry) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each skipped token of ``sel``: the most similar retained token of its cell ``target [F, K]`` (ties: the
    lower index) and whether its cell holds one, ``has [F, K]``."""
    b = geo.block
    with torch.no_grad():
        sim, members = cell_similarity(x.detach(), retained_mask(sel, x.shape[1]), geo.hw, b.grid, b.subgrid,
                                       geo.bands)
        rows = token_rows(sim, sel.skip, geo.hw, b.grid, b.subgrid, geo.bands)  # [F, K, S]
        best = rows.argmax(-1)
        has = torch.isfinite(rows.max(-1).values)
        sub = on_device(partition(geo.hw, b.grid, b.subgrid, geo.bands).sub, x.device)
        cand = members[sub[sel.skip]]  # [F, K, S] candidate tokens, ascending (padding N last)
        target = cand.gather(2, best.unsqueeze(-1)).squeeze(-1)
    return torch.where(has, target, torch.zeros_like(target)), has


def replace_skipped(y_full: torch.Tensor, sel: Selection, rows: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """``y_full [F, N, C]`` (eq. 3 output) with each skipped row whose cell holds a retained token (``has [F, K]``)
    replaced by its row of ``rows [F, K, C]``; the others keep eq. 3."""
    rows = torch.where(has.unsqueeze(-1), rows, gather_tokens(y_full, sel.skip))
    Fr, N, C = y_full.shape
    flat = (sel.skip + torch.arange(Fr, device=sel.skip.device).view(Fr, 1) * N).reshape(-1)
    return y_full.reshape(Fr * N, C).index_copy(0, flat, rows.reshape(-1, C)).view(Fr, N, C)


def copy_restore(y_full: torch.Tensor, sel: Selection, target: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """``y_full [F, N, C]`` (eq. 3 output) with each skipped row that has a target replaced by its target's row."""
    return replace_skipped(y_full, sel, gather_tokens(y_full, target), has)  # targets are retained: their outputs


class CoReDiTCopy(CoReDiT):
    name = "coredit_copy"

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        from .. import flops as F

        return {"cosine_normalise": F.cosine_normalise_flops(n, C),
                "cell_similarity": F.cell_similarity_flops(skipped, candidates, C),
                "argmax": F.argmax_flops(skipped, candidates), "copy": F.copy_flops(skipped, C)}

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        target, has = nearest_retained(x, sel, geo)
        return copy_restore(super().restore(y, x, sel, red, geo), sel, target, has)
