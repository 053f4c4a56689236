"""tools/bench_e2e.py --scope block: dense, attention scope and block scope interleaved in one run, one JSON row per
(resolution, mode, ratio) with a positive finite time ratio and speed-up next to the FLOPs model; the memory worker
of each scope; one-line errors for wrong lists and options."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.dist.common import REPO

TOOL = os.path.join(REPO, "tools", "bench_e2e.py")
TINY = ["--device", "cpu", "--threads", "1", "--preset", "tiny", "--views", "3", "--latent-frames", "2",
        "--pad-sp", "1", "--warmup", "0", "--repeats", "2"]


def _tool():
    sys.path.insert(0, os.path.dirname(TOOL))  # bench_util, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_e2e_cli", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_block_scope_json_has_a_positive_time_ratio_for_every_mode(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, TOOL, *TINY, "--scope", "block", "--resolutions", "128x192,64x96",
                           "--ratios", "0.4,0.5", "--no-memory", "--out", str(tmp_path), "--tag", "t"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "e2e_t.json").read_text())
    meta, rows = result["meta"], result["rows"]
    assert meta["resolutions"] == ["128x192", "64x96"] and meta["ratios"] == [0.4, 0.5]
    assert meta["cross_view"] == "qkv" and meta["preset"] == "tiny" and meta["repeats"] == 2  # qkv: the default here
    sizes = ("128x192", "64x96")
    assert sorted((r["resolution"], r["mode"], r["ratio"] or 0.0) for r in rows) == sorted(
        [(res, "dense", 0.0) for res in sizes]
        + [(res, mode, ratio) for res in sizes for mode in ("attention", "block") for ratio in (0.4, 0.5)])
    assert {tuple(r["tokens"]) for r in rows} == {(8, 12), (4, 6)}  # pixels / 8 / 2, unpadded
    for r in rows:
        for p in ("", "cpu_"):  # wall time, and on CPU this process's CPU time
            for k in ("time_s", "time_ratio", "time_ratio_min", "time_ratio_max", "speedup"):
                assert isinstance(r[p + k], float) and math.isfinite(r[p + k]) and r[p + k] > 0, (p + k, r)
            assert len(r[p + "times"]) == 2 and r[p + "time_ratio_min"] <= r[p + "time_ratio"] <= r[
                p + "time_ratio_max"]
        fl = r["flops"]
        assert math.isfinite(fl["speedup"]) and fl["speedup"] >= 1 and fl["time_ratio"] == pytest.approx(
            1 / fl["speedup"])
        if r["mode"] == "dense":
            assert r["time_ratio"] == r["speedup"] == r["cpu_time_ratio"] == 1.0 and fl["total_reduction"] == 0
        else:
            assert fl["total_reduction"] > 0, r
    by = {(r["resolution"], r["mode"], r["ratio"]): r for r in rows}
    for res in sizes:
        for ratio in (0.4, 0.5):  # the FLOPs model: block scope saves more than attention scope with qkv
            assert by[res, "block", ratio]["flops"]["total_reduction"] > by[res, "attention", ratio]["flops"][
                "total_reduction"]
    split = result["module_split_s"]["128x192"]
    assert set(split) == {"dense", "attention@0.4", "block@0.4", "attention@0.5", "block@0.5"}
    assert result["memory"] == {} and meta["module_split_clock"] == "process CPU time"
    md = (tmp_path / "e2e_t.md").read_text()
    assert "## 128x192" in md and "## 64x96" in md and "| block scope | 0.5 |" in md
    assert "| attention scope (cross-view qkv) | 0.4 |" in md and "--scope block" in md and "CPU-time speed-up" in md


@pytest.mark.parametrize("mode", ["attention", "block", "block_cache"])
def test_memory_worker_runs_each_scope(mode):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, TOOL, *TINY, "--scope", "block", "--resolution", "128x192", "--ratio", "0.5",
                           "--worker", mode], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(rec) == {"rss_before", "peak_rss", "step_peak", "peak_reset", "cache_bytes"} and rec["rss_before"] > 0
    if mode == "block_cache":  # tiny: width 64, 3 prunable blocks, 3 views x 2 frames of 8 x 12 tokens, float32
        from coredit_video.step_cache import cache_bytes_per_block

        assert rec["cache_bytes"] == 3 * cache_bytes_per_block(6, 96, 64, 4, "change")
    else:
        assert rec["cache_bytes"] == 0


def test_step_cache_mode_is_timed_beside_block_scope(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, TOOL, *TINY, "--scope", "block", "--step-cache", "--resolutions", "64x96",
                           "--ratios", "0.5", "--no-memory", "--no-split", "--out", str(tmp_path), "--tag", "c"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["mode"]: r for r in json.loads((tmp_path / "e2e_c.json").read_text())["rows"]}
    assert set(rows) == {"dense", "attention", "block", "block_cache"}
    assert rows["block_cache"]["flops"] == rows["block"]["flops"] and rows["block_cache"]["time_ratio"] > 0
    assert "| block scope + step cache | 0.5 |" in (tmp_path / "e2e_c.md").read_text()


def test_scope_prune_configs():
    tool = _tool()
    args = tool.argparse.Namespace(cross_view=None, cross_view_select="self", scope="block")
    assert tool.scope_prune_cfg(args, "attention", 0.4, 3) == {
        "ratios": [0.4] * 3, "max_ratio": 0.5, "scope": "attention", "cross_view": "qkv", "cross_view_select": "self"}
    assert tool.scope_prune_cfg(args, "block", 0.6, 2) == {"ratios": [0.6] * 2, "max_ratio": 0.6, "scope": "block"}
    args.scope = "attention"
    assert tool.scope_cross_view(args) == "off"  # the attention-mode default is unchanged


@pytest.mark.parametrize("args, words", [
    (["--scope", "block", "--ratios", "0.4,1.2"], "--ratios"),
    (["--scope", "block", "--ratios", ","], "--ratios"),
    (["--scope", "block", "--resolutions", "848x"], "--resolutions"),
    (["--scope", "block", "--plan", "plan.json"], "--plan"),
    (["--ratios", "0.4"], "--scope block"),
    (["--scope", "block", "--repeats", "0"], "--repeats"),
    (["--step-cache"], "--scope block"),
])
def test_wrong_options_fail_in_one_line(capsys, args, words):
    tool = _tool()
    with pytest.raises(SystemExit) as exc:
        tool.main(["--device", "cpu", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], lines
