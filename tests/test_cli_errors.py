"""What a new user hits on the command line: one line on stderr naming the fix, exit code 2, no traceback."""
import os
import subprocess
import sys
import time

import pytest

from tests.dist.common import REPO

CONFIG = os.path.join(REPO, "configs", "tiny_cpu.py")
SMALL = ["data.num_samples=2", "data.frames=2", "data.image_hw=(32,56)"]


def _run(tool, *args, env=None):
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    return lines[0]


def test_train_sp_without_torchrun_names_torchrun_and_sp1(tmp_path):
    line = _run("train.py", CONFIG, "--work-dir", str(tmp_path), "--cfg-options", "parallel.sp_size=2", *SMALL)
    assert "torchrun --nproc_per_node 2" in line and "parallel.sp_size=1" in line


def test_target_ratio_above_the_cap_names_max_ratio(tmp_path):
    line = _run("train.py", CONFIG, "--work-dir", str(tmp_path), "--cfg-options", "parallel.sp_size=1",
                "schedule.target_ratio=0.7", *SMALL)
    assert "schedule.target_ratio" in line and "prune.max_ratio=0.5" in line  # the one cap


@pytest.mark.parametrize("kind", ["folder", "file", "broken"])
def test_generate_ckpt_that_is_not_a_checkpoint(tmp_path, kind):
    ckpt = tmp_path / "ckpt"
    if kind == "file":
        ckpt = tmp_path / "plan.json"
        ckpt.write_text("{}")
    else:
        ckpt.mkdir()
    if kind == "broken":
        (ckpt / "trainer.pt").write_bytes(b"PK\x03\x04 cut off")
    line = _run("generate.py", CONFIG, "--ckpt", str(ckpt), "--dense", "--out", str(tmp_path / "out"),
                "--num-samples", "1", "--cfg-options", *SMALL)
    assert f"--ckpt {ckpt}" in line and "checkpoints/step_N" in line
    if kind == "broken":
        assert str(ckpt / "trainer.pt") in line
    assert not (tmp_path / "out").exists()


def test_generate_plan_above_the_cap_names_prune_max_ratio(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"ratios": [0.9, 0.9, 0.9]}')  # the tiny host has 3 prunable blocks
    line = _run("generate.py", CONFIG, "--ckpt", "none", "--plan", str(plan), "--out", str(tmp_path / "out"),
                "--num-samples", "1", "--cfg-options", *SMALL)
    assert str(plan) in line and "0.9" in line and "prune.max_ratio=0.5" in line
    assert not (tmp_path / "out").exists()


def test_flops_refuses_a_resolution_the_vae_cannot_encode():
    line = _run("flops.py", "--resolution", "850x1601")
    assert "multiples of 8" in line and "--resolution 856x1608" in line
    ok = subprocess.run([sys.executable, os.path.join(REPO, "tools", "flops.py"), "--resolution", "424x800", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and '"hw_tokens": [27, 50]' in ok.stdout  # odd latent sizes: padded by the patch


# Bad values of every entry point: one line naming the fix, exit code 2, before any work (no output folder, seconds).
BAD_INPUTS = [
    ("generate.py", [CONFIG, "--ckpt", "auto", "--dense", "--out", "{out}", "--cfg-options", "prune.scope=blocks"],
     "scope must be one of ('attention', 'block'), got 'blocks'"),
    ("generate.py", [CONFIG, "--ckpt", "none", "--dense", "--out", "{out}", "--steps", "0"], "--steps 0"),
    ("generate.py", [CONFIG, "--ckpt", "none", "--dense", "--out", "{out}", "--num-samples", "0"], "--num-samples 0"),
    ("front.py", ["--methods", "coredit_merge@blok", "--scenes", "1", "--out", "{out}"], "['blok'] after '@'"),
    ("front.py", ["--probe-methods", "coredit@block,foo", "--out", "{out}"], "unknown method(s) ['foo']"),
    ("front.py", ["--sampling-steps", "0", "--out", "{out}"], "--sampling-steps 0"),
    ("front.py", ["--config", "configs/nonexist.py", "--out", "{out}"], "'configs/nonexist.py' not found"),
    ("front.py", ["--out", "{out}", "--seeds"], "--seeds: expected at least one argument"),
    ("train.py", [CONFIG, "--work-dir", "{out}", "--cfg-options", "prune.scope=blocks"], "got 'blocks'"),
    ("train.py", ["configs/nonexist.py", "--work-dir", "{out}"], "'configs/nonexist.py' not found"),
    ("ablate.py", ["--out", "{out}", "--cfg-options", "prune.scope=blocks"], "got 'blocks'"),
    ("eval_bev.py", ["{out}", "--config", "configs/nonexist.py"], "'configs/nonexist.py' not found"),
    ("eval_bev.py", ["{out}", "--config", "configs/eval_tiny_cpu.py", "--cfg-options", "protocol.foo=1"],
     "unknown key(s) ['foo']"),
    ("probe_token_reduction.py", ["--ratios", "1.5", "--out", "{out}"], "--ratios must lie in (0, 1)"),
    ("probe_token_reduction.py", ["--config", "configs/nonexist.py", "--out", "{out}"], "not found"),
    ("bench_e2e.py", ["--device", "cpu", "--ratio", "1.5", "--out", "{out}"], "--ratio value must be in [0, 1)"),
    ("bench_e2e.py", ["--device", "cpu", "--preset", "foo", "--out", "{out}"], "--preset 'foo'"),
    ("demo.py", ["--preset", "foo"], "unknown host preset 'foo'"),
    ("demo.py", ["--ratio", "1.5"], "--ratio must be in [0, 1)"),
    ("flops.py", ["--method", "foo"], "invalid choice: 'foo'"),
    # the options the step cache and the front's new lines add
    ("generate.py", [CONFIG, "--ckpt", "none", "--dense", "--out", "{out}", "--cfg-options", "prune.step_cache=True"],
     "set scope='block'"),
    ("generate.py", [CONFIG, "--ckpt", "none", "--dense", "--out", "{out}", "--cfg-options", "prune.scope=block",
                     "prune.step_cache=True", "prune.cache_select=oldest"], "cache_select must be one of"),
    ("front.py", ["--methods", "coredit+cache", "--out", "{out}"], "the step cache runs in block scope"),
    ("front.py", ["--methods", "coredit/x", "--out", "{out}"], "after '/' give the steps"),
    ("front.py", ["--max-stale", "0", "--out", "{out}"], "--max-stale 0"),
    ("front.py", ["--fewer-steps", "0", "--out", "{out}"], "--fewer-steps [0]"),
    ("flops.py", ["--step-cache"], "--scope block"),
]


@pytest.mark.parametrize("tool, args, words", BAD_INPUTS, ids=[f"{t}:{' '.join(a[-2:])}" for t, a, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, tool, args, words):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    line = _run(tool, *[a.replace("{out}", str(out)) for a in args])
    assert words in line
    assert not out.exists()  # nothing written, nothing sampled
    assert time.perf_counter() - t0 < 60  # the tool's imports, not minutes of work
