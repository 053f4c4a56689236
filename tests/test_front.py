"""The quality-vs-cost front: its arithmetic against hand values, and a smoke run of tools/front.py."""
import json

import pytest

from coredit_video.front import (FrontLine, FrontSettings, equal_cost_wins, family_wins, interpolate, parse_line,
                                 run_cost_flops, line_method_scope, flops_ratio)
from tests.dist.common import load_tool


def test_interpolate_and_line_method_scope():
    assert interpolate([0.2, 0.6], [10.0, 20.0], 0.4) == pytest.approx(15.0)
    assert interpolate([0.6, 0.2], [20.0, 10.0], 0.3) == pytest.approx(12.5)  # unsorted input
    assert interpolate([0.2, 0.6], [10.0, 20.0], 0.7) is None  # no extrapolation
    assert line_method_scope("coredit_copy@block") == ("coredit_copy", "block")
    assert line_method_scope("tome") == ("tome", "attention")
    assert parse_line("coredit@block+cache/20") == FrontLine("coredit", "block", True, 20)
    assert parse_line("coredit_merge/15") == FrontLine("coredit_merge", "attention", False, 15)
    assert parse_line("coredit@block+cache_all") == FrontLine("coredit", "block", True, None, "all")
    assert parse_line("coredit@block+cache_self/20") == FrontLine("coredit", "block", True, 20, "self")
    with pytest.raises(ValueError, match="after '/'"):
        parse_line("coredit/x")


def test_whole_run_cost_is_the_mean_of_the_steps_costs():
    xl = ("magicdrive-v2-xl", (848, 1600))
    one = flops_ratio(*xl, 0.5, "coredit")
    late = flops_ratio(*xl, 0.125, "coredit")
    assert run_cost_flops(*xl, "coredit", [0.5] * 26 + [0.125] * 4) == pytest.approx((26 * one + 4 * late) / 30)
    assert run_cost_flops(*xl, "coredit", [0.0] * 3) == 1.0  # dense steps cost a dense step


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


def test_family_wins_take_the_best_family_point_at_or_below_each_cost():
    rows = [dict(method="a", seed=0, cost_flops=0.5, fidelity_PSNR=40.0),
            dict(method="b", seed=0, cost_flops=0.8, fidelity_PSNR=50.0)]
    rows += [dict(method="them", seed=0, cost_flops=c, fidelity_PSNR=p) for c, p in [(0.4, 30.0), (0.6, 39.0),
                                                                                      (0.9, 51.0), (0.8, 50.0)]]
    # 0.4: no family point that cheap (loss); 0.6: a's 40 >= 39 (win); 0.9: b's 50 < 51 (loss); 0.8: tie (win)
    assert family_wins(rows, ["a", "b"], "them", 0) == (2, 4)
    assert family_wins(rows, ["a"], "them", 0) == (1, 4)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown method"):
        FrontSettings(methods=["nope"])
    with pytest.raises(ValueError, match="no block scope"):
        FrontSettings(methods=["tome@block"])
    with pytest.raises(ValueError, match="block scope"):
        FrontSettings(methods=["coredit+cache"])
    with pytest.raises(ValueError, match="at most --sampling-steps"):
        FrontSettings(methods=["coredit/40"], sampling_steps=30)
    with pytest.raises(ValueError, match="step counts >= 1"):
        FrontSettings(fewer_steps=[0])


def test_front_rows_carry_steps_and_whole_run_cost(tmp_path):
    """Fewer steps, a composition with fewer steps and the step cache: each row's steps and cost_flops."""
    out = tmp_path / "front"
    rc = load_tool("front").main(["--seeds", "0", "--scenes", "1", "--probe-scenes", "0", "--sampling-steps", "6",
                                  "--methods", "coredit,coredit/3,coredit@block+cache", "--ratios", "0.4",
                                  "--fewer-steps", "3", "--out", str(out)])
    assert rc == 0
    rows = {r["method"]: r for r in json.loads((out / "front.json").read_text())["rows"]}
    assert set(rows) == {"coredit", "coredit/3", "coredit@block+cache", "fewer_steps"}
    assert rows["fewer_steps"]["steps"] == 3 and rows["fewer_steps"]["cost_flops"] == pytest.approx(0.5)
    assert rows["fewer_steps"]["ratio"] == pytest.approx(0.5)
    xl = ("magicdrive-v2-xl", (848, 1600))
    # 6 steps with late_steps=4: steps 0-1 at r, 2-5 at c r (c = 0.25)
    full = (2 * flops_ratio(*xl, 0.4, "coredit") + 4 * flops_ratio(*xl, 0.1, "coredit")) / 6
    assert rows["coredit"]["steps"] == 6 and rows["coredit"]["cost_flops"] == pytest.approx(full)
    # 3 steps: all late -> c r, times 3 / 6
    assert rows["coredit/3"]["cost_flops"] == pytest.approx(flops_ratio(*xl, 0.1, "coredit") * 0.5)
    cache = rows["coredit@block+cache"]
    assert cache["scope"] == "block" and 0.5 < cache["cost_flops"] < 1.0  # step 0 dense (dense_steps=1)
    assert cache["step_ratios"][0] == 0.0 and len(cache["step_ratios"]) == 6
    assert rows["coredit"]["step_ratios"] == [0.4, 0.4, 0.1, 0.1, 0.1, 0.1]
    for r in rows.values():
        assert r["host"] == "configs/tiny_cpu.py" and 10 < r["fidelity_PSNR"] <= 100
        assert r["cost_time"] is None or r["method"] == "fewer_steps"  # no step-time table given
        assert r["attn_error"] is None  # no probe scenes: not measured (not 0)

    # cost_time: each step's time over dense from a step-time table, interpolated at its ratio, summed over steps
    table = tmp_path / "step_time.json"
    table.write_text(json.dumps(dict(rows=[
        dict(line="dense", ratio=0.0, time_ratio=1.0), dict(line="coredit", ratio=0.2, time_ratio=0.9),
        dict(line="coredit", ratio=0.4, time_ratio=0.7), dict(line="coredit@block+cache", ratio=0.4, time_ratio=0.6),
        dict(line="coredit@block+cache", ratio=0.6, time_ratio=0.5)])))
    rc = load_tool("front").main(["--seeds", "0", "--scenes", "1", "--probe-scenes", "0", "--sampling-steps", "6",
                                  "--methods", "coredit,coredit/3,coredit@block+cache", "--ratios", "0.4",
                                  "--fewer-steps", "3", "--out", str(out), "--render-only",
                                  "--step-time-json", str(table)])
    rows = {r["method"]: r for r in json.loads((out / "front.json").read_text())["rows"]}
    at_01 = 1.0 - 0.1 / 0.2 * 0.1  # between (0, 1) and (0.2, 0.9)
    assert rows["coredit"]["cost_time"] == pytest.approx((2 * 0.7 + 4 * at_01) / 6)
    assert rows["coredit/3"]["cost_time"] == pytest.approx(3 * at_01 / 6)
    assert rows["fewer_steps"]["cost_time"] == pytest.approx(0.5)
    want = sum(1.0 - v / 0.4 * 0.4 if v <= 0.4 else 0.6 - (v - 0.4) / 0.2 * 0.1 for v in cache["step_ratios"]) / 6
    assert rows["coredit@block+cache"]["cost_time"] == pytest.approx(want)


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
