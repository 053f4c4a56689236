"""tools/bench_step_time.py: one row per front line and ratio with a positive time over the dense step, the files it
writes, and one-line errors for bad lines."""
import json
import math
import os
import subprocess
import sys

from tests.dist.common import REPO

TOOL = os.path.join(REPO, "tools", "bench_step_time.py")


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)


def test_a_row_per_line_and_ratio(tmp_path):
    out = tmp_path / "st.json"
    proc = run("--device", "cpu", "--threads", "1", "--preset", "tiny", "--depth", "1", "--control-depth", "1",
               "--views", "1", "--latent-frames", "1", "--resolution", "128x192", "--lines",
               "coredit,tome,coredit@block+cache", "--ratios", "0.3", "0.5", "--repeats", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    got = {(r["line"], r["ratio"]) for r in data["rows"]}
    assert got == {("dense", 0.0)} | {(m, r) for m in ("coredit", "tome", "coredit@block+cache") for r in (0.3, 0.5)}
    for r in data["rows"]:
        assert math.isfinite(r["time_ratio"]) and r["time_ratio"] > 0 and r["time_s"] > 0
    assert data["meta"]["hidden"] == 64 and (tmp_path / "st.md").is_file()


def test_bad_lines_are_one_line_errors(tmp_path):
    proc = run("--lines", "coredit@blok", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown scope" in proc.stderr
    proc = run("--lines", "tome@block", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "no block scope" in proc.stderr
