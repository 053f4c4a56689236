"""Triton kernels for scoring and reconstruction (imported only when ``triton`` is installed).

Each kernel reproduces the torch reference of :mod:`coredit_video.ops` (same formulas, same float32
accumulation, same fallbacks); only the summation order differs, so results agree to float32 rounding.
Every reduction runs in a fixed order inside one program (no atomics): the same input gives the same
output bit for bit, run after run, so a gradient-checkpoint recompute re-selects the same tokens.

Scoring, one program per (grid cell, frame), cells of at most ``CP`` tokens::

    pass 1 over C: |x_t|^2 of the cell's tokens             -> norm_t = max(|x_t|, 1e-12)
    pass 2 over C: xhat = x_t / norm_t; g = mean_t xhat (per channel block); sc_t += xhat_t . g

x is read twice per cell (the second time from L2). Reconstruction, three launches::

    1. per (sub-grid cell, frame): copy the retained rows to the output (exactly) and write
       num = sum_j w_j y_j, den = sum_j w_j over the cell's retained tokens (w = max(sc, 1e-4))
    2. (torch, small) grid-cell and band sums: reshaped sums of consecutive sub-grid / grid ids
    3. per (block of skipped tokens, frame): the finest level with den > 0 -> num / max(den, 1e-4)
"""
from __future__ import annotations

import functools
from typing import Tuple

import torch
import triton
import triton.language as tl

from ..ops.partition import as_pair, check_frame, partition

MIN_WEIGHT = 1e-4
MIN_W = tl.constexpr(MIN_WEIGHT)


def _next_pow2(n: int) -> int:
    return 1 << max(1, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=256)
def _groups_cpu(ids_key: Tuple, n_groups: int):
    """Token lists of every group: ``tok [n_groups, P]`` int32 (padded with 0), ``cnt [n_groups]`` int32."""
    H, W, bands, gh, gw, sh, sw, level = ids_key
    part = partition((H, W), (gh, gw), (sh, sw), bands)
    ids = part.sub if level == "sub" else part.cell
    cnt = torch.bincount(ids, minlength=n_groups)
    P = _next_pow2(int(cnt.max()))
    order = torch.argsort(ids, stable=True)  # tokens grouped by id, ascending inside a group
    start = torch.cumsum(cnt, 0) - cnt
    slot = torch.arange(ids.numel()) - start[ids[order]]
    tok = torch.zeros(n_groups, P, dtype=torch.int32)
    tok[ids[order], slot] = order.to(torch.int32)
    return tok, cnt.to(torch.int32), P


_TABLES: dict = {}


def _tables(key: Tuple, device: torch.device):
    """Device copies of the index tables of one frame layout (cached)."""
    hit = _TABLES.get((key, str(device)))
    if hit is None:
        H, W, bands, gh, gw, sh, sw = key
        part = partition((H, W), (gh, gw), (sh, sw), bands)
        cell_tok, cell_cnt, CP = _groups_cpu(key + ("cell",), part.n_cell)
        sub_tok, sub_cnt, SP = _groups_cpu(key + ("sub",), part.n_sub)
        hit = {
            "cell_tok": cell_tok.to(device), "cell_cnt": cell_cnt.to(device), "CP": CP,
            "sub_tok": sub_tok.to(device), "sub_cnt": sub_cnt.to(device), "SP": SP,
            "tok_sub": part.sub.to(device=device, dtype=torch.int32),
            "tok_cell": part.cell.to(device=device, dtype=torch.int32),
            "tok_band": part.band.to(device=device, dtype=torch.int32),
            "n_sub": part.n_sub, "n_cell": part.n_cell, "n_band": part.n_band,
        }
        _TABLES[(key, str(device))] = hit
    return hit


