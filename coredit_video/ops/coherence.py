"""Spatial coherence (paper eq. 1-2): ``SC_i = xhat_i . mean(xhat over i's grid cell)``. Linear in N."""
from __future__ import annotations

import torch

from .partition import GridArg, as_pair, cell_counts, check_frame, partition
from .tables import cached, on_device


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
    H, W = check_frame(hw, bands, x.shape[1])
    gh, gw = as_pair(grid, "grid")
    part = partition((H, W), (gh, gw), 1, bands)
    cell = on_device(part.cell, x.device)
    counts = on_device(cached(cell_counts, H, W, bands, gh, gw), x.device)
    # xhat = x / max(|x|, eps) as F.normalize, in float32; g = cell mean of xhat; sc = xhat . g
    xf = x.float()
    xhat = xf / torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(1e-12)
    g = xhat.new_zeros(x.shape[0], part.n_cell, x.shape[2]).index_add_(1, cell, xhat)
    g = g / counts.view(1, -1, 1)
    return torch.einsum("fnc,fnc->fn", xhat, g.index_select(1, cell))
