"""CoReDiT's ``coredit_rflow`` scheduler inside MagicDrive-V2's own training and sampling seam.

Against the real MagicDrive-V2 checkout named by ``MAGICDRIVE_V2_ROOT`` (the tiny ``MagicDriveSTDiT3`` and
the import stand-ins of ``test_magicdrive_adapter``): the scheduler is built through MagicDrive-V2's own
``build_module(..., SCHEDULERS)`` and compared with its own ``RFLOW`` (loss and sampler), its own
``timestep_transform`` sampler times and its own ``add_null_condition``. Skipped without the checkout.

One more stand-in, only while these tests run: ``magicdrivedit.datasets`` as a bare package holding
``IMG_FPS`` (MagicDrive-V2's ``schedulers.rf`` imports ``utils.inference_utils``, which imports that one
constant from a package whose ``__init__`` needs torchvision and mmdet3d).
"""
import copy
import importlib
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import coredit_video as cv
from tests.test_magicdrive_adapter import CAPTION, CFG, ENV, FRAMES, SPATIAL, TOKENS, build, inputs
from tests.test_magicdrive_adapter import md  # noqa: F401  (the module fixture: checkout + stand-ins)

INTEGRATION = "coredit_video.integrations.magicdrive_rflow"
STEPS, LATE_STEPS = 6, 2
# MagicDrive-V2's stage-3 scheduler (cog_style_trans: its transform for CogVAE clips; 9 frames -> 3)
HOST_SCHED = dict(use_timestep_transform=True, cog_style_trans=True, sample_method="logit-normal",
                  num_sampling_steps=STEPS, cfg_scale=2.0)


@pytest.fixture(scope="module")
def rf(md):  # noqa: F811
    """MagicDrive-V2's registry, RFLOW and helpers, with ``coredit_rflow`` registered."""
    if "magicdrivedit.datasets" not in sys.modules:
        datasets = types.ModuleType("magicdrivedit.datasets")
        datasets.__path__ = [str(Path(os.environ[ENV]).resolve() / "magicdrivedit" / "datasets")]
        datasets.IMG_FPS = 120  # magicdrivedit/datasets/utils.py
        sys.modules["magicdrivedit.datasets"] = datasets
    registry = importlib.import_module("magicdrivedit.registry")  # the checkout is there (md): no skip
    rf_mod = importlib.import_module("magicdrivedit.schedulers.rf")
    flow = importlib.import_module("magicdrivedit.schedulers.rf.rectified_flow")
    infer = importlib.import_module("magicdrivedit.utils.inference_utils")
    sys.modules.pop(INTEGRATION, None)  # binds MagicDrive-V2's RFLOW when imported: import it against this one
    integration = importlib.import_module(INTEGRATION)
    cls = integration.register()
    assert cls is integration.CoReDiTRFLOW and issubclass(cls, rf_mod.RFLOW)
    yield types.SimpleNamespace(cls=cls, build_module=registry.build_module, SCHEDULERS=registry.SCHEDULERS,
                                RFLOW=rf_mod.RFLOW, timestep_transform=flow.timestep_transform,
                                add_null_condition=infer.add_null_condition)
    sys.modules.pop(INTEGRATION, None)  # md unloads this checkout's modules next


def coredit(rf, state_dir, ratios=0.0, schedule=None, **over):
    cfg = dict(type="coredit_rflow", **HOST_SCHED,
               prune=dict(CFG, ratios=ratios, late_steps=LATE_STEPS, late_factor=0.5, max_ratio=0.5),
               schedule=dict(delta_ratio=0.1, interval=1, target_ratio=0.4, **(schedule or {})),
               state_dir=str(state_dir))
    cfg.update(over)
    return rf.build_module(cfg, rf.SCHEDULERS)


def host(rf):
    return rf.build_module(dict(type="rflow", **HOST_SCHED), rf.SCHEDULERS)


