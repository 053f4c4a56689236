"""Crash-safe training checkpoints.

Layout: ``<work_dir>/checkpoints/step_00000020/`` holding the DeepSpeed engine state (model and the
ZeRO-partitioned optimizer, one file per rank) under ``engine/``, ``trainer.pt`` (schedule, EMA,
step, data position, config) and ``rng_rank<r>.pt`` per rank, plus a ``COMPLETE`` marker. Each
checkpoint is written to a hidden temporary directory and renamed only when every rank has
finished, so a crash mid-save never spoils the last good one. Every file is read back (zip CRCs)
before the marker is written; ``--resume auto`` takes the newest directory with the marker whose files
still read back, warning about (and skipping) a broken one.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
import zipfile
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist

CKPT_RE = re.compile(r"^step_(\d{8})$")
MARKER = "COMPLETE"
ENGINE_TAG = "engine"
log = logging.getLogger("coredit.train")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the way out (one line)."""


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
    broken = _gather_problems(tmp)
    if broken:  # nothing is marked COMPLETE; the last good checkpoint stays the newest one
        raise CheckpointError(f"checkpoint {final} did not read back after saving ({broken[0]}); check the disk "
                              f"(space, quota) and rerun with --resume auto")
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


def _files(path: str) -> List[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(path) for n in names if n.endswith(".pt"))


def file_problem(path: str) -> Optional[str]:
    """``None`` if the ``torch.save`` file at ``path`` reads back whole (every zip member's CRC checks),
    else ``"<path>: <what is wrong>"``. Reads the whole file but unpickles nothing."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as e:  # truncated, not a zip
        return f"{path}: unreadable ({type(e).__name__}: {e})"
    return None if bad is None else f"{path}: member {bad} fails its CRC check"


def checkpoint_problems(path: str, share: bool = False) -> List[str]:
    """Problems of the checkpoint directory ``path`` (empty: intact). ``share`` splits the reading over
    the ranks (collective: every rank must call it with the same path)."""
    files = _files(path)
    if not any(os.path.basename(f) == "trainer.pt" for f in files):
        return [f"{os.path.join(path, 'trainer.pt')}: missing"]
    if not share:
        return [p for p in map(file_problem, files) if p]
    return _gather_problems(path)


def _gather_problems(path: str) -> List[str]:
    world = dist.get_world_size() if dist.is_initialized() else 1
    mine = [p for p in map(file_problem, _files(path)[_rank()::world]) if p]
    if world == 1:
        return mine
    every: list = [None] * world
    dist.all_gather_object(every, mine)
    return [p for ps in every for p in ps]


def resolve_resume(resume: Optional[str], work_dir: str) -> Optional[str]:
    """``None`` -> no resume; ``"auto"`` -> newest complete checkpoint whose files read back (or none;
    broken ones are skipped with a warning naming the file); else a path that must be an intact complete
    checkpoint. Collective under ``torch.distributed`` (the ranks share the reading)."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(checkpoint_dir(work_dir))
        newest_problem = None
        for _, path in reversed(found):
            problems = checkpoint_problems(path, share=True)
            if not problems:
                return path
            newest_problem = newest_problem or problems[0]
            if _rank() == 0:
                log.warning("checkpoint %s is broken (%s); falling back to the previous one", path, problems[0])
        if found:
            raise CheckpointError(f"every checkpoint in {checkpoint_dir(work_dir)} is broken (newest: "
                                  f"{newest_problem}); move them away to start fresh")
        return None
    if not os.path.isdir(resume):
        raise CheckpointError(f"--resume {resume}: no such checkpoint directory; use --resume auto or an existing "
                              "step_* directory")
    if not os.path.isfile(os.path.join(resume, MARKER)):
        raise CheckpointError(f"--resume {resume}: not a complete checkpoint (no {MARKER} marker; "
                              "it was probably cut off mid-save: use an older one or --resume auto)")
    problems = checkpoint_problems(resume, share=True)
    if problems:
        raise CheckpointError(f"--resume {resume}: broken checkpoint ({problems[0]}); use an older one or "
                              "--resume auto (it skips broken checkpoints)")
    return resume


def load_checkpoint(engine, path: str) -> dict:
    """Restore the engine (model + optimizer) and this rank's RNG; returns the trainer state."""
    try:
        load_path, _ = engine.load_checkpoint(path, tag=ENGINE_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise RuntimeError("no engine state found")
        rng_file = os.path.join(path, f"rng_rank{_rank()}.pt")
        if os.path.isfile(rng_file):
            set_rng_state(torch.load(rng_file, weights_only=False))
        return torch.load(os.path.join(path, "trainer.pt"), weights_only=False)
    except Exception as e:  # a wrong world size, a foreign checkpoint: one line, not a traceback per rank
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot resume from {path} ({type(e).__name__}: {first}); use another checkpoint "
                              "or the same launch (world size, ZeRO stage) that wrote it") from e
