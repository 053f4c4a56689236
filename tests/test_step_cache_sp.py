"""The block-scope step cache under sequence parallelism (torchrun, gloo): each rank caches its own tokens, and a
denoising loop at SP=2 and SP=4 gives every step's output of SP=1 with the same bands, with a ``max_stale`` that
shrinks the skip budgets (the cap agreed over the ranks)."""
import pytest
import torch

import coredit_video as cv
from tests.dist.common import BANDS, GRIDS, STRIDE, build_host, inputs, sp_run_fixture

STEPS = 4
MODES = {"cache": dict(max_stale=None, cache_select="change"), "cache_stale1": dict(max_stale=1),
         "cache_random": dict(cache_select="random")}


def cache_loops(st=None) -> dict:
    out = {}
    for mode, extra in MODES.items():
        model = build_host().eval()
        if st is not None:
            model.set_sequence_parallel(st.sp_group)
        ctrl = cv.apply(model, dict(ratios=0.5, bands=BANDS, grids=GRIDS, stride=STRIDE, scope="block", late_steps=0,
                                    step_cache=True, dense_steps=1, **extra))
        inp = inputs()
        x, ys = inp["x"], []
        with torch.no_grad():
            for i in range(STEPS):
                ctrl.set_step(i, STEPS)
                y = model(**dict(inp, x=x))
                ys.append(y)
                x = x - 0.25 * y
        skipped = [f for step, _, f in ctrl.step_cache.realized]
        out[mode] = dict(outs=ys, skipped=skipped)
    return out


@pytest.fixture(scope="module")
def reference():
    return cache_loops()


sp_run = sp_run_fixture("step_cache_worker.py")


@pytest.mark.parametrize("mode", list(MODES))
def test_sp_loop_matches_single_process(sp_run, reference, mode):
    sp, got = sp_run
    ref = reference[mode]
    assert len(got[mode]["outs"]) == STEPS
    for i, (a, b) in enumerate(zip(got[mode]["outs"], ref["outs"])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, i=i: f"SP={sp} {mode} step {i}: {m}")
    assert max(ref["skipped"]) > 0.2  # the loop really skipped tokens after the dense step
    assert got[mode]["skipped"] == pytest.approx(ref["skipped"])  # rank 0 skipped the same share of its tokens


def test_a_tight_max_stale_shrinks_the_budgets(reference):
    assert sum(reference["cache_stale1"]["skipped"]) < sum(reference["cache"]["skipped"])
