"""Cell-local similarity: every token against the tokens of its own sub-grid cell. Linear in N (a cell holds at most
``sh*sw`` tokens), the neighbourhood the restoration rules beyond eq. 3 look in; and what those rules share: each
skipped token's nearest retained cell-mate, and replacing the skipped rows of an output."""
from __future__ import annotations

import functools
from typing import Tuple

import torch

from .partition import GridArg, as_pair, cached, on_device, partition
from .selection import CallGeometry, flat_rows, gather_tokens


@functools.lru_cache(maxsize=256)
def _cell_table(H: int, W: int, bands: int, grid: Tuple[int, int], subgrid: Tuple[int, int]):
    part = partition((H, W), grid, subgrid, bands)
    N, n_sub = H * W, part.n_sub
    sub = part.sub
    order = torch.argsort(sub, stable=True)  # tokens grouped by cell, ascending index inside a cell
    counts = torch.bincount(sub, minlength=n_sub)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.empty(N, dtype=torch.long)
    slot[order] = torch.arange(N) - start[sub[order]]
    S = int(counts.max())
    members = torch.full((n_sub, S), N, dtype=torch.long)  # N: the padding row
    members[sub, slot] = torch.arange(N)
    return members, slot


def cell_table(hw, grid: GridArg, subgrid: GridArg, bands: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``members [n_sub, S]``: the tokens of every sub-grid cell in ascending order, padded with ``N``; ``slot [N]``:
    each token's position in its cell's row. CPU int64 (see :func:`~.partition.on_device`)."""
    return cached(_cell_table, int(hw[0]), int(hw[1]), bands, as_pair(grid, "grid"), as_pair(subgrid, "subgrid"))


def cell_similarity(x: torch.Tensor, retained: torch.Tensor, hw, grid: GridArg, subgrid: GridArg,
                    bands: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every token with every retained token of its sub-grid cell, cell by cell.

    Args:
        x: ``[F, N, C]`` the tokens compared (any float dtype; compared in float32, differentiable).
        retained: ``[F, N]`` bool, the tokens that may be chosen.

    Returns:
        ``sim [F, n_sub, S, S]`` float32: row ``a`` / column ``b`` of cell ``s`` compare its ``a``-th and ``b``-th
        tokens (:func:`cell_table` order); ``-inf`` where column ``b`` is padding or not retained.
        ``members [n_sub, S]`` on ``x``'s device (padding ``N``).
    """
    Fr, N, C = x.shape
    members, _ = cell_table(hw, grid, subgrid, bands)
    members = on_device(members, x.device)
    xf = x.float()
    xhat = xf / torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(1e-12)
    cells = torch.cat([xhat, xhat.new_zeros(Fr, 1, C)], dim=1)[:, members]  # [F, n_sub, S, C]
    ok = torch.cat([retained, retained.new_zeros(Fr, 1)], dim=1)[:, members]  # [F, n_sub, S]
    sim = cells @ cells.transpose(-1, -2)  # [F, n_sub, S, S]
    return sim.masked_fill(~ok.unsqueeze(-2), float("-inf")), members


def token_rows(cell_values: torch.Tensor, tokens: torch.Tensor, hw, grid: GridArg, subgrid: GridArg,
               bands: int = 1) -> torch.Tensor:
    """The rows of ``cell_values [F, n_sub, S, ...]`` that belong to ``tokens [F, K]``: ``[F, K, ...]``."""
    _, slot = cell_table(hw, grid, subgrid, bands)
    sub = on_device(partition(hw, grid, subgrid, bands).sub, tokens.device)
    frame = torch.arange(tokens.shape[0], device=tokens.device).view(-1, 1)
    return cell_values[frame, sub[tokens], on_device(slot, tokens.device)[tokens]]


def to_cells(y: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """``y [F, N, C]`` laid out by cell: ``[F, n_sub, S, C]`` (zeros on padding)."""
    return torch.cat([y, y.new_zeros(y.shape[0], 1, y.shape[2])], dim=1)[:, members]


def retained_mask(keep: torch.Tensor, n: int) -> torch.Tensor:
    """``[F, n]`` bool: the retained tokens ``keep [F, n_keep]``."""
    mask = torch.zeros(keep.shape[0], n, dtype=torch.bool, device=keep.device)
    return mask.scatter_(1, keep, True)


def nearest_retained(x: torch.Tensor, keep: torch.Tensor, skip: torch.Tensor,
                     geo: CallGeometry) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each skipped token ``skip [F, K]`` of ``x [F, N, C]``: the most similar (cosine) retained token of its
    sub-grid cell ``target [F, K]`` (ties: the lower index) and whether its cell holds one, ``has [F, K]``."""
    b = geo.layout
    with torch.no_grad():
        sim, members = cell_similarity(x.detach(), retained_mask(keep, x.shape[1]), geo.hw, b.grid, b.subgrid,
                                       geo.bands)
        rows = token_rows(sim, skip, geo.hw, b.grid, b.subgrid, geo.bands)  # [F, K, S]
        best = rows.argmax(-1)
        has = torch.isfinite(rows.max(-1).values)
        sub = on_device(partition(geo.hw, b.grid, b.subgrid, geo.bands).sub, x.device)
        cand = members[sub[skip]]  # [F, K, S] candidate tokens, ascending (padding N last)
        target = cand.gather(2, best.unsqueeze(-1)).squeeze(-1)
    return torch.where(has, target, torch.zeros_like(target)), has


def replace_skipped(y_full: torch.Tensor, skip: torch.Tensor, rows: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """``y_full [F, N, C]`` (eq. 3 output) with each skipped row whose cell holds a retained token (``has [F, K]``)
    replaced by its row of ``rows [F, K, C]``; the others keep eq. 3."""
    rows = torch.where(has.unsqueeze(-1), rows, gather_tokens(y_full, skip))
    Fr, N, C = y_full.shape
    return y_full.reshape(Fr * N, C).index_copy(0, flat_rows(skip, N), rows.reshape(-1, C)).view(Fr, N, C)


def copy_restore(y_full: torch.Tensor, skip: torch.Tensor, target: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """``y_full [F, N, C]`` (eq. 3 output) with each skipped row that has a target replaced by its target's row."""
    return replace_skipped(y_full, skip, gather_tokens(y_full, target), has)  # targets are retained: their outputs
