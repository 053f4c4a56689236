"""Cross-view pruning under sequence parallelism (torchrun, gloo): SP=2 and SP=4 equal SP=1 in outputs and
gradients, and the cross-view all-to-alls carry only retained tokens (bytes measured per mode)."""
import pytest

import coredit_video as cv
from coredit_video import get_controller
from coredit_video.ops import band_budgets
from tests.dist.common import BANDS, GRIDS, STRIDE, assert_sp_matches, run_modes, sp_run_fixture

RATIO = 0.3
# mode name -> (cross_view, cross_view_select, ratio)
CROSS_VIEW_MODES = {"dense": ("off", "self", 0.0), "kv": ("kv", "self", RATIO), "qkv": ("qkv", "self", RATIO),
                    "qkv_fresh": ("qkv", "fresh", RATIO), "merge_qkv": ("qkv", "self", RATIO, "coredit_merge")}


def patch_cross_view(model, mode: str):
    cross_view, select, ratio, *method = CROSS_VIEW_MODES[mode]
    return cv.apply(model, dict(ratios=ratio, bands=BANDS, grids=GRIDS, stride=STRIDE, cross_view=cross_view,
                                cross_view_select=select, method=(method or ["coredit"])[0]))


@pytest.fixture(scope="module")
def reference():
    return run_modes(CROSS_VIEW_MODES, patch_cross_view)


sp_run = sp_run_fixture("cross_view_worker.py")


@pytest.mark.parametrize("mode", list(CROSS_VIEW_MODES))
def test_sp_matches_single_process(sp_run, reference, mode):
    sp, got = sp_run
    assert_sp_matches(got[mode], reference[mode], sp, mode)


def test_the_modes_differ(reference):
    """Guards the comparison above: each pruned mode really changes the output."""
    outs = [reference[m]["out"] for m in CROSS_VIEW_MODES]
    for i in range(len(outs)):
        for j in range(i):
            assert (outs[i] - outs[j]).abs().max() > 1e-4


def test_cross_view_all_to_all_carries_only_retained_tokens(sp_run, reference):
    """Per frame the dense cross-view all-to-alls move ``N`` query, ``2 x 2N`` key/value and ``N`` output token
    slots (two neighbours); ``kv`` moves ``2N + 4R`` and ``qkv`` ``6R`` with ``R`` the retained tokens, forward
    and backward alike."""
    sp, got = sp_run
    ctrl = get_controller(reference["kv"]["model"])
    hw = ctrl.hw
    N = hw[0] * hw[1]
    base = [lay for lay, name in zip(ctrl.layouts, ctrl.names) if name.startswith("base_blocks_s")]
    kept = [N - sum(band_budgets(hw, RATIO, lay.stride, lay.ordinal, BANDS)) for lay in base]
    dense_f, dense_b = got["dense"]["cross_view_fwd"], got["dense"]["cross_view_bwd"]
    assert dense_f > 0 and dense_b > 0
    expect_kv = sum(2 * N + 4 * r for r in kept) / (6 * N * len(kept))
    expect_qkv = sum(kept) / (N * len(kept))
    for key, dense in (("cross_view_fwd", dense_f), ("cross_view_bwd", dense_b)):
        assert got["kv"][key] / dense == pytest.approx(expect_kv, rel=1e-12)
        assert got["qkv"][key] / dense == pytest.approx(expect_qkv, rel=1e-12)
        assert got["qkv_fresh"][key] == got["qkv"][key]
    assert expect_qkv < expect_kv < 1
    mib = 4 / 2 ** 20
    kv, qkv = got["kv"]["cross_view_fwd"] * mib, got["qkv"]["cross_view_fwd"] * mib
    print(f"\nSP={sp} cross-view all-to-all per forward: dense {dense_f * mib:.3f} MiB, kv {kv:.3f} MiB "
          f"({expect_kv:.3f}), qkv {qkv:.3f} MiB ({expect_qkv:.3f})")
