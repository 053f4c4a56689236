"""The vectorised ops against naive loop references written straight from the spec."""
import math

import pytest
import torch

from coredit_video.ops import reconstruct, select_tokens, spatial_coherence

# ---------------------------------------------------------------- naive references


def ref_cells(H, W, bands, gh, gw, sh, sw):
    """Per token (row-major): (band, grid cell key, sub-grid cell key) by explicit loops."""
    hb = H // bands
    out = []
    for i in range(H):
        for j in range(W):
            b = i // hb
            r0 = b * hb  # band's first row anchors the grid
            gi, gj = (i - r0) // gh, j // gw
            # sub-grid anchored at the grid cell's origin, clipped to the cell
            si, sj = (i - r0 - gi * gh) // sh, (j - gj * gw) // sw
            out.append((b, (b, gi, gj), (b, gi, gj, si, sj)))
    return out


def ref_coherence(x, H, W, gh, gw, bands):
    Fr, N, C = x.shape
    cells = ref_cells(H, W, bands, gh, gw, 1, 1)
    sc = torch.zeros(Fr, N, dtype=torch.float64)
    for f in range(Fr):
        for n in range(N):
            members = [m for m in range(N) if cells[m][1] == cells[n][1]]
            xi = x[f, n].double()
            s = 0.0
            for m in members:
                xj = x[f, m].double()
                s += float(xi @ xj / (xi.norm() * xj.norm()))
            sc[f, n] = s / len(members)
    return sc


