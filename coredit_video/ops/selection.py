"""Scoring and selection: spatial coherence (paper eq. 1-2, ``SC_i = xhat_i . mean(xhat over i's grid cell)``,
linear in N), then per frame and band, skip the K most coherent tokens that are not forced. Also what every method
shares around it: a call's geometry (:class:`CallGeometry`, its per-band budgets) and the row gather / scatter of
the selected tokens."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .partition import (GridArg, as_pair, cached, cell_counts, check_frame, forced_mask, free_per_band,
                        is_compiling, on_device, partition)


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


def band_budgets(hw, ratio: float, stride: int, ordinal: int, bands: int = 1) -> List[int]:
    """Number of skipped tokens in each band: ``floor(r * band_tokens)``, never more than the band's
    non-forced tokens, and always leaving at least one retained token to reconstruct from."""
    H, W = check_frame(hw, bands)
    check_ratio(ratio)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride (m) must be an int >= 1, got {stride!r}")
    band_tokens = H * W // bands
    free = cached(free_per_band, H, W, stride, ordinal, bands)  # pure Python: no tensor, no sync
    k = int(math.floor(ratio * band_tokens))
    return [min(k, f, band_tokens - 1) for f in free]


def check_ratio(ratio, max_ratio: Optional[float] = None, name: str = "pruning ratio") -> float:
    """The one ratio check (ops, config, controller, plans, FLOPs): a real number in ``[0, 1)`` and, with a
    cap, at most ``max_ratio`` (``prune.max_ratio``). Returns it as a float."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), got {ratio!r}")
    r = float(ratio)
    if not 0.0 <= r < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {ratio!r}; lower the ratio")
    if max_ratio is not None and r > max_ratio + 1e-12:
        raise ValueError(f"{name} {r} exceeds max_ratio={max_ratio}; lower the ratio or raise prune.max_ratio")
    return r


