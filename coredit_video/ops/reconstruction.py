"""Coherence-weighted reconstruction of skipped tokens (paper eq. 3, sub-grid form)."""
from __future__ import annotations

import torch

from .partition import GridArg, check_frame, on_device, partition

MIN_WEIGHT = 1e-4


def reconstruct(
    y_keep: torch.Tensor,
    keep_idx: torch.Tensor,
    skip_idx: torch.Tensor,
    sc: torch.Tensor,
    hw,
    grid: GridArg,
    subgrid: GridArg,
    bands: int = 1,
) -> torch.Tensor:
    """Scatter retained outputs back into the frame and rebuild the skipped ones.

    A skipped token ``i`` gets ``sum_j w_j y_j / sum_j w_j`` over the retained tokens ``j`` of its
    sub-grid cell, with ``w_j = max(SC_j, 1e-4)``; if that cell has no retained token, over its
    grid cell; if that has none, over its band. The result is a convex combination of retained
    outputs (never NaN, never zero-filled). Gradients reach ``y_keep`` and, through ``w``, ``sc``.

    Args:
        y_keep: ``[F, N-K, C]`` outputs of the tokens listed in ``keep_idx``.
        keep_idx: ``[F, N-K]`` int64 retained token indices.
        skip_idx: ``[F, K]`` int64 skipped token indices.
        sc: ``[F, N]`` spatial coherence scores of all tokens.
        hw: ``(H, W)`` frame token grid; grid / subgrid / bands as in selection.

    Returns:
        ``[F, N, C]`` in ``y_keep``'s dtype; retained rows are exactly ``y_keep``.
    """
    if y_keep.dim() != 3 or keep_idx.dim() != 2 or skip_idx.dim() != 2 or sc.dim() != 2:
        raise ValueError(
            "expected y_keep [F, N-K, C], keep_idx [F, N-K], skip_idx [F, K], sc [F, N]; got "
            f"{tuple(y_keep.shape)}, {tuple(keep_idx.shape)}, {tuple(skip_idx.shape)}, {tuple(sc.shape)}"
        )
    Fr, N = sc.shape
    R, K = keep_idx.shape[1], skip_idx.shape[1]
    C = y_keep.shape[-1]
    if R + K != N or y_keep.shape[:2] != keep_idx.shape or skip_idx.shape[0] != Fr or keep_idx.shape[0] != Fr:
        raise ValueError(
            f"inconsistent shapes: keep {tuple(keep_idx.shape)} + skip {tuple(skip_idx.shape)} must cover "
            f"sc {tuple(sc.shape)} and y_keep {tuple(y_keep.shape)} must match keep_idx"
        )
    check_frame(hw, bands, N)
    if K == 0:
        return y_keep.new_empty(Fr, N, C).scatter(1, keep_idx.unsqueeze(-1).expand(Fr, R, C), y_keep)
    if R == 0:
        raise ValueError("every token was skipped; there is nothing to reconstruct from (lower the ratio)")
    part = partition(hw, grid, subgrid, bands)
    dev = y_keep.device
    levels = [
        (on_device(part.sub, dev), part.n_sub),
        (on_device(part.cell, dev), part.n_cell),
        (on_device(part.band, dev), part.n_band),
    ]
    acc = torch.promote_types(y_keep.dtype, torch.float32)  # accumulate in fp32 (fp64 stays fp64)
    yk = y_keep.to(acc)
    w = sc.to(acc).gather(1, keep_idx).clamp_min(MIN_WEIGHT)  # [F, R]
    wy = yk * w.unsqueeze(-1)
    Fi = torch.arange(Fr, device=dev).view(Fr, 1)
    out_skip = None
    found = torch.zeros(Fr, K, dtype=torch.bool, device=dev)
    for ids, n in levels:
        keep_ids = ids[keep_idx]  # [F, R] cell of each retained token
        skip_ids = ids[skip_idx]  # [F, K]
        flat_keep = (Fi * n + keep_ids).reshape(-1)
        num = wy.new_zeros(Fr * n, C).index_add_(0, flat_keep, wy.reshape(-1, C))
        den = w.new_zeros(Fr * n).index_add_(0, flat_keep, w.reshape(-1))
        cnt = torch.bincount(flat_keep, minlength=Fr * n)
        flat_skip = (Fi * n + skip_ids).reshape(-1)
        has = (cnt[flat_skip] > 0).view(Fr, K)
        est = (num[flat_skip] / den[flat_skip].clamp_min(MIN_WEIGHT).unsqueeze(-1)).view(Fr, K, C)
        use = has & ~found
        out_skip = est if out_skip is None else torch.where(use.unsqueeze(-1), est, out_skip)
        found = found | has
        if n == part.n_band:
            break
    out = torch.cat([yk, out_skip], dim=1).to(y_keep.dtype)
    index = torch.cat([keep_idx, skip_idx], dim=1).unsqueeze(-1).expand(Fr, N, C)
    return out.new_empty(Fr, N, C).scatter(1, index, out)
