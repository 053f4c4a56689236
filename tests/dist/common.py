"""Shared by the torchrun workers and the single-process references they are compared with."""
import importlib.util
import os
import subprocess
import sys

import torch
import torch.distributed as dist

import coredit_video as cv
from coredit_video.embedded.host import MultiViewSTDiT, host_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANDS = 4
GRIDS = [((4, 4), (3, 3)), ((5, 3), (3, 3))]
STRIDE = 3  # 5 rows per band: SP ranks start at rows 5, 10, 15, none a multiple of m, so a wrong shift shows
# mode -> ratio (None: not patched), or (ratio, method) for a method beyond the paper that runs under SP
MODES = {"dense": None, "ratio0": 0.0, "ratio0.3": 0.3, "copy0.3": (0.3, "coredit_copy"),
         "sharp0.3": (0.3, "coredit_sharp"), "merge0.3": (0.3, "coredit_merge")}


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    ratio, method = ratio if isinstance(ratio, tuple) else (ratio, "coredit")
    return cv.apply(model, dict(ratios=ratio, bands=BANDS, grids=GRIDS, stride=STRIDE, method=method))


def loss_of(out: torch.Tensor) -> torch.Tensor:
    w = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
    return (out * w).sum()


def run_modes(modes, patch_fn, st=None, build=None, make_inputs=None) -> dict:
    """One forward and backward of ``build()`` (default :func:`build_host`) on ``make_inputs()`` (default
    :func:`inputs`) per mode, patched by ``patch_fn(model, mode)``; at SP = ``st.sp_size`` when ``st`` is given
    (gradients averaged over the world, all-to-all elements per tag summed over ranks), else in-process."""
    from coredit_video.parallel import measure_comm

    build, make_inputs = build or build_host, make_inputs or inputs
    out = {}
    for mode in modes:
        model = build()
        if st is not None:
            model.set_sequence_parallel(st.sp_group)
        patch_fn(model, mode)
        with measure_comm() as fwd:
            y = model(**make_inputs())
        with measure_comm() as bwd:
            loss_of(y).backward()
        grads = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
        tags = ("self_attn", "cross_view")
        volume = torch.tensor([m.by_tag.get(t, 0) for m in (fwd, bwd) for t in tags], dtype=torch.float64)
        if st is not None:
            for g in grads.values():
                dist.all_reduce(g)
                g /= st.world_size
            dist.all_reduce(volume)
        out[mode] = dict(out=y.detach(), grads=grads, self_attn_fwd=volume[0].item(), cross_view_fwd=volume[1].item(),
                         self_attn_bwd=volume[2].item(), cross_view_bwd=volume[3].item())
        if st is None:
            out[mode]["model"] = model
    return out


def assert_sp_matches(got: dict, ref: dict, sp: int, mode: str) -> None:
    """Output and every gradient of an SP run against the single-process run of the same mode."""
    torch.testing.assert_close(got["out"], ref["out"], rtol=1e-4, atol=1e-5,
                               msg=lambda m: f"SP={sp} {mode} output differs from SP=1: {m}")
    total = torch.stack([g.norm() for g in ref["grads"].values()]).norm()
    for name, g in ref["grads"].items():
        # float reduction order differs between SP sizes: compare relative to the gradient's own norm, with a
        # floor for gradients that are zero in exact arithmetic (e.g. the key-norm bias under softmax)
        err = (got["grads"][name] - g).norm()
        assert err <= 1e-4 * g.norm() + 1e-6 * total, (
            f"SP={sp} {mode}: grad of {name} differs from SP=1 by {err:.2e} (norm {g.norm():.2e})")


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


def sp_results(worker: str, sp: int, tmp_dir) -> tuple:
    """``(sp, {mode: results})`` of ``worker`` run by torchrun on ``sp`` gloo processes."""
    path = os.path.join(str(tmp_dir), f"sp{sp}.pt")
    torchrun(worker, sp, path)
    return sp, torch.load(path)


def sp_run_fixture(worker: str, sizes=(2, 4)):
    """The module-scoped ``sp_run`` fixture of an SP parity test: ``(sp, {mode: results})`` of ``worker`` at each
    SP size of ``sizes`` (one torchrun each). In a test module: ``sp_run = sp_run_fixture("sp_worker.py")``."""
    import pytest

    @pytest.fixture(scope="module", params=list(sizes))
    def sp_run(request, tmp_path_factory):
        return sp_results(worker, request.param, tmp_path_factory.mktemp(worker[:-3]))

    return sp_run


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
