"""A plan means what it says: applying one applies its whole layout, or names each setting that disagrees."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import coredit_video as cv
from coredit_video.ops.selection import check_ratio
from coredit_video.plan import parse_grids, read_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a layout unlike the defaults in every key a plan fixes
LAYOUT = dict(bands=2, stride=2, late_factor=0.5, late_steps=2,
              grids=[{"grid": (3, 3), "subgrid": (2, 2)}, {"grid": (2, 4), "subgrid": (2, 2)}])
RATIOS = [0.3, 0.4, 0.2]


def _run(model, inputs, ctrl, step):
    ctrl.set_step(step, 10)
    with torch.no_grad():
        return model(**inputs)


@pytest.fixture
def plan_path(tiny_host, tmp_path):
    ctrl = cv.apply(tiny_host, dict(LAYOUT, ratios=RATIOS))
    path = str(tmp_path / "plan.json")
    ctrl.save_plan(path)
    cv.remove(tiny_host)
    return path


def test_plan_applies_its_whole_layout(tiny_host, tiny_inputs, plan_path):
    ctrl = cv.apply(tiny_host, {"plan": plan_path})
    assert ctrl.bands == 2 and ctrl.ratios == RATIOS
    assert ctrl.cfg.stride == 2 and ctrl.cfg.late_factor == 0.5 and ctrl.cfg.late_steps == 2
    assert ctrl.cfg.grid_specs == [((3, 3), (2, 2)), ((2, 4), (2, 2))]
    assert [lay.stride for lay in ctrl.layouts] == [2, 2, 2]
    assert ctrl.set_step(7, 10) == "main" and ctrl.set_step(8, 10) == "late"  # late_steps=2, not 4
    got = [_run(tiny_host, tiny_inputs, ctrl, s) for s in (0, 9)]
    ref_ctrl = cv.apply(tiny_host, dict(LAYOUT, ratios=RATIOS))  # the layout spelled out
    ref = [_run(tiny_host, tiny_inputs, ref_ctrl, s) for s in (0, 9)]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the layout matters: the same ratios with one band (what a ratios-only reader ran) select other tokens
    one_band = cv.apply(tiny_host, dict(LAYOUT, ratios=RATIOS, bands=1))
    assert (_run(tiny_host, tiny_inputs, one_band, 0) - got[0]).abs().max() > 1e-4


def test_explicit_conflicting_keys_are_named(tiny_host, plan_path):
    with pytest.raises(ValueError) as ei:
        cv.apply(tiny_host, {"plan": plan_path, "bands": 1, "stride": 1, "late_steps": 2,
                             "grids": [((4, 4), (2, 2))]})
    msg = str(ei.value)
    assert "bands: plan 2, config 1" in msg and "stride: plan 2, config 1" in msg and "grids: plan" in msg
    assert "late_steps" not in msg  # agrees with the plan
    assert "drop these keys" in msg
    with pytest.raises(ValueError, match=r"late_factor: plan 0\.5, config 0\.25"):
        cv.apply(tiny_host, {"plan": plan_path, "late_factor": 0.25})
    ctrl = cv.apply(tiny_host, {"plan": plan_path, "bands": 2, "stride": 2})  # agreeing keys are fine
    assert ctrl.ratios == RATIOS


def test_load_plan_on_a_live_controller_checks_the_layout(tiny_host, plan_path):
    ctrl = cv.apply(tiny_host, {"ratios": 0.1})
    with pytest.raises(ValueError) as ei:
        ctrl.load_plan(plan_path)
    msg = str(ei.value)
    for key in ("grids", "stride", "bands", "late_factor", "late_steps"):
        assert f"{key}: plan" in msg
    assert "cv.apply(model, {'plan': path})" in msg and ctrl.ratios == [0.1] * 3
    ctrl = cv.apply(tiny_host, dict(LAYOUT, ratios=0.0))
    ctrl.load_plan(plan_path)
    assert ctrl.ratios == RATIOS


def test_plan_json_writes_explicit_grid_pairs_and_reads_version_1(tiny_host, plan_path, tmp_path):
    data = json.loads(open(plan_path).read())
    assert data["version"] == 2 and data["bands"] == 2 and data["stride"] == 2
    assert data["grids"] == [{"grid": [3, 3], "subgrid": [2, 2]}, {"grid": [2, 4], "subgrid": [2, 2]}]
    old = dict(data, version=1, grids=[[[3, 3], [2, 2]], [[2, 4], [2, 2]]])  # what version 1 wrote
    (tmp_path / "old.json").write_text(json.dumps(old))
    ctrl = cv.apply(tiny_host, {"plan": str(tmp_path / "old.json")})
    assert ctrl.cfg.grid_specs == [((3, 3), (2, 2)), ((2, 4), (2, 2))] and ctrl.bands == 2
    assert read_plan(RATIOS).layout == {}  # a bare ratio list has no layout to apply


def test_grids_must_be_explicit_pairs():
    assert parse_grids([{"grid": 8, "subgrid": 4}, ((6, 6), (3, 3))]) == [((8, 8), (4, 4)), ((6, 6), (3, 3))]
    with pytest.raises(ValueError, match=r"ambiguous.*'grid': \(8, 8\), 'subgrid': \(4, 4\)"):
        cv.PruneConfig.build({"grids": ((8, 4), (6, 3))})
    with pytest.raises(ValueError, match="exactly the keys"):
        parse_grids([{"grid": 8, "sub": 4}])
    assert cv.PruneConfig.build().grid_specs == [((8, 8), (4, 4)), ((6, 6), (3, 3))]


def test_one_ratio_check_everywhere(tiny_host, tmp_path):
    assert check_ratio(0.25) == 0.25 and check_ratio(0.5, 0.5) == 0.5
    for bad in (-0.1, 1.0, math.nan, math.inf, True, "0.2"):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            check_ratio(bad)
    with pytest.raises(ValueError, match="exceeds max_ratio=0.4; lower the ratio or raise prune.max_ratio"):
        check_ratio(0.45, 0.4)
    # the plan reader, the config, the controller and the FLOPs model all answer with it
    (tmp_path / "nan.json").write_text('{"ratios": [0.1, NaN, 0.1]}')
    with pytest.raises(ValueError, match=r"ratios\[1\] must be in \[0, 1\)"):
        cv.apply(tiny_host, {"plan": str(tmp_path / "nan.json")})
    (tmp_path / "cap.json").write_text('{"ratios": [0.1, 0.45, 0.1], "max_ratio": 0.4}')
    with pytest.raises(ValueError, match=r"ratios\[1\] 0.45 exceeds max_ratio=0.4"):
        read_plan(str(tmp_path / "cap.json"))
    with pytest.raises(ValueError, match="exceeds max_ratio=0.5"):
        cv.apply(tiny_host, {"ratios": 0.6})
    ctrl = cv.apply(tiny_host, {"ratios": 0.1, "max_ratio": 0.3})
    with pytest.raises(ValueError, match="exceeds max_ratio=0.3"):
        ctrl.set_ratio(1, 0.35)
    from coredit_video import flops as F

    with pytest.raises(ValueError, match=r"ratios\[2\] must be in \[0, 1\)"):
        F.count_flops("tiny", ratios=[0.1, 0.1, 1.2])


def test_plan_max_ratio_is_adopted_unless_set(tiny_host, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"ratios": [0.6, 0.1, 0.1], "max_ratio": 0.7}))
    assert cv.apply(tiny_host, {"plan": str(tmp_path / "p.json")}).cfg.max_ratio == 0.7
    with pytest.raises(ValueError, match="exceeds max_ratio=0.5"):
        cv.apply(tiny_host, {"plan": str(tmp_path / "p.json"), "max_ratio": 0.5})


def _flops_cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "flops.py"), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_flops_cli_counts_with_the_plan_layout(tmp_path):
    from coredit_video import flops as F

    plan = {"version": 2, "ratios": [0.3] * 41, "bands": 8, "stride": 2}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = _flops_cli("--plan", str(tmp_path / "plan.json"), "--pad-h-to-bands", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["inputs"]["bands"] == 8 and res["inputs"]["stride"] == 2
    ref = F.count_flops("magicdrive-v2-xl", ratios=[0.3] * 41, bands=8, stride=2, pad_h_to_bands=True)
    assert res["pruned_total"] == ref["pruned_total"]
    bad = _flops_cli("--plan", str(tmp_path / "plan.json"), "--bands", "1", "--json")
    assert bad.returncode == 2 and "bands: plan 8, config 1" in bad.stderr
