"""Token merging (bipartite soft matching), the quality study's strongest baseline, in two forms.

One destination token per 2x2 cell, every other token a source; the ``K`` sources most similar (cosine) to their
best destination are averaged into it before attention and copy its output after. ``K`` is CoReDiT's budget, so
both attend over ``N - K`` tokens. The matching is quadratic in ``N`` (every source against every destination).
Not under sequence parallelism: a frame's matching needs all its tokens.

- ``tome``: as the ToMe paper (Bolya et al. 2023), with proportional attention: every query's logit of a merged
  key gets ``log(size)``, the number of tokens it stands for, so a merged token weighs as its members would.
- ``tomesd``: as tomesd (ToMe for Stable Diffusion), which drops the proportional attention.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from .base import CallGeometry, Reduced, TokenReducer


def destination_mask(hw: Tuple[int, int], device=None) -> torch.Tensor:
    """``[N]`` bool: the top-left token of every 2x2 cell of the ``H x W`` grid (ToMe's set B)."""
    H, W = hw
    r = torch.arange(H, device=device).view(H, 1)
    c = torch.arange(W, device=device).view(1, W)
    return ((r % 2 == 0) & (c % 2 == 0)).reshape(-1)


def bipartite_merge(x: torch.Tensor, hw: Tuple[int, int], k: int, sizes: bool = False):
    """Merge ``k`` tokens of each frame ``x [F, N, C]`` -> ``([F, N - k, C], unmerge)``, and with ``sizes`` also
    ``size [F, N - k]`` float32: how many tokens each merged token averages (1 for an unmerged source).

    ``unmerge(y [F, N - k, C]) -> [F, N, C]``: every token gets the output of the token it became.
    """
    Fr, N, C = x.shape
    dst_mask = destination_mask(hw, x.device)
    dst_idx = dst_mask.nonzero().squeeze(1)  # [Nd]
    src_idx = (~dst_mask).nonzero().squeeze(1)  # [Ns]
    Nd, Ns = dst_idx.numel(), src_idx.numel()
    if not 0 <= k <= Ns:
        raise ValueError(f"token merging can merge at most {Ns} of {N} tokens (the non-destination ones), asked {k}")
    with torch.no_grad():
        xn = x.detach().float()
        xn = xn / xn.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        sim = xn[:, src_idx] @ xn[:, dst_idx].transpose(1, 2)  # [F, Ns, Nd]
        best_sim, best_dst = sim.max(dim=-1)  # [F, Ns]
        order = best_sim.argsort(dim=-1, descending=True, stable=True)
        merged_src = order[:, :k]  # positions in src_idx
        kept_src = order[:, k:].sort(dim=-1).values
    frame = torch.arange(Fr, device=x.device).view(Fr, 1)
    src_tok = x[:, src_idx]  # [F, Ns, C]
    dst_tok = x[:, dst_idx]
    target = best_dst.gather(1, merged_src)  # [F, k] destination (position in dst_idx) of each merged source
    sums = dst_tok.reshape(Fr * Nd, C).index_add(
        0, (target + frame * Nd).reshape(-1), src_tok[frame, merged_src].reshape(-1, C)).view(Fr, Nd, C)
    counts = torch.ones(Fr * Nd, device=x.device, dtype=x.dtype).index_add(
        0, (target + frame * Nd).reshape(-1), torch.ones(Fr * k, device=x.device, dtype=x.dtype)).view(Fr, Nd, 1)
    merged = torch.cat([src_tok[frame, kept_src], sums / counts], dim=1)  # [F, Ns - k + Nd, C]

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        n_kept = Ns - k
        y_src_kept, y_dst = y[:, :n_kept], y[:, n_kept:]
        y_src = y.new_empty(Fr, Ns, y.shape[-1])
        y_src[frame, kept_src] = y_src_kept
        y_src[frame, merged_src] = y_dst[frame, target]
        out = y.new_empty(Fr, N, y.shape[-1])
        out[:, src_idx] = y_src
        out[:, dst_idx] = y_dst
        return out

    if not sizes:
        return merged, unmerge
    size = torch.cat([counts.new_ones(Fr, Ns - k), counts.view(Fr, Nd)], dim=1).float()
    return merged, unmerge, size


class TokenMerging(TokenReducer):
    name = "tome"
    uses_scores = False
    supports_sp = False
    proportional = True  # log(size) on every query's logit of a merged key

    def removed_tokens(self, hw, skipped):
        """Only sources merge: at most ``N - Nd`` of them."""
        from .. import flops as F

        return min(skipped, hw[0] * hw[1] - F.tome_destinations(hw))

    def overhead_cost(self, hw, skipped, C, candidates, heads, scope="attention"):
        """Normalise ``3NC``, the source-destination cosines ``2 Ns Nd C``, their max ``Ns Nd``, the sort
        ``Ns ceil(log2 Ns)``, the merge ``KC + RC``, the unmerge ``NC`` and, with proportional attention,
        ``log(size)`` on the ``R x R`` logits per head."""
        from .. import flops as F

        if not skipped:
            return {}
        n = hw[0] * hw[1]
        nd = F.tome_destinations(hw)
        ns, kept = n - nd, n - skipped
        terms = {"cosine_normalise": F.cosine_normalise_flops(n, C),
                 "tome_similarity": F.tome_similarity_flops(ns, nd, C), "tome_max": F.tome_max_flops(ns, nd),
                 "tome_sort": F.tome_sort_flops(ns), "tome_merge": F.tome_merge_flops(skipped, kept, C),
                 "unmerge": F.unmerge_flops(n, C)}
        if self.proportional:
            terms["proportional_attention"] = F.proportional_attention_flops(heads, kept, kept)
        return terms

    def select(self, x: torch.Tensor, geo: CallGeometry, sc: Optional[torch.Tensor]) -> int:
        return geo.skipped

    def reduce(self, x: torch.Tensor, k: int, geo: CallGeometry) -> Reduced:
        merged, unmerge, size = bipartite_merge(x, geo.hw, k, sizes=True)
        return Reduced(merged, log_size=size.log() if self.proportional else None, state=unmerge)

    def restore(self, y: torch.Tensor, x: torch.Tensor, k: Any, red: Reduced, geo: CallGeometry) -> torch.Tensor:
        return red.state(y)


class TokenMergingSD(TokenMerging):
    name = "tomesd"
    proportional = False
