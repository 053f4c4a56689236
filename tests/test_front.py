"""The quality-vs-cost front: its arithmetic against hand values, and a smoke run of tools/front.py."""
import json

import pytest

from coredit_video.front import FrontSettings, equal_cost_wins, interpolate, split_line
from tests.dist.common import load_tool


def test_interpolate_and_split_line():
    assert interpolate([0.2, 0.6], [10.0, 20.0], 0.4) == pytest.approx(15.0)
    assert interpolate([0.6, 0.2], [20.0, 10.0], 0.3) == pytest.approx(12.5)  # unsorted input
    assert interpolate([0.2, 0.6], [10.0, 20.0], 0.7) is None  # no extrapolation
    assert split_line("coredit_copy@block") == ("coredit_copy", "block")
    assert split_line("tome") == ("tome", "attention")


def test_equal_cost_wins_counts_points_inside_our_cost_range_and_dominated_ones_outside():
    rows = [dict(method="ours", seed=0, time_ratio=t, fidelity_PSNR=p) for t, p in [(0.3, 40.0), (0.9, 50.0)]]
    rows += [dict(method="them", seed=0, time_ratio=t, fidelity_PSNR=p)
             for t, p in [(0.2, 39.0), (0.4, 41.0), (0.6, 46.0), (0.8, 49.5), (0.95, 49.0)]]
    # at 0.4 ours is 41.67 (win), at 0.6 45.0 (loss), at 0.8 48.33 (loss); 0.95 is costlier than all of ours and
    # below ours' 50.0 at 0.9 (win); 0.2 is cheaper than ours and below it: undecided, not counted
    assert equal_cost_wins(rows, "ours", "them", 0) == (2, 4)
    rows.append(dict(method="them", seed=0, time_ratio=0.1, fidelity_PSNR=45.0))  # cheaper and better: a loss
    rows.append(dict(method="them", seed=0, time_ratio=1.0, fidelity_PSNR=55.0))  # costlier, better: undecided
    assert equal_cost_wins(rows, "ours", "them", 0) == (2, 5)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown method"):
        FrontSettings(methods=["nope"])
    with pytest.raises(ValueError, match="no block scope"):
        FrontSettings(methods=["tome@block"])


def test_front_smoke(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [
        {"resolution": "848x1600", "pass": "fwd", "method": m, "ratio": r, "time_ratio": t}
        for m, r, t in [("coredit", 0.2, 0.7), ("coredit", 0.4, 0.5), ("tome", 0.2, 0.75), ("tome", 0.4, 0.55)]]}))
    out = tmp_path / "front"
    rc = load_tool("front").main(["--seeds", "0", "--scenes", "1", "--probe-scenes", "1", "--sampling-steps", "2",
                                  "--methods", "coredit,tome,coredit@block", "--ratios", "0.3",
                                  "--bench-json", str(bench), "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "front.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"coredit", "tome", "coredit@block"}
    by = {r["method"]: r for r in rows}
    assert by["coredit"]["time_ratio"] == pytest.approx(0.6) and by["tome"]["time_ratio"] == pytest.approx(0.65)
    assert by["coredit@block"]["time_ratio"] is None and by["coredit@block"]["attn_error"] is None
    assert by["tome"]["flops_ratio"] > by["coredit"]["flops_ratio"] > by["coredit@block"]["flops_ratio"]
    for r in rows:
        assert 10 < r["fidelity_PSNR"] < 100 and 0 < r["fidelity_SSIM"] <= 1
    assert by["coredit"]["attn_error"] > 0
    assert (out / "front.png").stat().st_size > 1000
    assert "equal time_ratio" in (out / "front.md").read_text()
