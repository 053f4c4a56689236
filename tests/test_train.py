"""Progressive fine-tuning end to end under torchrun (gloo, CPU): schedule agreement across ranks,
crash + resume equivalence, bad configs failing at start."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.dist.common import REPO, torchrun

CONFIG = os.path.join(REPO, "configs", "tiny_cpu.py")
# a small, quick variant of the embedded default
QUICK = ["data.num_samples=4", "data.frames=2", "data.image_hw=(32,56)", "train.log_every=1",
         "schedule.interval=1", "schedule.delta_ratio=0.1", "schedule.target_ratio=0.3"]


def test_ranks_fed_different_data_keep_identical_schedules(tmp_path):
    out = tmp_path / "sched"
    torchrun("train_worker.py", 2, CONFIG, str(out), f"work_dir={str(tmp_path / 'w')!r}", "parallel.sp_size=1",
             "train.steps=3", "train.ckpt_every=100", *QUICK)
    r0, r1 = (json.loads((tmp_path / f"sched.rank{r}.json").read_text()) for r in (0, 1))
    assert r0["local_sums"] != r1["local_sums"]  # different samples on the two data-parallel ranks ...
    assert r0["ratios"] == r1["ratios"]  # ... the same decisions
    assert r0["mean_ratio"] == pytest.approx(0.1)  # three decisions of +0.1 over the three prunable blocks


def _cmd(work_dir, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            os.path.join(REPO, "tools", "train.py"), CONFIG, "--work-dir", str(work_dir),
            "--cfg-options", "train.steps=8", "train.ckpt_every=2", "train.keep_last=10", *QUICK, *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _final_state(work_dir):
    ckpt = work_dir / "checkpoints" / "step_00000008"
    assert (ckpt / "COMPLETE").is_file()
    model = torch.load(ckpt / "engine" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    trainer = torch.load(ckpt / "trainer.pt", weights_only=False)
    return model, trainer


# a warm-up step, then the learning rate decays linearly over the last 6 of the 8 steps (the resume lands inside it)
DECAY = ["optim.lr=2e-4", "optim.warmup_steps=1", "optim.decay_steps=6"]


def _logged_lrs(work_dir):
    lines = (work_dir / "train.log").read_text().splitlines()
    return {int(m.group(1)): float(m.group(2)) for m in
            (re.search(r"step (\d+)/\d+ loss .* lr ([0-9.e+-]+) ", ln) for ln in lines) if m}


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cmd(a, *DECAY), env=_env(), check=True, capture_output=True, timeout=600)
    lrs = _logged_lrs(a)  # logged after step k (1-based): the rate step k trained at
    for k, frac in zip(range(3, 9), (6, 5, 4, 3, 2, 1)):  # 0-based step k-1 trains at lr * (8 - (k-1)) / 6
        assert lrs[k] == pytest.approx(2e-4 * frac / 6, rel=5e-3), (k, lrs)
    proc = subprocess.Popen(_cmd(b, *DECAY), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = b / "checkpoints" / "step_00000004" / "COMPLETE"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-training after a checkpoint
    proc.wait()
    assert marker.exists(), "the run ended before it wrote the step-4 checkpoint"
    assert not (b / "checkpoints" / "step_00000008").exists()
    resumed = subprocess.run(_cmd(b, *DECAY, "--resume", "auto"), env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    model_a, trainer_a = _final_state(a)
    model_b, trainer_b = _final_state(b)
    assert trainer_a["schedule"] == trainer_b["schedule"]
    assert trainer_a["schedule"]["history"], "the schedule made no decision; the comparison would be weak"
    for k, v in model_a.items():
        err = (model_b[k].float() - v.float()).abs().max().item()
        assert err <= 1e-6, f"{k} differs by {err:.2e} between the resumed and the uninterrupted run"
    for k, v in trainer_a["ema"]["shadow"].items():
        torch.testing.assert_close(trainer_b["ema"]["shadow"][k], v, rtol=1e-6, atol=1e-7)


def test_bad_config_value_fails_at_start_naming_the_key(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), CONFIG, "--work-dir",
                           str(tmp_path), "--cfg-options", "schedule.interval=0"], env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "schedule.interval" in proc.stderr


def test_block_scope_progressive_fine_tune_with_distillation_under_sp(tmp_path):
    """Block scope trains end to end on the embedded default: SP=2, the progressive schedule raises ratios from the
    statistics block scope records, and L_attn compares the most recently pruned spatial block's outputs."""
    work = tmp_path / "block"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "tools", "train.py"), CONFIG, "--work-dir", str(work), "--cfg-options", "train.steps=4",
           "train.ckpt_every=100", *QUICK, "prune.scope=block", "parallel.sp_size=2"]
    subprocess.run(cmd, env=_env(), check=True, cwd=REPO, capture_output=True, timeout=600)
    plan = json.loads((work / "plan.json").read_text())
    assert plan["mean_ratio"] > 0  # the schedule raised ratios from block scope's statistics
    attn = [float(m.group(1)) for m in (re.search(r"\(ori \S+ pred \S+ attn ([0-9.e+-]+)\)", ln) for ln in
                                        (work / "train.log").read_text().splitlines()) if m]
    assert attn and attn[-1] > 0  # distillation on the most recently pruned block's outputs


def test_flops_meter_counts_the_method_and_scope_that_train():
    """The trainer's "FLOPs saved" counts the configured method and scope (it once counted the paper's rule in
    attention scope whatever the config said)."""
    from coredit_video.flops import count_flops, get_spec
    from coredit_video.training.trainer import FlopsMeter

    spec = get_spec("magicdrive-v2-xl")
    ratios = [0.5] * spec.prunable_blocks
    for method, scope in (("coredit", "block"), ("coredit_merge", "attention"), ("tome", "attention")):
        dense, saved = FlopsMeter(spec, 6, 1, 3, method=method, scope=scope).per_sample(ratios, (56, 100), 5)
        want = count_flops(spec, None, views=6, ratios=ratios, hw_tokens=(56, 100), latent_frames=5, stride=3,
                           method=method, scope=scope)
        assert (dense, saved) == (want["dense_total"], want["saved_total"])
    _, att = FlopsMeter(spec, 6, 1, 3).per_sample(ratios, (56, 100), 5)
    _, blk = FlopsMeter(spec, 6, 1, 3, scope="block").per_sample(ratios, (56, 100), 5)
    assert blk > 1.2 * att
