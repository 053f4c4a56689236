"""CoReDiT inside MagicDrive-V2's own training and sampling, without a fork.

``register()`` adds a scheduler ``"coredit_rflow"`` to MagicDrive-V2's ``SCHEDULERS`` registry. It is
MagicDrive-V2's ``RFLOW`` (same sampler, same loss) plus:

- on the first ``training_losses`` call it applies CoReDiT to the (unwrapped) model with the
  ``prune`` settings and starts the progressive ``schedule`` (resuming its saved state if any);
- each training batch is split into the samples whose time falls in the sampler's last
  ``late_steps`` steps (``c * r_l``) and the rest (``r_l``): two forwards, two static shapes;
- after each step the redundancy statistics go into the schedule (one all-reduce over all ranks
  every ``interval`` steps) and its state is written atomically to ``state_dir``;
- optional distillation (``L_ori + alpha L_pred + beta L_attn``) against a frozen dense copy;
- ``sample`` tells the model the step index, so the last ``late_steps`` steps use ``c * r_l``.

Nothing from MagicDrive-V2 is copied: this subclasses its ``RFLOW`` and calls its ``RFlowScheduler``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Optional

import torch

log = logging.getLogger("coredit.magicdrive")


def _unwrap(model):
    seen = set()
    while hasattr(model, "module") and id(model) not in seen:
        seen.add(id(model))
        model = model.module
    return model


def _batched(value, B: int) -> bool:
    return torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == B


def _take(kwargs: dict, idx: torch.Tensor, B: int) -> dict:
    return {k: (v[idx.to(v.device)] if _batched(v, B) else v) for k, v in kwargs.items()}


def register(force: bool = True):
    """Register ``coredit_rflow`` in MagicDrive-V2's scheduler registry; returns the class."""
    from magicdrivedit.registry import SCHEDULERS
    from magicdrivedit.schedulers.rf import RFLOW

    from .. import apply as apply_pruning
    from .. import get_controller
    from ..config import PruneConfig
    from ..rflow import RFlowConfig, late_mask
    from ..schedule import ProgressiveSchedule, ScheduleConfig
    from ..training.losses import DistillConfig

    class CoReDiTRFLOW(RFLOW):
        def __init__(self, prune: Optional[dict] = None, schedule: Optional[dict] = None,
                     distill: Optional[dict] = None, state_dir: Optional[str] = None, train_schedule: bool = True,
                     **kwargs):
            super().__init__(**kwargs)
            self.prune_cfg = PruneConfig.build(prune or {})
            self.schedule_cfg = ScheduleConfig(**(schedule or {}))
            self.distill_cfg = DistillConfig(**(distill or {}))
            self.train_schedule = train_schedule
            self.state_dir = state_dir or os.environ.get("COREDIT_STATE_DIR", "coredit_state")
            self.rflow = RFlowConfig(
                num_timesteps=self.num_timesteps, num_sampling_steps=self.num_sampling_steps,
                cfg_scale=self.cfg_scale, use_timestep_transform=self.use_timestep_transform,
                transform_scale=kwargs.get("transform_scale", 1.0),
                sample_method=kwargs.get("sample_method", "uniform"),
                loc=kwargs.get("loc", 0.0), scale=kwargs.get("scale", 1.0))
            self.controller = None
            self.schedule = None
            self.teacher = None

        # -------------------------------------------------------------- setup
        def _ensure(self, model):
            net = _unwrap(model)
            ctrl = get_controller(net)
            if ctrl is None:
                if self.distill_cfg.enabled and self.teacher is None:
                    self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
                ctrl = apply_pruning(net, self.prune_cfg)
            if self.controller is not ctrl:
                self.controller = ctrl
                self.schedule = ProgressiveSchedule(self.schedule_cfg, ctrl.names, ctrl.ratios)
                path = os.path.join(self.state_dir, "schedule_state.json")
                if os.path.isfile(path):
                    with open(path) as f:
                        self.schedule.load_state_dict(json.load(f))
                    log.info("CoReDiT: resumed schedule from %s (mean ratio %.3f)", path, self.schedule.mean_ratio)
                ctrl.set_ratios(self.schedule.ratios)
            return net, ctrl

        def _save_state(self):
            if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
                return
            os.makedirs(self.state_dir, exist_ok=True)
            tmp = os.path.join(self.state_dir, "schedule_state.json.tmp")
            with open(tmp, "w") as f:
                json.dump(self.schedule.state_dict(), f)
            os.replace(tmp, os.path.join(self.state_dir, "schedule_state.json"))
            self.controller.save_plan(os.path.join(self.state_dir, "plan.json"))

        # -------------------------------------------------------------- training
        def training_losses(self, model, x_start, model_kwargs=None, noise=None, mask=None, weights=None, t=None):
            net, ctrl = self._ensure(model)
            model_kwargs = dict(model_kwargs or {})
            B = x_start.shape[0]
            sched = self.scheduler
            if t is None:  # MagicDrive-V2's own sampling of training times
                if sched.use_discrete_timesteps:
                    t = torch.randint(0, sched.num_timesteps, (B,), device=x_start.device)
                elif sched.sample_method == "uniform":
                    t = torch.rand((B,), device=x_start.device) * sched.num_timesteps
                else:
                    t = sched.sample_t(x_start) * sched.num_timesteps
                if sched.use_timestep_transform:
                    from magicdrivedit.schedulers.rf.rectified_flow import timestep_transform

                    t = timestep_transform(t, model_kwargs, scale=sched.transform_scale,
                                           num_timesteps=sched.num_timesteps, cog_style=sched.cog_style_trans)
            if noise is None:
                noise = torch.randn_like(x_start)
            late = late_mask(t, self.rflow, self.prune_cfg.late_steps, model_kwargs["height"],
                             model_kwargs["width"], model_kwargs["num_frames"]).to(x_start.device)
            collect = self.train_schedule and not self.schedule.state.done
            ctrl.collect_stats(self.schedule_cfg.delta_ratio if collect else None)
            losses = torch.zeros(B, device=x_start.device, dtype=torch.float32)
            try:
                for phase, idx in (("main", (~late).nonzero().flatten()), ("late", late.nonzero().flatten())):
                    if idx.numel() == 0:
                        continue
                    ctrl.set_phase(phase)
                    kw = _take(model_kwargs, idx, B)
                    sub_mask = mask[idx] if mask is not None else None
                    if self.distill_cfg.enabled:
                        part = self._distill_loss(model, net, x_start[idx], noise[idx], t[idx], kw)
                    else:
                        part = sched.training_losses(model, x_start[idx], kw, noise[idx], sub_mask,
                                                     weights, t[idx])["loss"]
                    losses[idx.to(losses.device)] = part.float()
            finally:
                ctrl.set_phase("main")
            if collect:
                self.schedule.observe(ctrl.pop_stats())
                decision = self.schedule.step()
                if decision is not None:
                    ctrl.set_ratios(self.schedule.ratios)
                    log.info("CoReDiT step %d: raise %s to %.3f; mean ratio %.4f", decision.step, decision.name,
                             decision.ratio, decision.mean_ratio)
                    self._save_state()
            return {"loss": losses}

        def _distill_loss(self, model, net, x0, noise, t, kw):
            import torch.nn.functional as F

            x_t = sched_add_noise(self.scheduler, x0, noise, t)
            last = self.schedule.state.last_pruned
            name = self.controller.names[last] if last is not None else None
            cap_s, cap_t = [], []
            hs = ht = None
            if name:
                hs = net.get_submodule(name).register_forward_hook(lambda m, a, o: cap_s.append(o))
                ht = self.teacher.get_submodule(name).register_forward_hook(lambda m, a, o: cap_t.append(o))
            try:
                v = model(x_t, t, **kw)
                with torch.no_grad():
                    v_t = self.teacher(x_t, t, **kw)
            finally:
                for h in (hs, ht):
                    if h is not None:
                        h.remove()
            v, v_t = v.float(), v_t.float()
            per = lambda a: a.flatten(1).mean(1)  # noqa: E731
            loss = per((v - (x0 - noise).float()) ** 2) + self.distill_cfg.alpha * per((v - v_t) ** 2)
            if cap_s:
                la = sum(F.mse_loss(a.float(), b.float(), reduction="sum") for a, b in zip(cap_s, cap_t))
                loss = loss + self.distill_cfg.beta * la / sum(a.numel() for a in cap_s)
            return loss

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

    def sched_add_noise(s, x0, noise, t):
        return s.add_noise(x0, noise, t)

    SCHEDULERS.register_module("coredit_rflow", module=CoReDiTRFLOW, force=force)
    return CoReDiTRFLOW