def train_batch(batch=4, seed=1):
    """``x [B, C*NC, T, H, W]`` and model_args as scripts/train_magicdrive.py builds them (text features with
    their mask, drop masks, fps / height / width / num_frames, order maps)."""
    args = inputs(batch=batch, seed=seed)
    x = args.pop("x")
    args.pop("timestep")
    lengths = torch.tensor([TOKENS - 1, 1, 2, 1, 2, 1])[:batch]  # the longest caption is sample 0's only
    args["mask"] = (torch.arange(TOKENS)[None] < lengths[:, None]).long()
    args["drop_cond_mask"] = torch.ones(batch)
    args["drop_frame_mask"] = torch.ones(batch, FRAMES)
    args["num_frames"] = torch.full((batch,), FRAMES)
    return x, args


def sampler_times(rf, args, batch):
    """The times MagicDrive-V2's own RFLOW.sample feeds the model, step by step (recorded, not recomputed)."""
    seen = []

    def fake(z, t, **kw):
        seen.append(t[:batch].clone())
        return torch.zeros_like(z)

    z = torch.zeros(batch, 1, 1, 1, 1)
    host(rf).sample(fake, FakeT5(torch.zeros(TOKENS, CAPTION)), z, ["a"] * batch, "cpu",
                    additional_args=dict(args), progress=False)
    return seen


class FakeT5:
    """MagicDrive-V2's text-encoder interface: ``encode(prompts) -> {"y", "mask"}``, ``null(n)``."""

    def __init__(self, y_embedding):
        self.y_embedding = y_embedding.detach()

    def encode(self, prompts):
        g = torch.Generator().manual_seed(len(prompts))
        return dict(y=torch.randn(len(prompts), 1, TOKENS, CAPTION, generator=g),
                    mask=torch.ones(len(prompts), TOKENS, dtype=torch.long))

    def null(self, n):
        return self.y_embedding[None].repeat(n, 1, 1)[:, None]


def record_forwards(model):
    """(phase, timesteps) of every forward of ``model``, the phase read from its controller."""
    calls = []

    def hook(mod, args, kwargs):
        ctrl = cv.get_controller(mod)
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append((ctrl.phase if ctrl is not None else None, t.detach().clone()))

    return calls, model.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------------------------------------------- training
def test_training_losses_split_match_and_schedule(md, rf, tmp_path, monkeypatch):  # noqa: F811
    model = build(md)
    x, args = train_batch()
    B = x.shape[0]
    times = sampler_times(rf, args, B)
    assert len(times) == STEPS and all(torch.all(a > b) for a, b in zip(times, times[1:]))
    thr = times[STEPS - LATE_STEPS]  # the sampler's last LATE_STEPS steps run the model at t <= thr
    # sample 0 (longest caption) and 3 in the main phase, 1 and 2 in the late one
    t = torch.stack([times[1][0], thr[1], thr[2] * 0.5, thr[3] + 1e-2])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    x_mask = torch.tensor([[True, True, True], [True, False, True], [True, True, True], [False, True, True]])
    args["x_mask"] = x_mask  # the train script's mask strategy: the same mask for the scheduler and the model
    ref = host(rf).training_losses(model, x, args, noise=noise, mask=x_mask, t=t)["loss"]

    sched = coredit(rf, tmp_path)
    assert type(sched).__name__ == "CoReDiTRFLOW" and isinstance(sched, rf.RFLOW)
    torch.testing.assert_close(sched.late_mask(t, args), torch.tensor([False, True, True, False]))
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b))[1])
    calls, handle = record_forwards(model)
    out = sched.training_losses(model, x, args, noise=noise, mask=x_mask, t=t)["loss"]
    handle.remove()
    ctrl = cv.get_controller(model)
    assert ctrl is sched.controller and ctrl.names == SPATIAL
    assert out.shape == (B,)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)  # ratio 0: MagicDrive-V2's own loss
    assert [(p, ts.tolist()) for p, ts in calls] == [("main", t[[0, 3]].tolist()), ("late", t[[1, 2]].tolist())]
    assert ctrl.phase == "main"

    # interval=1: the step raised one block by delta and saved the state (tmp file, then os.replace)
    assert sorted(ctrl.ratios) == [0.0, 0.0, 0.1] and sched.schedule.state.step == 1
    names = {os.path.basename(b): os.path.basename(a) for a, b in replaced}
    assert names == {"schedule_state.json": "schedule_state.json.tmp", "plan.json": "plan.json.tmp"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "schedule_state.json"]
    state = json.loads((tmp_path / "schedule_state.json").read_text())
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert state["ratios"] == plan["ratios"] == ctrl.ratios and state["step"] == 1
    assert plan["blocks"] == SPATIAL and plan["late_steps"] == LATE_STEPS

    # a new scheduler on a new model resumes from state_dir: it trains with the saved ratios, then steps on
    fresh_model = build(md)
    resumed = coredit(rf, tmp_path)
    resumed.training_losses(fresh_model, x, args, noise=noise, mask=x_mask, t=t)
    st = resumed.schedule.state
    assert st.step == 2 and st.history[0] == state["history"][0] and len(st.history) == 2
    assert sum(cv.get_controller(fresh_model).ratios) == pytest.approx(0.2)
    assert json.loads((tmp_path / "schedule_state.json").read_text())["step"] == 2


