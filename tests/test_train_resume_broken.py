"""A corrupted checkpoint on ``--resume``: named in one line, skipped by ``--resume auto`` (which then
resumes from the previous one and still matches an uninterrupted run), refused when named explicitly."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coredit_video.training.checkpoint import (CheckpointError, checkpoint_problems, file_problem, list_checkpoints,
                                               resolve_resume, save_checkpoint)
from tests.dist.common import REPO

CONFIG = os.path.join(REPO, "configs", "tiny_cpu.py")
QUICK = ["parallel.sp_size=1", "data.num_samples=4", "data.frames=2", "data.image_hw=(32,56)",
         "schedule.interval=1", "schedule.delta_ratio=0.1", "schedule.target_ratio=0.3", "train.steps=6",
         "train.ckpt_every=2", "train.keep_last=10"]


def _env(ext_dir):
    return dict(os.environ, OMP_NUM_THREADS="1", TORCH_EXTENSIONS_DIR=str(ext_dir),
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _train(work_dir, *extra):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), CONFIG, "--work-dir",
                           str(work_dir), "--cfg-options", *QUICK] + list(extra),
                          env=_env(work_dir.parent / "torch_extensions"),
                          capture_output=True, text=True, timeout=600)


def _state(ckpt):
    model = torch.load(ckpt / "engine" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    return model, torch.load(ckpt / "trainer.pt", weights_only=False)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_file_problem_finds_truncation_and_flipped_bytes(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"w": torch.arange(1000.0)}, p)
    assert file_problem(str(p)) is None
    raw = bytearray(p.read_bytes())
    i = raw.index(torch.arange(1000.0).numpy().tobytes()[400:408])  # inside the tensor's bytes
    raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))
    assert "CRC" in file_problem(str(p))
    _truncate(p)
    assert str(p) in file_problem(str(p))
    assert checkpoint_problems(str(tmp_path)) == [f"{tmp_path / 'trainer.pt'}: missing"]


def test_broken_checkpoint_is_named_skipped_and_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    full = _train(a)
    assert full.returncode == 0, full.stderr[-3000:]
    cut = _train(b, "--stop-after", "4")
    assert cut.returncode == 0, cut.stderr[-3000:]
    ckpts = b / "checkpoints"
    assert (ckpts / "step_00000004" / "COMPLETE").is_file() and not (ckpts / "step_00000006").exists()
    broken = ckpts / "step_00000004" / "engine" / "mp_rank_00_model_states.pt"
    _truncate(broken)  # COMPLETE marker still there: a disk that lost data after the save

    named = _train(b, "--resume", str(ckpts / "step_00000004"))
    assert named.returncode == 2
    lines = named.stderr.strip().splitlines()
    err = [ln for ln in lines if " INFO " not in ln]  # (the trainer's log of what it did before)
    assert len(err) == 1 and err[0].startswith("error:") and lines[-1] == err[0], named.stderr[-2000:]
    assert str(broken) in err[0] and "--resume auto" in err[0]

    resumed = _train(b, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warn = [ln for ln in resumed.stderr.splitlines() if "is broken" in ln]
    assert len(warn) == 1 and str(broken) in warn[0] and "falling back" in warn[0]
    assert f"resumed from {ckpts / 'step_00000002'} at step 2" in resumed.stderr
    model_a, trainer_a = _state(a / "checkpoints" / "step_00000006")
    model_b, trainer_b = _state(ckpts / "step_00000006")
    assert trainer_a["schedule"] == trainer_b["schedule"] and trainer_a["schedule"]["history"]
    for k, v in model_a.items():
        err = (model_b[k].float() - v.float()).abs().max().item()
        assert err <= 1e-6, f"{k} differs by {err:.2e} between the resumed and the uninterrupted run"
    for k, v in trainer_a["ema"]["shadow"].items():
        torch.testing.assert_close(trainer_b["ema"]["shadow"][k], v, rtol=1e-6, atol=1e-7)
    assert checkpoint_problems(str(ckpts / "step_00000004")) == []  # re-saved whole by the resumed run
    # DeepSpeed on CPU compiled no op (it used to JIT-build a shared-memory all-reduce, ~50 s, silently)
    assert "built successfully" not in full.stderr + resumed.stderr
    assert not (tmp_path / "torch_extensions").exists()


class _Engine:
    """Stands in for DeepSpeed's engine: writes one model file, whole or cut off."""

    def __init__(self, cut: bool):
        self.cut = cut

    def save_checkpoint(self, root, tag):
        os.makedirs(os.path.join(root, tag))
        path = os.path.join(root, tag, "mp_rank_00_model_states.pt")
        torch.save({"module": {"w": torch.ones(256)}}, path)
        if self.cut:
            _truncate(Path(path))


def test_a_checkpoint_that_does_not_read_back_is_never_marked_complete(tmp_path):
    good = save_checkpoint(_Engine(cut=False), str(tmp_path), 2, {"step": 2})
    assert os.path.isfile(os.path.join(good, "COMPLETE")) and checkpoint_problems(good) == []
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states.pt"):
        save_checkpoint(_Engine(cut=True), str(tmp_path), 4, {"step": 4})
    assert [s for s, _ in list_checkpoints(str(tmp_path / "checkpoints"))] == [2]
    assert resolve_resume("auto", str(tmp_path)) == good
