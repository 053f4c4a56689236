"""Token-grid partitions: which band, grid cell and sub-grid cell each token of a frame belongs to.

A frame is an ``H x W`` token grid flattened row-major (token ``n = i * W + j``). The frame's
rows are split into ``bands`` equal row bands. Inside a band, grid cells of ``gh x gw`` tokens
are anchored at the band's first row and column 0 and clipped at the band's last row and the
frame's last column. Sub-grid cells of ``sh x sw`` tile each grid cell from the cell's origin
and are clipped to the cell. Every id returned here is global to the frame, so ids of
different bands never collide.

All functions are cached on their (hashable) arguments and return CPU int64 tensors; callers
move them to their device with :func:`on_device`. :func:`cached` and :func:`on_device` serve every cached
index table of the ops (cells, selection patterns, reconstruction) the same way.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Tuple, Union

import torch


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the caller."""
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False


def cached(fn, *args):
    """Call an ``lru_cache``'d builder. Under ``torch.compile`` its body is traced directly (dynamo ignores
    the cache anyway; this says so instead of warning): the tables become constants of the graph."""
    return fn.__wrapped__(*args) if is_compiling() else fn(*args)


_DEVICE_CACHE: dict = {}


def on_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cached copy of a (cached, immutable) index tensor on ``device``."""
    if t.device == device:
        return t
    if is_compiling():  # traced: the copy becomes part of the graph (a constant)
        return t.to(device)
    key = (id(t), str(device))
    hit = _DEVICE_CACHE.get(key)
    if hit is None or hit[0] is not t:
        hit = (t, t.to(device))
        _DEVICE_CACHE[key] = hit
    return hit[1]


GridArg = Union[int, Tuple[int, int]]


def as_pair(value: GridArg, name: str) -> Tuple[int, int]:
    """``3 -> (3, 3)``; validates that both sides are positive integers."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        try:
            pair = tuple(int(v) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair (h, w), got {value!r}") from None
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be >= 1 on both sides, got {value!r}")
    return pair  # type: ignore[return-value]


def check_frame(hw: Tuple[int, int], bands: int, n_tokens: int = None) -> Tuple[int, int]:
    """Validate a frame layout; returns ``(H, W)`` as ints."""
    H, W = as_pair(tuple(hw), "hw")
    if not isinstance(bands, int) or bands < 1:
        raise ValueError(f"bands must be an int >= 1, got {bands!r}")
    if n_tokens is not None and n_tokens != H * W:
        raise ValueError(
            f"token count N={n_tokens} does not match hw={H}x{W} (N must equal H*W = {H * W}); "
            "pass the frame's (padded) token grid as hw"
        )
    if H % bands:
        raise ValueError(
            f"H={H} is not divisible by bands={bands}; pad the frame height to a multiple of "
            f"{bands} (MagicDrive-V2: force_pad_h_for_sp_size) or use a bands value dividing {H}"
        )
    return H, W


@dataclass(frozen=True)
class Partition:
    """Ids per token of one frame layout (all ``[N]`` int64, row-major)."""

    band: torch.Tensor  # band index of each token
    cell: torch.Tensor  # global grid-cell id
    sub: torch.Tensor  # global sub-grid-cell id (only if a sub-grid was asked for)
    n_band: int
    n_cell: int
    n_sub: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=256)
def _partition(H: int, W: int, bands: int, gh: int, gw: int, sh: int, sw: int) -> Partition:
    hb = H // bands
    i = torch.arange(H).view(H, 1).expand(H, W).reshape(-1)
    j = torch.arange(W).view(1, W).expand(H, W).reshape(-1)
    band = i // hb
    ib = i % hb
    rows_g, cols_g = _ceil_div(hb, gh), _ceil_div(W, gw)
    gr, gc = ib // gh, j // gw
    cell = (band * rows_g + gr) * cols_g + gc
    rows_s, cols_s = _ceil_div(gh, sh), _ceil_div(gw, sw)
    sr, sc = (ib - gr * gh) // sh, (j - gc * gw) // sw
    sub = (cell * rows_s + sr) * cols_s + sc
    n_cell = bands * rows_g * cols_g
    return Partition(band, cell, sub, bands, n_cell, n_cell * rows_s * cols_s)


def partition(hw: Tuple[int, int], grid: GridArg, subgrid: GridArg = 1, bands: int = 1) -> Partition:
    """Band, grid-cell and sub-grid-cell ids of every token of an ``H x W`` frame."""
    H, W = check_frame(hw, bands)
    gh, gw = as_pair(grid, "grid")
    sh, sw = as_pair(subgrid, "subgrid")
    return cached(_partition, H, W, bands, gh, gw, sh, sw)


@functools.lru_cache(maxsize=256)
def forced_mask(H: int, W: int, stride: int, ordinal: int) -> torch.Tensor:
    """``[N]`` bool: tokens at ``(i, j)`` with ``(i + j - l) mod m == 0`` are always retained."""
    i = torch.arange(H).view(H, 1)
    j = torch.arange(W).view(1, W)
    return ((i + j - ordinal) % stride == 0).reshape(-1)


@functools.lru_cache(maxsize=1024)
def free_per_band(H: int, W: int, stride: int, ordinal: int, bands: int) -> Tuple[int, ...]:
    """Non-forced tokens of each band (pure Python, no tensors: traceable by ``torch.compile`` as a
    constant). Same count as ``(~forced_mask(H, W, stride, ordinal)).view(bands, -1).sum(1)``."""
    hb = H // bands
    out = []
    for b in range(bands):
        forced = 0
        for i in range(b * hb, (b + 1) * hb):
            r0 = (ordinal - i) % stride  # forced columns: j = r0 (mod stride)
            if r0 < W:
                forced += (W - 1 - r0) // stride + 1
        out.append(hb * W - forced)
    return tuple(out)


@functools.lru_cache(maxsize=256)
def cell_counts(H: int, W: int, bands: int, gh: int, gw: int) -> torch.Tensor:
    """``[n_cell]`` float32 token count of every grid cell, in cell-id order (CPU; see :func:`on_device`).
    Built from Python ints (no data-dependent op), so ``torch.compile`` sees a constant."""
    hb = H // bands
    rows = [min(gh, hb - r) for r in range(0, hb, gh)]
    cols = [min(gw, W - c) for c in range(0, W, gw)]
    return torch.tensor([r * c for _ in range(bands) for r in rows for c in cols], dtype=torch.float32)
