"""Sequence parallelism under torchrun on gloo: SP=2 and SP=4 against SP=1 with the same bands."""
import pytest
import torch

from coredit_video import get_controller
from coredit_video.ops import band_budgets
from tests.dist.common import (BANDS, MESH_OPTIM, MESH_STEPS, MODES, assert_sp_matches, build_host, mesh_batch,
                               mesh_loss, patch, run_modes, sp_run_fixture, torchrun)


@pytest.fixture(scope="module")
def reference():
    return run_modes(MODES, patch)


sp_run = sp_run_fixture("sp_worker.py")


@pytest.mark.parametrize("mode", list(MODES))
def test_sp_matches_single_process(sp_run, reference, mode):
    sp, got = sp_run
    assert_sp_matches(got[mode], reference[mode], sp, mode)


def test_pruning_changes_the_output(reference):
    """Guards the comparison above: the pruned run is really different from the dense one."""
    diff = (reference["ratio0.3"]["out"] - reference["dense"]["out"]).abs().max()
    assert diff > 1e-3
    torch.testing.assert_close(reference["ratio0"]["out"], reference["dense"]["out"], rtol=1e-5, atol=1e-6)


def test_all_to_all_carries_only_retained_tokens(sp_run, reference):
    """The spatial self-attention all-to-alls send (1 - r) of the dense volume: exactly the retained
    share given by the per-band budgets, forward and backward."""
    sp, got = sp_run
    ctrl = get_controller(reference["ratio0.3"]["model"])
    hw = ctrl.hw
    N = hw[0] * hw[1]
    kept = [
        N - sum(band_budgets(hw, r, lay.stride, lay.ordinal, BANDS)) for r, lay in zip(ctrl.ratios, ctrl.layouts)
    ]
    expected = sum(kept) / (N * len(kept))
    dense = got["ratio0"]["self_attn_fwd"]
    assert dense > 0 and got["dense"]["self_attn_fwd"] == dense
    assert got["ratio0.3"]["self_attn_fwd"] / dense == pytest.approx(expected, rel=1e-12)
    assert got["ratio0.3"]["self_attn_bwd"] / got["ratio0"]["self_attn_bwd"] == pytest.approx(expected, rel=1e-12)
    assert abs(expected - 0.7) < 0.02  # floor(r * band_tokens) per band
    # cross-view attention is not pruned: its volume does not change
    assert got["ratio0.3"]["cross_view_fwd"] == got["dense"]["cross_view_fwd"] > 0


def test_sp_layout_errors_name_the_fix(sp_run):
    sp, got = sp_run
    assert "must be a multiple of the sequence-parallel size" in got["errors"]["bands"]
    assert f"do not divide by the SP size {sp}" in got["errors"]["heads"]
    from coredit_video.methods import REGISTRY

    no_sp = sorted(n for n, c in REGISTRY.items() if not c.supports_sp)
    assert {"tome", "todo", "coredit_kv"} <= set(no_sp)
    for name in no_sp:  # one line naming the fix
        msg = got["errors"][f"method_{name}"]
        assert "\n" not in msg and "parallel.sp_size=1" in msg and repr(name) in msg, msg


def test_2x2_mesh_deepspeed_matches_single_process(tmp_path):
    """2 data x 2 sequence ranks, DeepSpeed ZeRO-2 AdamW, pruning on: same losses and weights as one
    process training plain torch AdamW on the same global batch."""
    path = tmp_path / "mesh.pt"
    torchrun("mesh_worker.py", 4, str(path), "2", "ratio0.3")
    got = torch.load(path)
    model = build_host()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    patch(model, "ratio0.3")
    opt = torch.optim.AdamW(model.parameters(), betas=(0.9, 0.999), **MESH_OPTIM)
    losses = []
    for step in range(MESH_STEPS):
        loss = mesh_loss(model, mesh_batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert got["losses"] == pytest.approx(losses, rel=1e-5)
    moved = max((p.detach() - init[n]).abs().max().item() for n, p in model.named_parameters())
    assert moved > 1e-3  # the steps really changed the weights, so the comparison below means something
    for name, p in model.named_parameters():
        err = (got["params"][name] - p.detach()).abs().max().item()
        assert err <= 5e-5, f"{name} differs by {err:.2e} after {MESH_STEPS} steps"


def test_all_to_all_with_unequal_token_counts(sp_run):
    sp, got = sp_run
    assert got["uneven"] == {"fwd": 0.0, "back": 0.0, "grad": 0.0}
