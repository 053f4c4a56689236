"""Shared by the torchrun workers and the single-process references they are compared with."""
import os
import subprocess
import sys

import torch

import coredit_video as cv
from coredit_video.models import MultiViewSTDiT, host_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANDS = 4
GRIDS = [((4, 4), (3, 3)), ((5, 3), (3, 3))]
STRIDE = 3  # 5 rows per band: SP ranks start at rows 5, 10, 15, none a multiple of m, so a wrong shift shows
MODES = {"dense": None, "ratio0": 0.0, "ratio0.3": 0.3}


def build_host(seed: int = 0) -> MultiViewSTDiT:
    torch.manual_seed(seed)
    return MultiViewSTDiT(host_config("tiny", force_pad_h_for_sp_size=BANDS)).train()


def inputs(seed: int = 1, batch: int = 2):
    """Latents of 40x16 -> a 20x8 token grid per frame (5 rows per band with bands=4)."""
    g = torch.Generator().manual_seed(seed)
    B, NC, T, H, W = batch, 6, 2, 40, 16
    return dict(
        x=torch.randn(B, NC, 4, T, H, W, generator=g),
        timestep=torch.linspace(50.0, 900.0, B),
        y=torch.randn(B, 5, 32, generator=g),
        cams=torch.randn(B, NC, 12, generator=g),
        bev_map=torch.randn(B, 3, 16, 16, generator=g),
    )


def patch(model, mode: str):
    ratio = MODES[mode]
    if ratio is None:
        return None
    return cv.apply(model, dict(ratios=ratio, bands=BANDS, grids=GRIDS, stride=STRIDE))


def loss_of(out: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
    return (out * w).sum()


def torchrun(script: str, nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(REPO, "tests", "dist", script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


# ---------------------------------------------------------------------- the 2x2 mesh training test
MESH_STEPS = 3
MESH_GLOBAL_BATCH = 4
MESH_OPTIM = dict(lr=1e-3, eps=1e-6, weight_decay=0.01)


def mesh_batch(step: int, dp_rank: int = 0, dp_size: int = 1):
    """This DP rank's share of the global batch of ``step`` (the whole batch when ``dp_size == 1``)."""
    full = inputs(seed=100 + step, batch=MESH_GLOBAL_BATCH)
    g = torch.Generator().manual_seed(200 + step)
    full["target"] = torch.randn(full["x"].shape, generator=g)
    per = MESH_GLOBAL_BATCH // dp_size
    return {k: v[dp_rank * per:(dp_rank + 1) * per] for k, v in full.items()}


def mesh_loss(model, batch) -> torch.Tensor:
    out = model(batch["x"], batch["timestep"], batch["y"], batch["cams"], batch["bev_map"])
    return torch.nn.functional.mse_loss(out, batch["target"])
