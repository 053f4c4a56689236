"""What a new user hits on the command line: one line on stderr naming the fix, exit code 2, no traceback."""
import os
import subprocess
import sys

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
