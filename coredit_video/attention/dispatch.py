"""Kernel dispatch for the two CoReDiT ops the attention layer calls: fused Triton kernels when
:func:`coredit_video.kernels.use_triton` says so, else the pure-torch reference in :mod:`coredit_video.ops`.

Shapes and semantics are those of :func:`coredit_video.ops.spatial_coherence` and
:func:`coredit_video.ops.reconstruct`; ``ops`` itself never imports the kernels.
"""
from __future__ import annotations

import torch

from .. import kernels, ops


def spatial_coherence(x: torch.Tensor, hw, grid, bands: int = 1) -> torch.Tensor:
    """``x [F, N, C]`` -> ``sc [F, N]`` float32 (see :func:`coredit_video.ops.spatial_coherence`)."""
    if x.dim() == 3 and x.is_floating_point() and kernels.use_triton(x):
        return kernels.spatial_coherence(x, hw, grid, bands)
    return ops.spatial_coherence(x, hw, grid, bands)


def reconstruct(y_keep: torch.Tensor, keep_idx: torch.Tensor, skip_idx: torch.Tensor, sc: torch.Tensor, hw, grid,
                subgrid, bands: int = 1) -> torch.Tensor:
    """``y_keep [F, N-K, C]`` -> ``[F, N, C]`` (see :func:`coredit_video.ops.reconstruct`)."""
    if skip_idx.dim() == 2 and skip_idx.shape[1] and keep_idx.shape[1] and kernels.use_triton(y_keep, sc):
        return kernels.reconstruct(y_keep, keep_idx, skip_idx, sc, hw, grid, subgrid, bands)
    return ops.reconstruct(y_keep, keep_idx, skip_idx, sc, hw, grid, subgrid, bands)