def test_late_threshold_follows_the_samplers_transform(rf, tmp_path):
    """Other resolutions and lengths move the split with the sampler's times (MagicDrive-V2's transform at
    scale 1, whatever ``transform_scale`` training uses); a time equal to step S - late_steps's is late."""
    sched = coredit(rf, tmp_path, transform_scale=2.0)  # training times only: the sampler uses scale 1
    for hw, frames in (((224, 400), 33), ((848, 1600), 1), ((96, 112), 9)):
        args = dict(height=torch.full((2,), float(hw[0])), width=torch.full((2,), float(hw[1])),
                    num_frames=torch.full((2,), frames))
        thr = sampler_times(rf, args, 2)[STEPS - LATE_STEPS][0]
        t = torch.stack([thr, thr + 1e-3])
        assert sched.late_mask(t, args).tolist() == [True, False]


def test_backward_through_the_pruned_model(md, rf, tmp_path):  # noqa: F811
    model = build(md).train()
    x, args = train_batch(batch=2)
    sched = coredit(rf, tmp_path, ratios=0.3, train_schedule=False)
    times = sampler_times(rf, args, 2)
    t = torch.stack([times[0][0], times[-1][1]])  # one main, one late sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    loss = sched.training_losses(model, x, args, noise=noise, t=t)["loss"]
    assert cv.get_controller(model).ratios == [0.3] * 3 and not (tmp_path / "plan.json").exists()
    loss.mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for name in SPATIAL:
        assert grads[f"{name}.qkv.weight"].abs().sum() > 0 and grads[f"{name}.proj.weight"].abs().sum() > 0
    cv.remove(model)
    dense = host(rf).training_losses(model, x, args, noise=noise, t=t)["loss"]
    assert (dense - loss).abs().max() > 1e-5  # the pruned model really ran


# ---------------------------------------------------------------------------------------------------- sampling
def test_sample_sets_steps_and_matches_rflow_at_ratio_zero(md, rf, tmp_path):  # noqa: F811
    model = build(md)
    cond = inputs(batch=1, seed=4)
    z = cond.pop("x")
    for k in ("timestep", "y"):
        cond.pop(k)
    cond["num_frames"] = torch.full((1,), FRAMES)
    extra = rf.add_null_condition(copy.deepcopy(cond), model.camera_embedder.uncond_cam.detach(),
                                  model.frame_embedder.uncond_cam.detach())
    enc = FakeT5(model.y_embedder.y_embedding)

    def run(scheduler):
        return scheduler.sample(model, enc, z.clone(), ["a"], "cpu", additional_args=copy.deepcopy(extra),
                                progress=False)

    with torch.no_grad():
        calls, handle = record_forwards(model)
        ref = run(host(rf))
        ref_times = [ts for _, ts in calls]
        calls.clear()
        ctrl = cv.apply(model, dict(CFG, ratios=0.0, late_steps=LATE_STEPS))  # picked up by the scheduler
        steps = []
        set_step = ctrl.set_step
        ctrl.set_step = lambda i, n: (steps.append((i, n)), set_step(i, n))[1]
        sched = coredit(rf, tmp_path)
        out = run(sched)
        handle.remove()
    assert sched.controller is ctrl and steps == [(i, STEPS) for i in range(STEPS)]
    assert [p for p, _ in calls] == ["main"] * (STEPS - LATE_STEPS) + ["late"] * LATE_STEPS
    assert all(torch.equal(a, b) for a, (_, b) in zip(ref_times, calls)) and len(ref_times) == STEPS
    assert ctrl.phase == "main"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    # pruned (late phase at c * r_l): finite, and different from the dense sampler
    ctrl.set_ratios(0.4)
    with torch.no_grad():
        pruned = run(sched)
    assert torch.isfinite(pruned).all() and (pruned - ref).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------------- distillation
