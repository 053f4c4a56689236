"""Fast paths against references: the top-k selection against the stable-sort rule it replaced, the
pure-Python tables against their tensor versions, the kernel dispatch rule, and the Triton kernels
against the torch path.

The Triton parity tests run on CUDA when triton imports, and on CPU under the Triton interpreter
(``TRITON_INTERPRET=1`` with triton installed), which is how CI runs them: the README's test command installs
the pinned CPU triton (``.ci/triton.txt``) and sets ``TRITON_INTERPRET=1``. They skip only when triton is not
installed, or (with triton installed) on a machine with neither CUDA nor ``TRITON_INTERPRET=1``; a triton that
is installed but fails to import is a failure, not a skip. Nothing here is timed."""
import importlib.util
import math

import pytest
import torch

from coredit_video import kernels
from coredit_video.attention import BlockLayout, pruned_self_attention
from coredit_video.embedded.host.layers import Attention
from coredit_video.kernels import reconstruct, spatial_coherence
from coredit_video.ops import band_budgets, select_tokens
from coredit_video.ops.partition import _partition, cell_counts, forced_mask, free_per_band

CASES = [
    # H, W, grid, subgrid, bands, ratio, m, l
    (7, 5, (3, 2), (2, 1), 1, 0.4, 3, 1),
    (8, 9, 4, 3, 2, 0.3, 3, 0),
    (12, 7, (5, 4), (3, 3), 3, 0.5, 3, 2),
    (4, 13, 3, 2, 4, 0.7, 3, 4),
    (16, 10, 8, 4, 2, 0.26, 3, 5),
]


def sort_select(sc, hw, ratio, m, l, bands):
    """The previous implementation: stable descending sort per band, then a stable 0/1 sort."""
    H, W = hw
    Fr, N = sc.shape
    bt = N // bands
    budgets = band_budgets(hw, ratio, m, l, bands)
    K = sum(budgets)
    forced = forced_mask(H, W, m, l)
    key = sc.float().masked_fill(forced, float("-inf")).view(Fr, bands, bt)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    k_band = torch.tensor(budgets).view(1, bands, 1)
    rank = torch.arange(bt).view(1, 1, -1)
    skip = torch.zeros(Fr, bands, bt, dtype=torch.bool)
    skip.scatter_(2, order, (rank < k_band).expand(Fr, bands, bt))
    split = torch.sort(skip.view(Fr, N).to(torch.uint8), dim=-1, descending=True, stable=True).indices
    return split[:, K:], split[:, :K]


@pytest.mark.parametrize("H,W,grid,sub,bands,ratio,m,l", CASES)
def test_topk_selection_equals_stable_sort(H, W, grid, sub, bands, ratio, m, l):
    g = torch.Generator().manual_seed(H * W)
    sc = torch.randn(4, H * W, generator=g)
    sc[0] = 0.25  # all tied
    sc[1, ::3] = -0.0  # -0.0 and +0.0 tie, as in the sort
    sc[1, 1::3] = 0.0
    sc[2] = torch.randint(-2, 3, (H * W,), generator=g).float() / 2  # many ties, negative values
    keep, skip = select_tokens(sc, (H, W), ratio, m, l, bands)
    rk, rs = sort_select(sc, (H, W), ratio, m, l, bands)
    assert torch.equal(keep, rk) and torch.equal(skip, rs)


def test_topk_selection_unequal_band_budgets():
    # 3x3 bands of a 6x3 frame with m=2: bands hold 4 and 5 non-forced tokens -> budgets differ at r=0.9
    assert len(set(band_budgets((6, 3), 0.9, 2, 0, 2))) == 2
    sc = torch.rand(3, 18, generator=torch.Generator().manual_seed(0))
    keep, skip = select_tokens(sc, (6, 3), 0.9, 2, 0, 2)
    rk, rs = sort_select(sc, (6, 3), 0.9, 2, 0, 2)
    assert torch.equal(keep, rk) and torch.equal(skip, rs)


@pytest.mark.parametrize("H,W,bands,m,l", [(7, 5, 1, 3, 1), (8, 9, 2, 3, 0), (56, 100, 8, 3, 7), (6, 3, 2, 2, 0),
                                           (4, 13, 4, 5, 12)])
def test_python_tables_match_tensor_versions(H, W, bands, m, l):
    free = (~forced_mask(H, W, m, l)).view(bands, -1).sum(1).tolist()
    assert list(free_per_band(H, W, m, l, bands)) == free
    for gh, gw in [(3, 2), (4, 4), (8, 8), (6, 6), (5, 7)]:
        part = _partition(H, W, bands, gh, gw, 1, 1)
        assert torch.equal(cell_counts(H, W, bands, gh, gw), torch.bincount(part.cell, minlength=part.n_cell).float())


def test_budget_rule_unchanged():
    for H, W, bands, r, m, l in [(56, 100, 8, 0.26, 3, 0), (53, 100, 1, 0.45, 3, 4), (3, 3, 1, 0.95, 2, 0)]:
        bt = H * W // bands
        free = (~forced_mask(H, W, m, l)).view(bands, -1).sum(1).tolist()
        assert band_budgets((H, W), r, m, l, bands) == [min(math.floor(r * bt), f, bt - 1) for f in free]