def ref_select(sc, H, W, ratio, m, l, bands):
    Fr, N = sc.shape
    hb = H // bands
    bt = hb * W
    keeps, skips = [], []
    for f in range(Fr):
        skip = []
        for b in range(bands):
            toks = list(range(b * bt, (b + 1) * bt))
            free = [t for t in toks if ((t // W) + (t % W) - l) % m != 0]
            k = min(math.floor(ratio * bt), len(free), bt - 1)
            free.sort(key=lambda t: (-float(sc[f, t]), t))
            skip += free[:k]
        skip.sort()
        keeps.append([t for t in range(N) if t not in skip])
        skips.append(skip)
    return torch.tensor(keeps), torch.tensor(skips).view(Fr, -1)


def ref_reconstruct(y_full, keep, skip, sc, H, W, grid, sub, bands):
    Fr, N, C = y_full.shape
    cells = ref_cells(H, W, bands, grid[0], grid[1], sub[0], sub[1])
    out = torch.zeros(Fr, N, C, dtype=torch.float64)
    for f in range(Fr):
        kept = set(keep[f].tolist())
        for n in range(N):
            if n in kept:
                out[f, n] = y_full[f, n].double()
                continue
            for level in (2, 1, 0):
                key = cells[n][level] if level else cells[n][0]
                js = [j for j in kept if (cells[j][level] if level else cells[j][0]) == key]
                if js:
                    break
            ws = torch.tensor([max(float(sc[f, j]), 1e-4) for j in js], dtype=torch.float64)
            ys = torch.stack([y_full[f, j].double() for j in js])
            out[f, n] = (ws[:, None] * ys).sum(0) / ws.sum()
    return out


# ---------------------------------------------------------------- cases

CASES = [
    # H, W, grid, subgrid, bands, ratio, m, l
    (7, 5, (3, 2), (2, 1), 1, 0.4, 3, 1),
    (8, 9, 4, 3, 2, 0.3, 3, 0),
    (12, 7, (5, 4), (3, 3), 3, 0.5, 3, 2),
    (6, 6, 6, 3, 1, 0.6, 2, 5),
    (9, 11, (2, 5), (2, 2), 3, 0.25, 2, 1),
    (4, 13, 3, 2, 4, 0.7, 3, 4),
]


@pytest.mark.parametrize("H,W,grid,sub,bands,ratio,m,l", CASES)
def test_coherence_matches_reference(H, W, grid, sub, bands, ratio, m, l):
    torch.manual_seed(H * 100 + W)
    x = torch.randn(2, H * W, 6)
    sc = spatial_coherence(x, (H, W), grid, bands)
    g = grid if isinstance(grid, tuple) else (grid, grid)
    assert sc.dtype == torch.float32 and sc.shape == (2, H * W)
    torch.testing.assert_close(sc.double(), ref_coherence(x, H, W, g[0], g[1], bands), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("H,W,grid,sub,bands,ratio,m,l", CASES)
def test_select_matches_reference(H, W, grid, sub, bands, ratio, m, l):
    torch.manual_seed(H + W)
    sc = torch.randn(3, H * W)
    sc[:, ::4] = 0.5  # ties: lower index must be skipped first
    keep, skip = select_tokens(sc, (H, W), ratio, m, l, bands)
    rk, rs = ref_select(sc, H, W, ratio, m, l, bands)
    assert keep.dtype == skip.dtype == torch.int64
    assert torch.equal(keep, rk) and torch.equal(skip, rs)
    assert (keep.diff(dim=1) > 0).all() and (skip.diff(dim=1) > 0).all()


@pytest.mark.parametrize("H,W,grid,sub,bands,ratio,m,l", CASES)
def test_reconstruct_matches_reference(H, W, grid, sub, bands, ratio, m, l):
    torch.manual_seed(7 * H + W)
    x = torch.randn(2, H * W, 5)
    sc = spatial_coherence(x, (H, W), grid, bands)
    keep, skip = select_tokens(sc, (H, W), ratio, m, l, bands)
    y_full = torch.randn(2, H * W, 4)
    y_keep = y_full.gather(1, keep.unsqueeze(-1).expand(-1, -1, 4))
    y = reconstruct(y_keep, keep, skip, sc, (H, W), grid, sub, bands)
    g = grid if isinstance(grid, tuple) else (grid, grid)
    s = sub if isinstance(sub, tuple) else (sub, sub)
    ref = ref_reconstruct(y_full, keep, skip, sc, H, W, g, s, bands)
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)


def test_fallback_to_grid_and_band():
    """Whole sub-grids (and grids) without retained tokens fall back to the grid, then the band."""
    H, W = 4, 8
    sc = torch.rand(1, H * W)
    # keep only token 0 of band 0 and token 16 of band 1: everything else must copy them
    keep = torch.tensor([[0, 16]])
    skip = torch.tensor([[t for t in range(32) if t not in (0, 16)]])
    y_keep = torch.tensor([[[1.0, 2.0], [-3.0, 5.0]]])
    y = reconstruct(y_keep, keep, skip, sc, (H, W), 2, 1, bands=2)
    assert torch.equal(y[0, :16], y_keep[0, 0].expand(16, 2))
    assert torch.equal(y[0, 16:], y_keep[0, 1].expand(16, 2))


def test_reconstruction_is_convex_and_finite():
    torch.manual_seed(0)
    x = torch.randn(4, 10 * 12, 8)
    x[:, :60] = 0.0  # all-zero tokens: SC 0, weights at the floor
    sc = spatial_coherence(x, (10, 12), 4, 2)
    keep, skip = select_tokens(sc, (10, 12), 0.6, 3, 0, 2)
    y_keep = torch.rand(4, keep.shape[1], 3) + 1.0
    y = reconstruct(y_keep, keep, skip, sc, (10, 12), 4, 2, 2)
    assert torch.isfinite(y).all()
    lo, hi = y_keep.min(1, keepdim=True).values, y_keep.max(1, keepdim=True).values
    assert (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()
    assert (y.abs() > 0.5).all()  # never zero-filled


def test_forced_tokens_always_kept_and_budget_per_band():
    H, W, m, l, bands = 8, 10, 3, 4, 2
    sc = torch.ones(2, H * W)  # every score ties: forced tokens must still be kept
    keep, skip = select_tokens(sc, (H, W), 0.5, m, l, bands)
    forced = [t for t in range(H * W) if ((t // W) + (t % W) - l) % m == 0]
    assert set(forced) <= set(keep[0].tolist())
    per_band = [(skip[0] < 40).sum().item(), (skip[0] >= 40).sum().item()]
    assert per_band == [20, 20]


def test_budget_never_exceeds_non_forced():
    sc = torch.rand(1, 3 * 3)
    keep, skip = select_tokens(sc, (3, 3), 0.95, 2, 0, 1)
    # (i + j) even tokens are forced: 5 of 9, so at most 4 skipped
    assert skip.shape[1] == 4 and set(keep[0].tolist()) == {0, 2, 4, 6, 8}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(dtype):
    torch.manual_seed(1)
    x = torch.randn(2, 6 * 6, 8).to(dtype)
    sc = spatial_coherence(x, (6, 6), 3)
    assert sc.dtype == torch.float32
    keep, skip = select_tokens(sc, (6, 6), 0.3, 3, 0)
    y_keep = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, 8))
    y = reconstruct(y_keep, keep, skip, sc, (6, 6), 3, 2)
    assert y.dtype == dtype
    assert torch.equal(y.gather(1, keep.unsqueeze(-1).expand(-1, -1, 8)), y_keep)


def test_gradcheck_reconstruct():
    torch.manual_seed(2)
    H, W = 5, 6
    x = torch.randn(2, H * W, 3, dtype=torch.float64)
    sc0 = spatial_coherence(x, (H, W), 3).double()
    keep, skip = select_tokens(sc0, (H, W), 0.4, 3, 1)
    y_keep = torch.randn(2, keep.shape[1], 3, dtype=torch.float64, requires_grad=True)
    sc = (sc0.abs() + 0.1).requires_grad_(True)  # away from the 1e-4 clamp

    def f(yk, s):
        return reconstruct(yk, keep, skip, s, (H, W), 3, 2).double()

    # reconstruct computes in float32, so check the float64 graph on a float64 copy of the op
    assert torch.autograd.gradcheck(lambda yk, s: f(yk, s), (y_keep, sc), eps=1e-3, atol=2e-3, rtol=2e-3)


def test_gradcheck_coherence():
    torch.manual_seed(3)
    x = torch.randn(1, 4 * 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spatial_coherence(t, (4, 5), 2).double(), (x,), eps=1e-3,
                                    atol=2e-3, rtol=2e-3)


def test_zero_ratio_keeps_everything():
    sc = torch.rand(2, 20)
    keep, skip = select_tokens(sc, (4, 5), 0.0, 3, 0)
    assert skip.shape == (2, 0) and torch.equal(keep[0], torch.arange(20))
    y = torch.randn(2, 20, 3)
    assert torch.equal(reconstruct(y, keep, skip, sc, (4, 5), 2, 1), y)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: spatial_coherence(torch.randn(1, 10, 4), (3, 4), 2), "N must equal H\\*W"),
        (lambda: spatial_coherence(torch.randn(10, 4), (2, 5), 2), r"\[F, N, C\]"),
        (lambda: spatial_coherence(torch.randn(1, 15, 4), (5, 3), 2, bands=2), "not divisible by bands"),
        (lambda: select_tokens(torch.rand(1, 12), (3, 4), 1.2, 3, 0), "lower the ratio"),
        (lambda: select_tokens(torch.rand(1, 12), (3, 4), 0.2, 0, 0), "stride"),
        (lambda: spatial_coherence(torch.randn(1, 12, 4), (3, 4), 0), "grid must be >= 1"),
    ],
)
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
