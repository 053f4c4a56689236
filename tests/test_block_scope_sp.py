"""Block scope (``prune.scope="block"``) under sequence parallelism (torchrun, gloo) on the built-in host: SP=2 and
SP=4 equal SP=1 with the same bands in outputs and gradients, and the self-attention and cross-view all-to-alls
inside the blocks carry exactly the retained tokens (elements counted per call site, forward and backward).
SP=8 (``bands=8``, the host and inputs of ``tests/dist/sp8_worker.py``) runs with ``COREDIT_SP8=1``, as
``tests/test_sp8.py``."""
import os
from functools import partial

import pytest
import torch

import coredit_video as cv
from coredit_video import get_controller
from coredit_video.ops import band_budgets
from tests.dist import sp8_worker
from tests.dist.common import (BANDS, GRIDS, STRIDE, assert_sp_matches, build_host, inputs, loss_of, run_modes,
                               sp_run_fixture, torchrun)

BLOCK_MODES = {"dense": None, "block0.3": 0.3, "merge0.3": (0.3, "coredit_merge")}
RATIO = BLOCK_MODES["block0.3"]


def patch_block(model, mode: str, bands: int = BANDS):
    if BLOCK_MODES[mode] is None:
        return None
    ratio, method = BLOCK_MODES[mode] if isinstance(BLOCK_MODES[mode], tuple) else (BLOCK_MODES[mode], "coredit")
    return cv.apply(model, dict(ratios=ratio, bands=bands, grids=GRIDS, stride=STRIDE, scope="block", method=method))


# layout name (the worker's argv[2]) -> (build, inputs, patch)
LAYOUTS = {"sp": (build_host, inputs, patch_block),
           "sp8": (sp8_worker.build_host, sp8_worker.inputs, partial(patch_block, bands=sp8_worker.BANDS))}


@pytest.fixture(scope="module")
def reference():
    return run_modes(BLOCK_MODES, patch_block)


sp_run = sp_run_fixture("block_scope_worker.py")


@pytest.mark.parametrize("mode", list(BLOCK_MODES))
def test_sp_matches_single_process(sp_run, reference, mode):
    sp, got = sp_run
    assert_sp_matches(got[mode], reference[mode], sp, mode)


def test_block_scope_changes_the_output(reference):
    """Guards the comparison above: each block-scope run really differs from the dense one and from the other."""
    assert (reference["block0.3"]["out"] - reference["dense"]["out"]).abs().max() > 1e-3
    assert (reference["merge0.3"]["out"] - reference["block0.3"]["out"]).abs().max() > 1e-4


def expected_volume(ctrl, ratio: float, frames: int, C: int, sp: int) -> dict:
    """Elements the all-to-alls of one forward send, summed over the ranks, when every prunable block keeps
    ``R_l = N - sum(budgets)`` tokens per frame (``R_l = N`` at ratio 0). Per frame and token over the ``P`` ranks
    ``(P-1)/P`` of it leaves its rank: self-attention sends q, k, v in and the output back (``4C``); cross-view
    (base blocks, two neighbours) the query, the neighbours' keys and values and the output (``C + 2*2C + C``)."""
    N = ctrl.hw[0] * ctrl.hw[1]
    kept = {name: N - sum(band_budgets(ctrl.hw, ratio, lay.stride, lay.ordinal, ctrl.bands))
            for name, lay in zip(ctrl.names, ctrl.layouts)}
    share = frames * C * (sp - 1) / sp
    return dict(self_attn=share * 4 * sum(kept.values()),
                cross_view=share * 6 * sum(r for name, r in kept.items() if name.startswith("base_blocks_s")),
                kept=kept)


def test_all_to_alls_carry_only_retained_tokens(sp_run, reference):
    sp, got = sp_run
    ctrl = get_controller(reference["block0.3"]["model"])
    x = inputs()["x"]
    frames, C = x.shape[0] * x.shape[1] * x.shape[3], reference["block0.3"]["model"].config.hidden
    N = ctrl.hw[0] * ctrl.hw[1]
    pruned, dense = expected_volume(ctrl, RATIO, frames, C, sp), expected_volume(ctrl, 0.0, frames, C, sp)
    assert ctrl.hw == (20, 8) and ctrl.bands == BANDS and len(pruned["kept"]) == 3
    assert all(0 < r < N for r in pruned["kept"].values())
    for tag in ("self_attn", "cross_view"):
        for way in ("fwd", "bwd"):
            key = f"{tag}_{way}"
            assert got["dense"][key] == dense[tag] > 0, key  # the count is right where nothing is pruned
            for mode in ("block0.3", "merge0.3"):
                assert got[mode][key] == pruned[tag], f"SP={sp} {mode} {key}: {got[mode][key]} != {pruned[tag]}"
    share = sum(pruned["kept"].values()) / (N * len(pruned["kept"]))
    assert got["block0.3"]["self_attn_fwd"] / got["dense"]["self_attn_fwd"] == pytest.approx(share, rel=1e-12)
    assert abs(share - (1 - RATIO)) < 0.02
    mib = 4 / 2 ** 20
    print(f"\nSP={sp} block scope all-to-all per forward: self-attn {got['block0.3']['self_attn_fwd'] * mib:.3f} MiB "
          f"(dense {got['dense']['self_attn_fwd'] * mib:.3f}), cross-view {got['block0.3']['cross_view_fwd'] * mib:.3f}"
          f" MiB (dense {got['dense']['cross_view_fwd'] * mib:.3f})")


@pytest.mark.skipif(os.environ.get("COREDIT_SP8") != "1",
                    reason="starts 8 torchrun workers (~1 min on 2 cores); set COREDIT_SP8=1 to run it")
def test_sp8_matches_single_process_and_sends_only_retained_tokens(tmp_path):
    path = tmp_path / "sp8.pt"
    torchrun("block_scope_worker.py", sp8_worker.SP, str(path), "sp8", timeout=600)
    got = torch.load(path)
    build, make_inputs, patch = LAYOUTS["sp8"]
    ref = {}
    for mode in BLOCK_MODES:
        model = build()
        ctrl = patch(model, mode)
        y = model(**make_inputs())
        loss_of(y).backward()
        ref[mode] = dict(out=y.detach(), grads={n: p.grad.clone() for n, p in model.named_parameters()}, ctrl=ctrl)
        assert_sp_matches(got[mode], ref[mode], sp8_worker.SP, mode)
    assert (ref["block0.3"]["out"] - ref["dense"]["out"]).abs().max() > 1e-3
    ctrl = ref["block0.3"]["ctrl"]
    assert ctrl.hw == (24, 8) and ctrl.bands == sp8_worker.BANDS
    x = make_inputs()["x"]
    frames, C = x.shape[0] * x.shape[1] * x.shape[3], model.config.hidden
    pruned = expected_volume(ctrl, RATIO, frames, C, sp8_worker.SP)
    for tag in ("self_attn", "cross_view"):
        assert got["block0.3"][f"{tag}_fwd"] == got["block0.3"][f"{tag}_bwd"] == pruned[tag] > 0, tag
