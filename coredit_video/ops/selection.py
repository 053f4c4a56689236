"""Token selection: per frame and band, skip the K most coherent tokens that are not forced."""
from __future__ import annotations

import math
from typing import List, Tuple

import torch

from .partition import check_frame, forced_mask, on_device


def band_budgets(hw, ratio: float, stride: int, block_index: int, bands: int = 1) -> List[int]:
    """Number of skipped tokens in each band: ``floor(r * band_tokens)``, never more than the band's
    non-forced tokens, and always leaving at least one retained token to reconstruct from."""
    H, W = check_frame(hw, bands)
    check_ratio(ratio)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride (m) must be an int >= 1, got {stride!r}")
    band_tokens = H * W // bands
    forced = forced_mask(H, W, stride, block_index).view(bands, band_tokens)
    free = (~forced).sum(1).tolist()
    k = int(math.floor(ratio * band_tokens))
    return [min(k, f, band_tokens - 1) for f in free]


def check_ratio(ratio: float) -> None:
    if not (0.0 <= float(ratio) < 1.0):
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio!r}; lower the ratio")


def select_tokens(
    sc: torch.Tensor, hw, ratio: float, stride: int, block_index: int, bands: int = 1
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split each frame's tokens into retained and skipped ones.

    Args:
        sc: ``[F, N]`` spatial coherence scores (from :func:`spatial_coherence`).
        hw: ``(H, W)`` frame token grid.
        ratio: fraction ``r`` of each band's tokens to skip, ``0 <= r < 1``.
        stride: ``m``; tokens at ``(i, j)`` with ``(i + j - block_index) % m == 0`` are kept.
        block_index: ordinal ``l`` of the block among the prunable blocks.
        bands: equal row bands; budgets are counted per band.

    Returns:
        ``keep_idx [F, N-K]`` and ``skip_idx [F, K]`` int64 token indices, each sorted ascending,
        where ``K`` is the sum of the per-band budgets. Among equal scores the lower index is skipped.
    """
    if sc.dim() != 2:
        raise ValueError(f"sc must be [F, N], got shape {tuple(sc.shape)}")
    H, W = check_frame(hw, bands, sc.shape[1])
    budgets = band_budgets((H, W), ratio, stride, block_index, bands)
    Fr, N = sc.shape
    band_tokens = N // bands
    K = sum(budgets)
    all_idx = torch.arange(N, device=sc.device).expand(Fr, N)
    if K == 0:
        return all_idx.contiguous(), all_idx[:, :0].contiguous()
    if not torch.isfinite(sc).all():
        raise ValueError("spatial coherence scores contain NaN or inf; check the block input for NaN")
    forced = on_device(forced_mask(H, W, stride, block_index), sc.device)
    key = sc.float().masked_fill(forced, float("-inf")).view(Fr, bands, band_tokens)
    # stable descending sort: equal scores keep index order, so the lower index is skipped first
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    k_band = torch.tensor(budgets, device=sc.device).view(1, bands, 1)
    rank = torch.arange(band_tokens, device=sc.device).view(1, 1, -1)
    skip = torch.zeros(Fr, bands, band_tokens, dtype=torch.bool, device=sc.device)
    skip.scatter_(2, order, (rank < k_band).expand(Fr, bands, band_tokens))
    # skipped tokens first, each group in ascending index order (stable sort on a 0/1 key)
    split = torch.sort(skip.view(Fr, N).to(torch.uint8), dim=-1, descending=True, stable=True).indices
    return split[:, K:].contiguous(), split[:, :K].contiguous()


def redundancy_increment(
    sc: torch.Tensor, hw, ratio: float, delta_ratio: float, stride: int, block_index: int, bands: int = 1
) -> torch.Tensor:
    """Eq. 4, ``dR = R(K + dK) - R(K)``: sum of the sorted-descending non-forced scores at ranks
    ``[K, K + dK)`` of each band, summed over bands and averaged over frames. Scalar float32."""
    H, W = check_frame(hw, bands, sc.shape[1])
    Fr, N = sc.shape
    band_tokens = N // bands
    k = int(math.floor(ratio * band_tokens))
    dk = max(1, int(math.floor(delta_ratio * band_tokens)))
    forced = on_device(forced_mask(H, W, stride, block_index), sc.device)
    vals = sc.float().masked_fill(forced, float("-inf")).view(Fr, bands, band_tokens)
    top = torch.topk(vals, min(band_tokens, k + dk), dim=-1).values[..., k:]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top.sum(dim=(1, 2)).mean()
