"""CoReDiT with rule (c), merging: before attention each skipped token's input is averaged into the most similar
retained token of its sub-grid cell (size-weighted), attention adds ``log(size)`` of each key to its logits (ToMe's
proportional attention), and after attention a skipped token takes its target's output. A skipped token whose cell
holds no retained token is not merged and is rebuilt by eq. 3 (its grid, then its band).

Gradients flow to every input through the averages (as in ToMe), to the retained outputs through the copy; the
choice of targets is not differentiated. Linear in N. Under sequence parallelism the keys' ``log(size)`` crosses
the all-to-all beside them (every rank's targets are in its own bands).

In block scope the block runs on the merged tokens without the ``log(size)`` bias (the block's own attention takes
none, as in tomesd) and a skipped token takes its target's residual. Cross-view attention reuses the selection: its
skipped keys are dropped and, in ``qkv`` mode, its skipped queries copy their target's output (rule (a); nothing is
merged there)."""
from __future__ import annotations

import torch

from ..ops.cells import copy_restore, nearest_retained
from ..ops.selection import flat_rows
from .base import CallGeometry, Reduced, Selection, gather_tokens
from .coredit import CoReDiT


class CoReDiTMerge(CoReDiT):
    name = "coredit_merge"
    supports_cross_view = True
    supports_block_scope = True

    def restoration_cost(self, n, skipped, C, candidates, heads, bias=True):
        """Cosine to the cell's retained tokens, argmax, the size-weighted merge, ``log(size)`` on the ``R x R``
        logits per head (attention scope only: the block's own attention in block scope takes none), the copy."""
        from .. import flops as F

        kept = n - skipped
        terms = {"cosine_normalise": F.cosine_normalise_flops(n, C),
                 "cell_similarity": F.cell_similarity_flops(skipped, candidates, C),
                 "argmax": F.argmax_flops(skipped, candidates), "merge": F.merge_flops(skipped, kept, C)}
        if bias:
            terms["proportional_attention"] = F.proportional_attention_flops(heads, kept, kept)
        terms["copy"] = F.copy_flops(skipped, C)
        return terms

    def reduce(self, x: torch.Tensor, sel: Selection, geo: CallGeometry) -> Reduced:
        target, has = nearest_retained(x, sel.keep, sel.skip, geo)
        Fr, N, C = x.shape
        dest = flat_rows(torch.where(has, target, sel.skip), N)  # an unmerged token adds to its own row
        src = gather_tokens(x, sel.skip).reshape(-1, C) * has.reshape(-1, 1).to(x.dtype)
        sums = x.reshape(Fr * N, C).index_add(0, dest, src).view(Fr, N, C)
        size = torch.ones(Fr * N, device=x.device, dtype=torch.float32).index_add(
            0, dest, has.reshape(-1).to(torch.float32)).view(Fr, N)
        size_keep = size.gather(1, sel.keep)  # [F, N-K]
        x_keep = gather_tokens(sums, sel.keep) / size_keep.unsqueeze(-1).to(x.dtype)
        return Reduced(x_keep, log_size=size_keep.log(), state=(target, has))

    def restore(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, red: Reduced,
                geo: CallGeometry) -> torch.Tensor:
        target, has = red.state
        return copy_restore(super().restore(y, x, sel, red, geo), sel.skip, target, has)

    def restore_cross_view(self, y: torch.Tensor, x: torch.Tensor, sel: Selection, geo: CallGeometry) -> torch.Tensor:
        """Nothing was merged in the cross-view call: each skipped query copies its nearest retained cell-mate."""
        target, has = nearest_retained(x, sel.keep, sel.skip, geo)
        return copy_restore(CoReDiT.restore(self, y, x, sel, None, geo), sel.skip, target, has)
