"""CoReDiT inside MagicDrive-V2's own training and sampling, without a fork.

:class:`CoReDiTRFLOW` (registered by ``register()`` as ``"coredit_rflow"`` in MagicDrive-V2's ``SCHEDULERS``)
is MagicDrive-V2's ``RFLOW`` (same sampler, same loss) plus:

- on the first ``training_losses`` call it applies CoReDiT to the (unwrapped) model with the
  ``prune`` settings and starts the progressive ``schedule`` (resuming its saved state if any);
- each training batch is split into the samples whose time falls in the sampler's last
  ``late_steps`` steps (``c * r_l``) and the rest (``r_l``): two forwards, two static shapes. The
  split point is the time MagicDrive-V2's own sampler gives step ``S - late_steps`` (its
  ``timestep_transform`` with the sampler's arguments: scale 1, ``cog_style_trans``, the batch's
  height, width and frames);
- after each step the redundancy statistics go into the schedule (one all-reduce over all ranks
  every ``interval`` steps) and its state is written atomically to ``state_dir``;
- optional distillation (``L_ori + alpha L_pred + beta L_attn``) against a frozen dense copy;
- ``sample`` tells the model the step index, so the last ``late_steps`` steps use ``c * r_l``.

The phase split, row slicing, schedule update, teacher and distillation terms are
:mod:`coredit_video.training.step`'s, the same code the built-in trainer runs. Nothing from MagicDrive-V2
is copied: this subclasses its ``RFLOW`` and calls its ``RFlowScheduler``. Importing this module never
fails; without an importable ``magicdrivedit`` the scheduler raises, naming the fix, when it is built.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import torch

from .. import apply as apply_pruning
from .. import get_controller
from ..config import PruneConfig
from ..schedule import ProgressiveSchedule, ScheduleConfig
from ..training.losses import DistillConfig
from ..training.step import (BlockCapture, begin_step, distill_terms, end_step, last_pruned_block, make_teacher,
                             run_phases, take_rows)

log = logging.getLogger("coredit.magicdrive")

try:  # MagicDrive-V2's own scheduler: on sys.path from a checkout (MAGICDRIVE_V2_ROOT) or an install
    from magicdrivedit.registry import SCHEDULERS
    from magicdrivedit.schedulers.rf import RFLOW
    from magicdrivedit.schedulers.rf.rectified_flow import mean_flat, timestep_transform
except ImportError as _exc:
    _MISSING = (f"coredit_rflow needs MagicDrive-V2's 'magicdrivedit' importable (put a flymin/MagicDrive-V2 "
                f"checkout, commit 4ed72c6, on PYTHONPATH; see third_party/README.md): {_exc}")

    class RFLOW:  # stands in for the missing base class: building the scheduler says what is missing
        def __init__(self, *args, **kwargs):
            raise ImportError(_MISSING)
else:
    _MISSING = None


def _unwrap(model):
    seen = set()
    while hasattr(model, "module") and id(model) not in seen:
        seen.add(id(model))
        model = model.module
    return model


def _num_views(model_kwargs: dict) -> int:
    """MagicDrive-V2's NC: ``len(mv_order_map)`` (its forward's own rule), 1 without one."""
    order = model_kwargs.get("mv_order_map")
    return len(order) if order else 1


def _pin_caption_length(sub: dict, full: dict, B: int) -> None:
    """MagicDrive-V2 uses the text ``mask`` only for the batch's caption length (``encode_text`` keeps
    ``y[:, :max(mask.sum(1)) + 1]``; the per-sample lengths are dropped). A sub-batch must attend to as many
    caption tokens as the whole batch would, so its first row's mask becomes the batch's longest one."""
    mask = full.get("mask")
    if not (torch.is_tensor(mask) and mask.dim() == 2 and mask.shape[0] == B and torch.is_tensor(sub.get("mask"))):
        return
    lengths = mask.sum(dim=1)
    if sub["mask"].sum(dim=1).max() < lengths.max():
        sub["mask"] = sub["mask"].clone()
        sub["mask"][0] = mask[int(lengths.argmax())]


class CoReDiTRFLOW(RFLOW):
    """MagicDrive-V2's ``RFLOW`` with CoReDiT's progressive pruning, phase split and optional distillation."""

    def __init__(self, prune: Optional[dict] = None, schedule: Optional[dict] = None,
                 distill: Optional[dict] = None, state_dir: Optional[str] = None, train_schedule: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.prune_cfg = PruneConfig.build(prune or {})
        self.schedule_cfg = ScheduleConfig.build(schedule)
        self.distill_cfg = DistillConfig(**(distill or {}))
        self.train_schedule = train_schedule
        self.state_dir = state_dir or os.environ.get("COREDIT_STATE_DIR", "coredit_state")
        self.controller = None
        self.schedule = None
        self.teacher = None

    # -------------------------------------------------------------- setup
    def _ensure(self, model, training: bool = False):
        net = _unwrap(model)
        if training and self.distill_cfg.enabled and self.teacher is None:
            self.teacher = make_teacher(net)  # dense, whether or not net is pruned already
        ctrl = get_controller(net)
        if ctrl is None:
            ctrl = apply_pruning(net, self.prune_cfg)
        if self.controller is not ctrl:
            self.controller = ctrl
            self.schedule = ProgressiveSchedule(self.schedule_cfg, ctrl.names, ctrl.ratios,
                                                max_ratio=ctrl.cfg.max_ratio)
            path = os.path.join(self.state_dir, "schedule_state.json")
            if os.path.isfile(path):
                with open(path) as f:
                    self.schedule.load_state_dict(json.load(f))
                log.info("CoReDiT: resumed schedule from %s (mean ratio %.3f)", path, self.schedule.mean_ratio)
            ctrl.set_ratios(self.schedule.ratios)
        return net, ctrl

    def _save_state(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_rank() != 0:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = os.path.join(self.state_dir, "schedule_state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.schedule.state_dict(), f)
        os.replace(tmp, os.path.join(self.state_dir, "schedule_state.json"))
        self.controller.save_plan(os.path.join(self.state_dir, "plan.json"))

    # -------------------------------------------------------------- phases
    def sampling_timesteps(self, model_kwargs: dict, B: int, device=None) -> list:
        """The times ``[B]`` MagicDrive-V2's ``RFLOW.sample`` feeds the model at each of its steps, for
        a batch with these ``height`` / ``width`` / ``num_frames`` (computed the way it does)."""
        S, T = self.num_sampling_steps, self.num_timesteps
        times = [(1.0 - i / S) * T for i in range(S)]
        if self.use_discrete_timesteps:
            times = [int(round(t)) for t in times]
        times = [torch.tensor([t] * B, device=device) for t in times]
        if self.use_timestep_transform:
            args = dict(model_kwargs)  # its transform casts fp16 entries in place
            times = [timestep_transform(t, args, num_timesteps=T, cog_style=self.scheduler.cog_style_trans)
                     for t in times]
        return times

    def late_mask(self, t: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """``[B]`` bool: samples at times the sampler reaches in its last ``late_steps`` steps, i.e.
        ``t <= t_{S - late_steps}`` (step ``i`` runs the model at ``t_i`` and integrates to ``t_{i+1}``)."""
        k, S = self.prune_cfg.late_steps, self.num_sampling_steps
        if k <= 0:
            return torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
        if k >= S:
            return torch.ones(t.shape[0], dtype=torch.bool, device=t.device)
        threshold = self.sampling_timesteps(model_kwargs, t.shape[0], t.device)[S - k]
        return t.float() <= threshold.float().to(t.device)

    # -------------------------------------------------------------- training
    def training_losses(self, model, x_start, model_kwargs=None, noise=None, mask=None, weights=None, t=None):
        net, ctrl = self._ensure(model, training=True)
        model_kwargs = dict(model_kwargs or {})
        B = x_start.shape[0]
        sched = self.scheduler
        if t is None:  # MagicDrive-V2's own sampling of training times (RFlowScheduler.training_losses)
            if sched.use_discrete_timesteps:
                t = torch.randint(0, sched.num_timesteps, (B,), device=x_start.device)
            elif sched.sample_method == "uniform":
                t = torch.rand((B,), device=x_start.device) * sched.num_timesteps
            else:
                t = sched.sample_t(x_start) * sched.num_timesteps
            if sched.use_timestep_transform:
                t = timestep_transform(t, model_kwargs, scale=sched.transform_scale,
                                       num_timesteps=sched.num_timesteps, cog_style=sched.cog_style_trans)
        if noise is None:
            noise = torch.randn_like(x_start)
        late = self.late_mask(t, model_kwargs).to(x_start.device)
        NC = _num_views(model_kwargs)
        begin_step(ctrl, self.schedule, active=self.train_schedule)

        def group(phase, idx):
            kw = take_rows(model_kwargs, idx, B, NC)
            if idx is not None:
                _pin_caption_length(kw, model_kwargs, B)
            x0, nz, tt = (take_rows(v, idx, B) for v in (x_start, noise, t))
            sub_mask = take_rows(mask, idx, B)
            if self.distill_cfg.enabled:
                return dict(loss=self._distill_loss(model, net, x0, kw, nz, sub_mask, weights, tt))
            return dict(loss=sched.training_losses(model, x0, kw, nz, sub_mask, weights, tt)["loss"])

        losses = run_phases(ctrl, late, group)["loss"]
        if self.train_schedule:
            decision = end_step(ctrl, self.schedule)
            if decision is not None:
                log.info("CoReDiT step %d: raise %s to %.3f; mean ratio %.4f", decision.step, decision.name,
                         decision.ratio, decision.mean_ratio)
                self._save_state()
        return {"loss": losses}

    def _distill_loss(self, model, net, x0, kw, noise, mask, weights, t):
        """``[n]``: ``L_ori`` (MagicDrive-V2's own loss, its masks and weights) ``+ alpha L_pred + beta L_attn``."""
        seen = {}

        def student(x_t, t_, **k):
            out = model(x_t, t_, **k)
            seen.update(x_t=x_t, t=t_, out=out)
            return out

        name = last_pruned_block(self.controller, self.schedule) if self.distill_cfg.beta > 0 else None
        with BlockCapture(net, self.teacher, name) as cap:
            l_ori = self.scheduler.training_losses(student, x0, kw, noise, mask, weights, t)["loss"]
            with torch.no_grad():
                v_t = self.teacher(seen["x_t"], seen["t"], **kw)
        v = seen["out"]
        if v.shape[1] == 2 * x0.shape[1]:  # learned sigma: the velocity is the first half
            v = v.chunk(2, dim=1)[0]
        if v_t.shape[1] == 2 * x0.shape[1]:
            v_t = v_t.chunk(2, dim=1)[0]
        terms = distill_terms(v, v_t, cap, reduce=lambda d: mean_flat(d, mask=mask))
        return l_ori.float() + self.distill_cfg.alpha * terms["pred"] + self.distill_cfg.beta * terms["attn"]

    # -------------------------------------------------------------- sampling
    def sample(self, model, *args, **kwargs):
        net, ctrl = self._ensure(model)
        S = self.num_sampling_steps
        state = {"i": 0}

        def stepped(*a, **k):
            if state["i"] >= S:
                raise RuntimeError(f"the sampler called the model more than {S} times; CoReDiT needs one "
                                   "forward per step (classifier-free guidance in one doubled batch)")
            ctrl.set_step(state["i"], S)
            state["i"] += 1
            return model(*a, **k)

        try:
            return super().sample(stepped, *args, **kwargs)
        finally:
            ctrl.set_phase("main")


def register(force: bool = True):
    """Register :class:`CoReDiTRFLOW` as ``coredit_rflow`` in MagicDrive-V2's scheduler registry; returns it."""
    if _MISSING is not None:
        raise ImportError(_MISSING)
    SCHEDULERS.register_module("coredit_rflow", module=CoReDiTRFLOW, force=force)
    return CoReDiTRFLOW
