"""Spatial coherence (paper eq. 1-2): ``SC_i = xhat_i . mean(xhat over i's grid cell)``. Linear in N."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .partition import GridArg, check_frame, on_device, partition


def cell_mean(values: torch.Tensor, cell_ids: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Mean of ``values [F, N, C]`` over the tokens of each cell -> ``[F, n_cells, C]``."""
    Fr, _, C = values.shape
    sums = values.new_zeros(Fr, n_cells, C).index_add_(1, cell_ids, values)
    counts = torch.bincount(cell_ids, minlength=n_cells).to(values.dtype)
    return sums / counts.clamp_min(1).view(1, -1, 1)


def spatial_coherence(x: torch.Tensor, hw, grid: GridArg, bands: int = 1) -> torch.Tensor:
    """Spatial coherence of every token of every frame.

    Args:
        x: ``[F, N, C]`` tokens (any float dtype), ``N = H*W`` row-major per frame.
        hw: ``(H, W)`` token grid of one frame.
        grid: grid cell size, an int or ``(gh, gw)``; cells are anchored per band and clipped.
        bands: number of equal row bands (sequence-parallel layout), ``H % bands == 0``.

    Returns:
        ``[F, N]`` float32 scores in ``[-1, 1]`` (0 for an all-zero token).
    """
    if x.dim() != 3:
        raise ValueError(f"x must be [F, N, C] (frames, tokens, channels), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got {x.dtype}")
    check_frame(hw, bands, x.shape[1])
    part = partition(hw, grid, 1, bands)
    cell = on_device(part.cell, x.device)
    xhat = F.normalize(x.float(), dim=-1)
    g = cell_mean(xhat, cell, part.n_cell)
    return (xhat * g.index_select(1, cell)).sum(-1)