def _block_c(rows: int, C: int, cap: int = 128) -> int:
    """Channel block so that a ``rows x BLOCK_C`` float32 tile stays near 8K elements."""
    return max(16, min(cap, _next_pow2(C), _next_pow2(8192 // max(rows, 1))))


def _warps(rows: int, block_c: int) -> int:
    return 8 if rows * block_c >= 8192 else 4


# ----------------------------------------------------------------------------------------- scoring
@triton.jit
def _coherence_kernel(x_ptr, tok_ptr, cnt_ptr, sc_ptr, N, C, stride_f, stride_n,
                      CP: tl.constexpr, BLOCK_C: tl.constexpr):
    cell = tl.program_id(0)
    f = tl.program_id(1).to(tl.int64)
    cnt = tl.load(cnt_ptr + cell)
    offs_t = tl.arange(0, CP)
    tmask = offs_t < cnt
    tok = tl.load(tok_ptr + cell * CP + offs_t, mask=tmask, other=0).to(tl.int64)
    rows = x_ptr + f * stride_f + tok * stride_n
    ss = tl.zeros([CP], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        m = tmask[:, None] & (offs_c < C)[None, :]
        v = tl.load(rows[:, None] + offs_c[None, :], mask=m, other=0.0).to(tl.float32)
        ss += tl.sum(v * v, axis=1)
    nrm = tl.maximum(tl.sqrt(ss), 1e-12)
    cntf = tl.maximum(cnt, 1).to(tl.float32)
    dot = tl.zeros([CP], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        m = tmask[:, None] & (offs_c < C)[None, :]
        v = tl.load(rows[:, None] + offs_c[None, :], mask=m, other=0.0).to(tl.float32)
        xh = v / nrm[:, None]
        g = tl.sum(xh, axis=0) / cntf
        dot += tl.sum(xh * g[None, :], axis=1)
    tl.store(sc_ptr + f * N + tok, dot, mask=tmask)


def spatial_coherence_triton(x: torch.Tensor, hw, grid, bands: int = 1) -> torch.Tensor:
    """``x [F, N, C]`` -> ``sc [F, N]`` float32, as :func:`coredit_video.ops.spatial_coherence`."""
    H, W = check_frame(hw, bands, x.shape[1])
    gh, gw = as_pair(grid, "grid")
    if x.stride(-1) != 1:
        x = x.contiguous()
    Fr, N, C = x.shape
    t = _tables((H, W, bands, gh, gw, 1, 1), x.device)
    sc = torch.empty(Fr, N, dtype=torch.float32, device=x.device)
    if Fr == 0 or N == 0:
        return sc
    CP = t["CP"]
    bc = _block_c(CP, C)
    _coherence_kernel[(t["n_cell"], Fr)](
        x, t["cell_tok"], t["cell_cnt"], sc, N, C, x.stride(0), x.stride(1),
        CP=CP, BLOCK_C=bc, num_warps=_warps(CP, bc),
    )
    return sc


# ---------------------------------------------------------------------------------- reconstruction
@triton.jit
def _recon_sub_kernel(y_ptr, pos_ptr, sc_ptr, tok_ptr, cnt_ptr, out_ptr, num_ptr, den_ptr,
                      N, R, C, n_all, SP: tl.constexpr, BLOCK_C: tl.constexpr):
    s = tl.program_id(0)
    f = tl.program_id(1).to(tl.int64)
    cnt = tl.load(cnt_ptr + s)
    offs_t = tl.arange(0, SP)
    tmask = offs_t < cnt
    tok = tl.load(tok_ptr + s * SP + offs_t, mask=tmask, other=0).to(tl.int64)
    p = tl.load(pos_ptr + f * N + tok, mask=tmask, other=-1)
    kept = tmask & (p >= 0)
    w = tl.load(sc_ptr + f * N + tok, mask=kept, other=0.0).to(tl.float32)
    w = tl.where(kept, tl.maximum(w, MIN_W), 0.0)
    tl.store(den_ptr + f * n_all + s, tl.sum(w, axis=0))
    yrow = y_ptr + (f * R + tl.where(kept, p, 0).to(tl.int64)) * C
    orow = out_ptr + (f * N + tok) * C
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cm = offs_c < C
        m = kept[:, None] & cm[None, :]
        v = tl.load(yrow[:, None] + offs_c[None, :], mask=m, other=0.0)
        tl.store(orow[:, None] + offs_c[None, :], v, mask=m)  # retained rows: an exact copy
        acc = tl.sum(v.to(tl.float32) * w[:, None], axis=0)
        tl.store(num_ptr + (f * n_all + s) * C + offs_c, acc, mask=cm)


@triton.jit
def _recon_skip_kernel(skip_ptr, tsub_ptr, tcell_ptr, tband_ptr, num_ptr, den_ptr, out_ptr,
                       N, K, C, n_sub, n_cell, n_all, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    kb = tl.program_id(0)
    f = tl.program_id(1).to(tl.int64)
    offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    km = offs_k < K
    n = tl.load(skip_ptr + f * K + offs_k, mask=km, other=0).to(tl.int64)
    s = tl.load(tsub_ptr + n, mask=km, other=0)
    c = tl.load(tcell_ptr + n, mask=km, other=0) + n_sub
    b = tl.load(tband_ptr + n, mask=km, other=0) + (n_sub + n_cell)
    ds = tl.load(den_ptr + f * n_all + s, mask=km, other=0.0)
    dc = tl.load(den_ptr + f * n_all + c, mask=km, other=0.0)
    src = tl.where(ds > 0, s, tl.where(dc > 0, c, b)).to(tl.int64)
    d = tl.maximum(tl.load(den_ptr + f * n_all + src, mask=km, other=1.0), MIN_W)
    srow = num_ptr + (f * n_all + src) * C
    orow = out_ptr + (f * N + n) * C
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        m = km[:, None] & (offs_c < C)[None, :]
        v = tl.load(srow[:, None] + offs_c[None, :], mask=m, other=0.0)
        est = v / d[:, None]
        tl.store(orow[:, None] + offs_c[None, :], est.to(out_ptr.dtype.element_ty), mask=m)


def reconstruct_triton(y_keep, keep_idx, skip_idx, sc, hw, grid, subgrid, bands: int = 1) -> torch.Tensor:
    """As :func:`coredit_video.ops.reconstruct` (shapes already validated there, ``K > 0``, ``R > 0``)."""
    H, W = check_frame(hw, bands)
    gh, gw = as_pair(grid, "grid")
    sh, sw = as_pair(subgrid, "subgrid")
    Fr, N = sc.shape
    R, K = keep_idx.shape[1], skip_idx.shape[1]
    C = y_keep.shape[-1]
    dev = y_keep.device
    t = _tables((H, W, bands, gh, gw, sh, sw), dev)
    n_sub, n_cell, n_band = t["n_sub"], t["n_cell"], t["n_band"]
    n_all = n_sub + n_cell + n_band
    y_keep = y_keep.contiguous()
    sc = sc.to(torch.float32).contiguous()
    skip_idx = skip_idx.contiguous()
    pos = torch.full((Fr, N), -1, dtype=torch.int32, device=dev)
    pos.scatter_(1, keep_idx, torch.arange(R, dtype=torch.int32, device=dev).expand(Fr, R))
    out = torch.empty(Fr, N, C, dtype=y_keep.dtype, device=dev)
    num = torch.empty(Fr, n_all, C, dtype=torch.float32, device=dev)
    den = torch.empty(Fr, n_all, dtype=torch.float32, device=dev)
    SP = t["SP"]
    _recon_sub_kernel[(n_sub, Fr)](
        y_keep, pos, sc, t["sub_tok"], t["sub_cnt"], out, num, den, N, R, C, n_all,
        SP=SP, BLOCK_C=_block_c(SP, C, 256), num_warps=_warps(SP, _block_c(SP, C, 256)),
    )
    # coarser levels: consecutive ids, so reshaped sums (deterministic torch reductions, small tensors)
    num[:, n_sub:n_sub + n_cell] = num[:, :n_sub].view(Fr, n_cell, n_sub // n_cell, C).sum(2)
    den[:, n_sub:n_sub + n_cell] = den[:, :n_sub].view(Fr, n_cell, n_sub // n_cell).sum(2)
    num[:, n_sub + n_cell:] = num[:, n_sub:n_sub + n_cell].view(Fr, n_band, n_cell // n_band, C).sum(2)
    den[:, n_sub + n_cell:] = den[:, n_sub:n_sub + n_cell].view(Fr, n_band, n_cell // n_band).sum(2)
    BLOCK_K = 16
    _recon_skip_kernel[(triton.cdiv(K, BLOCK_K), Fr)](
        skip_idx, t["tok_sub"], t["tok_cell"], t["tok_band"], num, den, out, N, K, C, n_sub, n_cell, n_all,
        BLOCK_K=BLOCK_K, BLOCK_C=_block_c(BLOCK_K, C, 256), num_warps=4,
    )
    return out