def select_tokens(
    sc: torch.Tensor, hw, ratio: float, stride: int, ordinal: int, bands: int = 1,
    budgets: Optional[List[int]] = None, must_keep: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split each frame's tokens into retained and skipped ones.

    Args:
        sc: ``[F, N]`` spatial coherence scores (from :func:`spatial_coherence`).
        hw: ``(H, W)`` frame token grid.
        ratio: fraction ``r`` of each band's tokens to skip, ``0 <= r < 1``.
        stride: ``m``; tokens at ``(i, j)`` with ``(i + j - ordinal) % m == 0`` are kept.
        ordinal: ordinal ``l`` of the block among the prunable blocks.
        bands: equal row bands; budgets are counted per band.
        budgets: skip count per band instead of :func:`band_budgets` (``ratio`` is then unused); each at most the
            band's tokens that are neither forced nor in ``must_keep`` in any frame.
        must_keep: ``[F, N]`` bool, tokens kept besides the m-stride ones (e.g. the step cache's stalest).

    Returns:
        ``keep_idx [F, N-K]`` and ``skip_idx [F, K]`` int64 token indices, each sorted ascending,
        where ``K`` is the sum of the per-band budgets. Among equal scores the lower index is skipped.
    """
    if sc.dim() != 2:
        raise ValueError(f"sc must be [F, N], got shape {tuple(sc.shape)}")
    H, W = check_frame(hw, bands, sc.shape[1])
    if budgets is None:
        budgets = band_budgets((H, W), ratio, stride, ordinal, bands)
    Fr, N = sc.shape
    band_tokens = N // bands
    K = sum(budgets)
    dev = sc.device
    all_idx = torch.arange(N, device=dev).expand(Fr, N)
    if K == 0:
        return all_idx.contiguous(), all_idx[:, :0].contiguous()
    # The NaN check needs the scores on the host: done where that is free (CPU, eager). On CUDA it would
    # stall the launch queue once per block; there a NaN input gives NaN outputs, as dense attention does.
    if dev.type == "cpu" and not is_compiling() and not torch.isfinite(sc).all():
        raise ValueError("spatial coherence scores contain NaN or inf; check the block input for NaN")
    forced = on_device(cached(forced_mask, H, W, stride, ordinal), dev)
    key = sc.float()
    key = torch.where(key == 0, torch.zeros_like(key), key)  # -0.0 == +0.0, as for the sort
    kept = forced if must_keep is None else forced | must_keep
    key = key.masked_fill(kept, float("-inf")).view(Fr, bands, band_tokens)
    # Unique int64 keys ordered by (score, -index): top-k on them is exactly the stable descending sort's
    # first k (among equal scores the lower index first), on every device, with no sort of the band.
    bits = key.view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # float order as signed int32 (-inf lowest)
    tie = torch.arange(band_tokens - 1, -1, -1, device=dev)  # lower index -> larger
    comp = ordered.to(torch.int64) * (1 << 32) + tie
    k_max = max(budgets)
    skip = torch.zeros(Fr, bands, band_tokens, dtype=torch.bool, device=dev)
    if min(budgets) == k_max:
        top = torch.topk(comp, k_max, dim=-1, sorted=False).indices
        skip.scatter_(2, top, True)
    else:
        top = torch.topk(comp, k_max, dim=-1, sorted=True).indices
        k_band = torch.tensor(budgets, device=dev).view(1, bands, 1)
        rank = torch.arange(k_max, device=dev).view(1, 1, -1)
        skip.scatter_(2, top, (rank < k_band).expand(Fr, bands, k_max))
    # skipped tokens first, each group in ascending index order: positions from a running count
    skip = skip.view(Fr, N)
    n_skip = skip.cumsum(1)  # skipped tokens up to and including n
    pos = torch.where(skip, n_skip - 1, K + all_idx - n_skip)
    split = torch.empty(Fr, N, dtype=torch.int64, device=dev).scatter_(1, pos, all_idx)
    return split[:, K:].contiguous(), split[:, :K].contiguous()


def redundancy_increment(
    sc: torch.Tensor, hw, ratio: float, delta_ratio: float, stride: int, ordinal: int, bands: int = 1
) -> torch.Tensor:
    """Eq. 4, ``dR = R(K + dK) - R(K)``: sum of the sorted-descending non-forced scores at ranks
    ``[K, K + dK)`` of each band, summed over bands and averaged over frames. Scalar float32."""
    H, W = check_frame(hw, bands, sc.shape[1])
    Fr, N = sc.shape
    band_tokens = N // bands
    k = int(math.floor(ratio * band_tokens))
    dk = max(1, int(math.floor(delta_ratio * band_tokens)))
    forced = on_device(cached(forced_mask, H, W, stride, ordinal), sc.device)
    vals = sc.float().masked_fill(forced, float("-inf")).view(Fr, bands, band_tokens)
    top = torch.topk(vals, min(band_tokens, k + dk), dim=-1).values[..., k:]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top.sum(dim=(1, 2)).mean()


@dataclass(frozen=True)
class BlockLayout:
    """Where a prunable block's tokens are scored and kept: its ``ordinal`` among the prunable blocks (the paper's
    ``l``; it shifts the m-stride pattern), its grid and sub-grid (cells), its m-stride."""

    ordinal: int
    grid: Tuple[int, int]
    subgrid: Tuple[int, int]
    stride: int


@dataclass(frozen=True)
class CallGeometry:
    """One self-attention call's frame geometry on this rank: ``hw`` (this rank's rows x ``W``), the effective
    ``ratio``, the block's ``layout`` (its m-stride pattern shifted into this rank's rows), this rank's ``bands``
    and their skip ``budgets`` (one per band)."""

    hw: Tuple[int, int]
    ratio: float
    layout: BlockLayout
    bands: int
    budgets: Tuple[int, ...]

    @property
    def skipped(self) -> int:
        return sum(self.budgets)

    @classmethod
    def of(cls, hw, ratio: float, layout: BlockLayout, bands: int = 1,
           budgets: Optional[Sequence[int]] = None) -> CallGeometry:
        """The geometry of a call on a frame of ``hw`` tokens; ``budgets`` from :func:`band_budgets` unless given."""
        if budgets is None:
            budgets = band_budgets(hw, ratio, layout.stride, layout.ordinal, bands)
        return cls((int(hw[0]), int(hw[1])), ratio, layout, bands, tuple(budgets))


def flat_rows(idx: torch.Tensor, n: int) -> torch.Tensor:
    """``idx [F, k]`` token indices of each of ``F`` frames of ``n`` tokens -> ``[F*k]`` row indices into the frames
    flattened to ``[F*n]`` rows."""
    return (idx + torch.arange(idx.shape[0], device=idx.device).view(-1, 1) * n).reshape(-1)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [F, N, C]``, ``idx [F, n]`` -> ``[F, n, C]`` (contiguous).

    One row gather over the flattened frames (``index_select``: whole rows, one index per row), not an
    element-wise ``gather`` with an expanded index."""
    Fr, N, C = x.shape
    return x.reshape(Fr * N, C).index_select(0, flat_rows(idx, N)).view(Fr, idx.shape[1], C)


def scatter_rows(y_keep: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """``y_keep [F, n_keep, C]`` at rows ``keep [F, n_keep]`` of a zero ``[F, n, C]``."""
    Fr, _, C = y_keep.shape
    return y_keep.new_zeros(Fr * n, C).index_copy(0, flat_rows(keep, n), y_keep.reshape(-1, C)).view(Fr, n, C)