def test_dispatch_rule():
    x = torch.randn(2, 12, 8)
    assert not kernels.use_triton(x)  # CPU in "auto": never
    prev = kernels.set_mode("torch")
    try:
        assert not kernels.use_triton(x)
    finally:
        kernels.set_mode(prev)
    with pytest.raises(ValueError, match="kernel mode"):
        kernels.set_mode("cuda")
    if not kernels.HAS_TRITON:
        with pytest.raises(RuntimeError, match="triton"):
            kernels.set_mode("triton")


# ------------------------------------------------------------------ Triton kernels vs the torch path
DEVICES = []
if kernels.HAS_TRITON and torch.cuda.is_available():
    DEVICES.append("cuda")
if kernels.HAS_TRITON and kernels.interpreting():
    DEVICES.append("cpu")
if not kernels.HAS_TRITON:
    _WHY = "triton is not installed (pip install -c .ci/constraints.txt -r .ci/triton.txt)"
else:
    _WHY = "triton runs only on CUDA, or on CPU under its interpreter: no CUDA here, and TRITON_INTERPRET is not 1"
needs_triton = pytest.mark.skipif(not DEVICES, reason=_WHY)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


def test_an_installed_triton_imports():
    """``kernels`` treats a triton that fails to import as absent (the torch path runs); here that must not
    pass for 'not installed' and silently skip the parity tests."""
    if importlib.util.find_spec("triton") is None:
        assert not kernels.HAS_TRITON
        return
    import triton  # noqa: F401  (raises here, with its own message, if the install is broken)

    assert kernels.HAS_TRITON


def _with_mode(mode, fn, *args):
    prev = kernels.set_mode(mode)
    try:
        return fn(*args)
    finally:
        kernels.set_mode(prev)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("H,W,grid,sub,bands,ratio,m,l", CASES[:4])
def test_triton_matches_torch(device, dtype, H, W, grid, sub, bands, ratio, m, l):
    g = torch.Generator().manual_seed(H + W)
    x = torch.randn(3, H * W, 40, generator=g).to(device=device, dtype=dtype)
    x[0, 2] = 0  # an all-zero token: score 0
    sc_t = _with_mode("torch", spatial_coherence, x, (H, W), grid, bands)
    sc_k = _with_mode("triton", spatial_coherence, x, (H, W), grid, bands)
    assert sc_k.dtype == torch.float32 and sc_k.shape == sc_t.shape
    torch.testing.assert_close(sc_k, sc_t, rtol=1e-5, atol=1e-5)
    keep, skip = select_tokens(sc_t, (H, W), ratio, m, l, bands)
    y_keep = torch.randn(3, keep.shape[1], 40, generator=g).to(device=device, dtype=dtype)
    args = (y_keep, keep, skip, sc_t, (H, W), grid, sub, bands)
    y_t = _with_mode("torch", reconstruct, *args)
    y_k = _with_mode("triton", reconstruct, *args)
    assert y_k.dtype == dtype
    torch.testing.assert_close(y_k, y_t, **TOL[dtype])
    assert torch.equal(y_k.gather(1, keep.unsqueeze(-1).expand(-1, -1, 40)), y_keep)  # retained: exact
    assert torch.equal(_with_mode("triton", reconstruct, *args), y_k)  # deterministic


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
def test_triton_fallback_to_grid_and_band(device):
    sc = torch.rand(1, 32, generator=torch.Generator().manual_seed(0)).to(device)
    sc[0, 16] = 0.9  # w * -3 / w is -2.9999998 in float32, as in the torch path
    keep = torch.tensor([[0, 16]], device=device)
    skip = torch.tensor([[t for t in range(32) if t not in (0, 16)]], device=device)
    y_keep = torch.tensor([[[1.0, 2.0], [-3.0, 5.0]]], device=device)
    args = (y_keep, keep, skip, sc, (4, 8), 2, 1, 2)
    y = _with_mode("triton", reconstruct, *args)
    assert torch.equal(y[0, 0], y_keep[0, 0]) and torch.equal(y[0, 16], y_keep[0, 1])  # retained: exact copies
    # each band's skipped tokens: (w y) / w over the band's one retained token, i.e. its output up to the float32
    # rounding of the product and the quotient (torch's path rounds the same way; CUDA's division to 2 ulp)
    torch.testing.assert_close(y[0, :16], y_keep[0, 0].expand(16, 2), rtol=1e-6, atol=0)
    torch.testing.assert_close(y[0, 16:], y_keep[0, 1].expand(16, 2), rtol=1e-6, atol=0)
    torch.testing.assert_close(y, _with_mode("torch", reconstruct, *args), rtol=1e-6, atol=0)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
def test_triton_pruned_attention_matches_torch(device):
    torch.manual_seed(0)
    attn = Attention(64, 4).to(device).eval()
    x = torch.randn(2, 8 * 9, 64, device=device)
    layout = BlockLayout(0, (4, 4), (2, 2), 2)
    with torch.no_grad():
        y_t = _with_mode("torch", pruned_self_attention, attn, x, (8, 9), 0.4, layout, 2)
        y_k = _with_mode("triton", pruned_self_attention, attn, x, (8, 9), 0.4, layout, 2)
    torch.testing.assert_close(y_k.out, y_t.out, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
def test_triton_not_used_when_gradients_are_needed(device):
    x = torch.randn(2, 36, 16, device=device, requires_grad=True)
    prev = kernels.set_mode("triton")
    try:
        assert not kernels.use_triton(x)
        with torch.no_grad():
            assert kernels.use_triton(x)
        sc = spatial_coherence(x, (6, 6), 3)
        assert sc.requires_grad  # the torch path ran, and autograd sees it
    finally:
        kernels.set_mode(prev)
