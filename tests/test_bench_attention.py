"""tools/bench_attention.py --methods: every method's whole reduced self-attention timed against dense and ideal,
interleaved, in a JSON with one row per (resolution, ratio, method, pass); a wrong method or ratio is one line."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests.dist.common import REPO

TOOL = os.path.join(REPO, "tools", "bench_attention.py")
TINY = ["--device", "cpu", "--threads", "1", "--hidden", "64", "--heads", "4", "--resolutions", "128x192,64x96",
        "--pad-sp", "1", "--batch", "1", "--views", "1", "--latent-frames", "1", "--warmup", "0", "--repeats", "2"]


def _run(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, TOOL, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_methods_json_has_a_positive_time_ratio_per_resolution_ratio_method_and_pass(tmp_path):
    out = tmp_path / "res.json"
    proc = _run(*TINY, "--methods", "coredit,tome", "--ratios", "0.2,0.6", "--passes", "fwd,fwd+bwd", "--no-split",
                "--out", str(tmp_path / "reports"), "--tag", "tiny", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result == json.loads((tmp_path / "reports" / "attention_tiny.json").read_text())  # the same result
    meta, rows = result["meta"], result["rows"]
    assert meta["methods"] == ["coredit", "tome"] and meta["ratios"] == [0.2, 0.6] and meta["complete"]
    assert meta["hidden"] == 64 and meta["heads"] == 4
    keys = [(r["resolution"], r["ratio"], r["method"], r["pass"]) for r in rows]
    assert sorted(keys) == sorted((res, ratio, m, p) for res in ("128x192", "64x96") for ratio in (0.2, 0.6)
                                  for m in ("coredit", "tome") for p in ("fwd", "fwd+bwd"))
    assert {tuple(r["tokens"]) for r in rows} == {(8, 12), (4, 6)}  # --pad-sp 1: unpadded grids
    for r in rows:
        for k in ("time_s", "time_ratio", "over_ideal", "dense_s", "ideal_s", "ideal_over_dense"):
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r)
        assert r["rounds"] == 2 and r["kept"] + r["skipped"] == r["N"] and r["skipped"] > 0
        # the older names carry the same numbers
        assert (r["pruned_s"], r["pruned_over_dense"], r["pruned_over_ideal"]) == (
            r["time_s"], r["time_ratio"], r["over_ideal"])
    md = (tmp_path / "reports" / "attention_tiny.md").read_text()
    assert "| coredit | " in md and "| tome | " in md and "--methods coredit,tome" in md


def _main_error(capsys, *args) -> str:
    spec = importlib.util.spec_from_file_location("bench_attention_cli", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exc:
        tool.main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_an_unknown_method_or_a_ratio_out_of_range_is_one_line_naming_the_fix(tmp_path, capsys):
    line = _main_error(capsys, *TINY, "--methods", "coredit,tomee", "--out", str(tmp_path))
    assert "'tomee'" in line and "--methods coredit,coredit_copy" in line and "todo" in line
    line = _main_error(capsys, *TINY, "--ratios", "0.2,0.9", "--out", str(tmp_path))
    assert "0.9" in line and "--ratios 0.2,0.4,0.6" in line
    assert not list(tmp_path.iterdir())  # nothing written
