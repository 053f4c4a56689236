"""tools/bench_sp.py as a new user meets it: help once (rank 0), progress per case with the time left,
output into a work folder (never over the committed docs/benchmarks files unless --out says so)."""
import os
import subprocess
import sys

from tests.dist.common import REPO

TOOL = os.path.join(REPO, "tools", "bench_sp.py")
SMALL = ["--tokens", "4x8", "--hidden", "64", "--heads", "2", "--views", "2", "--warmup", "0", "--repeats", "1"]


def _torchrun(cwd, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           TOOL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _committed():
    d = os.path.join(REPO, "docs", "benchmarks")
    return {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in os.listdir(d)}


def test_progress_per_case_and_output_in_a_work_folder(tmp_path):
    before = _committed()
    proc = _torchrun(tmp_path, *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("6 cases") == 1 and out.count("--help for options") == 1  # the header, once
    for i in range(1, 7):
        line = [ln for ln in out.splitlines() if ln.startswith(f"[{i}/6] ")]
        assert len(line) == 1 and "s left)" in line[0], out
    bench = tmp_path / "work_dirs" / "bench"
    assert sorted(p.name for p in bench.iterdir()) == ["bench_sp2_gloo_4x8.json", "bench_sp2_gloo_4x8.md"]
    assert _committed() == before


def test_help_once_and_a_one_line_refusal_without_torchrun(tmp_path):
    proc = _torchrun(tmp_path, "--help")
    assert proc.returncode == 0
    assert (proc.stdout + proc.stderr).count("usage:") == 1
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    plain = subprocess.run([sys.executable, TOOL, *SMALL], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 2
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchrun --nproc_per_node 2" in lines[0]
    assert not (tmp_path / "work_dirs").exists()