def test_distillation_adds_to_the_plain_loss(md, rf, tmp_path):  # noqa: F811
    from coredit_video.training.losses import DistillConfig

    model = build(md).train()
    x, args = train_batch(batch=2)
    times = sampler_times(rf, args, 2)
    t = torch.stack([times[1][0], times[-1][1]])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    x_mask = torch.tensor([[True, False, True], [True, True, True]])
    args["x_mask"] = x_mask
    distill = coredit(rf, tmp_path, ratios=0.2, distill=dict(enabled=True, alpha=0.5, beta=0.5))
    plain = coredit(rf, tmp_path / "plain", train_schedule=False)

    def losses(sched):
        return sched.training_losses(model, x, args, noise=noise, mask=x_mask, t=t)["loss"]

    d1 = losses(distill)  # step 1: L_ori + alpha L_pred (no block pruned by the schedule yet)
    teacher = distill.teacher
    assert teacher is not None and cv.get_controller(teacher) is None
    assert not any(p.requires_grad for p in teacher.parameters())
    ctrl = cv.get_controller(model)
    assert distill.schedule.state.last_pruned is not None  # the step raised a block: L_attn from now on
    d1.mean().backward()
    assert torch.isfinite(d1).all()

    distill.train_schedule = False
    d2 = losses(distill)  # L_ori + alpha L_pred + beta L_attn
    p2 = losses(plain)
    assert plain.controller is ctrl
    assert torch.all(d2 >= p2) and (d2 - p2).min() > 0
    d2.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert not any(m._forward_hooks for m in list(model.modules()) + list(teacher.modules()))
    with torch.no_grad():
        distill.distill_cfg = DistillConfig(enabled=True, alpha=0.5, beta=0.0)
        no_attn = losses(distill)
        distill.distill_cfg = DistillConfig(enabled=True, alpha=0.0, beta=0.0)
        ori = losses(distill)
    assert torch.all(d2 - no_attn > 0) and torch.all(no_attn - ori > 0)  # L_attn, L_pred each add
    torch.testing.assert_close(ori, p2.detach(), rtol=1e-6, atol=1e-7)  # L_ori is MagicDrive-V2's masked loss


# ---------------------------------------------------------------------------------------------------- the class
def test_scheduler_class_is_importable_and_picklable(rf, tmp_path):
    assert pickle.loads(pickle.dumps(rf.cls)) is rf.cls  # a module-level class, found by its name
    # MagicDrive-V2's own RFLOW pickles with uniform training times (logit-normal keeps a lambda)
    sched = coredit(rf, tmp_path, distill=dict(enabled=True, alpha=0.3), sample_method="uniform")
    back = pickle.loads(pickle.dumps(sched))
    assert type(back) is rf.cls and back.prune_cfg == sched.prune_cfg and back.distill_cfg == sched.distill_cfg
    assert back.schedule_cfg == sched.schedule_cfg and back.num_sampling_steps == STEPS


def test_without_magicdrive_the_import_works_and_use_names_the_fix():
    """No checkout needed: a process where ``magicdrivedit`` cannot be imported (blocked even if installed)."""
    code = ("import sys\nsys.modules['magicdrivedit'] = None\nimport coredit_video.integrations.magicdrive_rflow as m\n"
            "for use in (m.register, m.CoReDiTRFLOW):\n"
            "    try:\n        use()\n    except ImportError as e:\n        print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", ENV)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errs = [line for line in proc.stdout.splitlines() if line.startswith("ERR")]
    assert len(errs) == 2 and all("magicdrivedit" in e and "PYTHONPATH" in e for e in errs), proc.stdout
