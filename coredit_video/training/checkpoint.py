"""Crash-safe training checkpoints.

Layout: ``<work_dir>/checkpoints/step_00000020/`` holding the DeepSpeed engine state (model and the
ZeRO-partitioned optimizer, one file per rank) under ``engine/``, ``trainer.pt`` (schedule, EMA,
step, data position, config) and ``rng_rank<r>.pt`` per rank, plus a ``COMPLETE`` marker. Each
checkpoint is written to a hidden temporary directory and renamed only when every rank has
finished, so a crash mid-save never spoils the last good one; ``--resume auto`` takes the newest
directory with the marker.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

CKPT_RE = re.compile(r"^step_(\d{8})$")
MARKER = "COMPLETE"
ENGINE_TAG = "engine"


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def checkpoint_dir(work_dir: str) -> str:
    return os.path.join(work_dir, "checkpoints")


def save_checkpoint(engine, work_dir: str, step: int, trainer_state: dict, keep_last: int = 3) -> str:
    """Collective: every rank calls it. Returns the final directory."""
    root = checkpoint_dir(work_dir)
    final = os.path.join(root, f"step_{step:08d}")
    tmp = os.path.join(root, f".tmp_step_{step:08d}")
    if _rank() == 0:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier save
        os.makedirs(tmp)
    _barrier()
    engine.save_checkpoint(tmp, tag=ENGINE_TAG)
    torch.save(rng_state(), os.path.join(tmp, f"rng_rank{_rank()}.pt"))
    if _rank() == 0:
        torch.save(trainer_state, os.path.join(tmp, "trainer.pt"))
    _barrier()
    if _rank() == 0:
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"step": step, "time": time.time(),
                       "world_size": dist.get_world_size() if dist.is_initialized() else 1}, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(final):  # re-saving a step (after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        prune_checkpoints(root, keep_last)
    _barrier()
    return final


def list_checkpoints(root: str):
    """Complete checkpoints under ``root``, oldest first, as ``(step, path)``."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = CKPT_RE.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, MARKER)):
            out.append((int(m.group(1)), path))
    return sorted(out)


def prune_checkpoints(root: str, keep_last: int) -> None:
    if keep_last and keep_last > 0:
        for _, path in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(path, ignore_errors=True)


def resolve_resume(resume: Optional[str], work_dir: str) -> Optional[str]:
    """``None`` -> no resume; ``"auto"`` -> newest complete checkpoint (or none); else a path that must
    be a complete checkpoint."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(checkpoint_dir(work_dir))
        return found[-1][1] if found else None
    if not os.path.isdir(resume):
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint directory")
    if not os.path.isfile(os.path.join(resume, MARKER)):
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {MARKER} marker; "
                                "it was probably cut off mid-save: use an older one or --resume auto)")
    return resume


def load_checkpoint(engine, path: str) -> dict:
    """Restore the engine (model + optimizer) and this rank's RNG; returns the trainer state."""
    load_path, _ = engine.load_checkpoint(path, tag=ENGINE_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the engine state from {path}/{ENGINE_TAG}")
    rng_file = os.path.join(path, f"rng_rank{_rank()}.pt")
    if os.path.isfile(rng_file):
        set_rng_state(torch.load(rng_file, weights_only=False))
    return torch.load(os.path.join(path, "trainer.pt"), weights_only=False)
