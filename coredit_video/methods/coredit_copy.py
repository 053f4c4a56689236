"""CoReDiT with rule (a): a skipped token's output is a copy of the output of the most similar retained token of its
sub-grid cell (cosine of the block inputs); where the cell holds none, eq. 3 (its grid, then its band).

Gradients flow to the copied retained outputs only (the argmax is not differentiated) and, on the eq. 3 fallback,
as eq. 3 says. Linear in N: a cell holds at most ``sh*sw`` tokens."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.cells import copy_restore, nearest_retained
from .base import CallGeometry, Reduced, Selection
from .coredit import CoReDiT


class CoReDiTCopy(CoReDiT):
    name = "coredit_copy"

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        from .. import flops as F

        return {"cosine_normalise": F.cosine_normalise_flops(n, C),
                "cell_similarity": F.cell_similarity_flops(skipped, candidates, C),
                "argmax": F.argmax_flops(skipped, candidates), "copy": F.copy_flops(skipped, C)}

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Optional[Reduced],
                geo: CallGeometry) -> torch.Tensor:
        target, has = nearest_retained(x, sel.keep, sel.skip, geo)
        return copy_restore(super().restore(y, x, sel, red, geo), sel.skip, target, has)
