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
    n_sub, n_cell, n_band = part.n_sub, part.n_cell, part.n_band
    acc = torch.promote_types(y_keep.dtype, torch.float32)  # accumulate in fp32 (fp64 stays fp64)
    w = sc.to(acc).gather(1, keep_idx).clamp_min(MIN_WEIGHT)  # [F, R]
    wy = y_keep * w.unsqueeze(-1)  # [F, R, C] in acc (the product promotes y_keep)
    base = torch.arange(Fr, device=dev).view(Fr, 1)
    # weighted sums over the retained tokens of every sub-grid cell; grid cells and bands are unions
    # of consecutive sub-grid / grid ids, so their sums are reshaped sums of the finer level
    sub = on_device(part.sub, dev)
    flat_keep = (base * n_sub + sub[keep_idx]).reshape(-1)
    # (index_add_ along dim 1 of a 3-d tensor: on CPU the 2-d dim-0 form is ~10x slower)
    num_sub = wy.new_zeros(1, Fr * n_sub, C).index_add_(1, flat_keep, wy.reshape(1, -1, C)).view(Fr, n_sub, C)
    den_sub = w.new_zeros(Fr * n_sub).index_add_(0, flat_keep, w.reshape(-1)).view(Fr, n_sub)
    num_cell = num_sub.view(Fr, n_cell, n_sub // n_cell, C).sum(2)
    den_cell = den_sub.view(Fr, n_cell, n_sub // n_cell).sum(2)
    num = torch.cat([num_sub, num_cell, num_cell.view(Fr, n_band, n_cell // n_band, C).sum(2)], dim=1)
    den = torch.cat([den_sub, den_cell, den_cell.view(Fr, n_band, n_cell // n_band).sum(2)], dim=1)
    est = (num / den.clamp_min(MIN_WEIGHT).unsqueeze(-1)).to(y_keep.dtype)  # [F, n_sub + n_cell + n_band, C]
    # each skipped token reads the finest level that has a retained token (den > 0 <=> one is there)
    s_id, c_id = sub[skip_idx], on_device(part.cell, dev)[skip_idx]
    b_id = on_device(part.band, dev)[skip_idx]
    src = torch.where(den.gather(1, c_id + n_sub) > 0, c_id + n_sub, b_id + (n_sub + n_cell))
    src = torch.where(den.gather(1, s_id) > 0, s_id, src)
    n_all = n_sub + n_cell + n_band
    out = y_keep.new_empty(Fr * N, C)
    out.index_copy_(0, (base * N + keep_idx).reshape(-1), y_keep.reshape(-1, C))  # retained rows: exact
    rebuilt = est.view(-1, C).index_select(0, (base * n_all + src).view(-1))
    out.index_copy_(0, (base * N + skip_idx).reshape(-1), rebuilt)
    return out.view(Fr, N, C)
