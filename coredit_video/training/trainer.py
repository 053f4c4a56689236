"""The fine-tuning loop: progressive pruning schedule + rectified flow + DeepSpeed over DP x SP.

Everything random in a step (which samples, timesteps, noise) is a function of ``(seed, step,
micro-step, data-parallel rank)``, so ranks of one SP group see identical inputs and a resumed run
replays exactly what an uninterrupted run would have done.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import torch

from .. import apply as apply_pruning
from ..flops import count_flops
from ..methods import DEFAULT_METHOD
from ..parallel import destroy_parallel, init_parallel
from ..rflow import late_mask, training_timesteps
from ..schedule import ProgressiveSchedule
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import TrainConfig
from .ema import EMA
from .engine import build_engine, decayed_lr, deepspeed_config, set_lr
from .hosts import build_host_bundle
from .losses import flow_loss
from .step import begin_step, end_step, last_pruned_block, make_teacher

log = logging.getLogger("coredit.train")


def sample_indices(position: int, count: int, n: int, seed: int) -> List[int]:
    """Dataset indices of global sample positions ``[position, position + count)``: a fresh seeded
    permutation per epoch of ``n`` samples."""
    out, perms = [], {}
    for p in range(position, position + count):
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
        out.append(perms[epoch][p % n])
    return out


def step_generator(seed: int, step: int, micro: int, dp_rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 97 + micro) * 1009 + dp_rank)


def setup_logging(work_dir: str, is_main: bool) -> None:
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if is_main:
        os.makedirs(work_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(work_dir, "train.log"))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    log.addHandler(sh)


class FlopsMeter:
    """Running "FLOPs saved so far": dense and saved FLOPs summed over every trained sample."""

    def __init__(self, spec, views: int, bands: int, stride: int, cross_view: str = "off", method: str = DEFAULT_METHOD,
                 scope: str = "attention"):
        self.spec, self.views, self.bands, self.stride, self.cross_view = spec, views, bands, stride, cross_view
        self.method, self.scope = method, scope
        self.dense = 0
        self.saved = 0
        self._cache: Dict[tuple, tuple] = {}

    def per_sample(self, ratios, hw, T) -> tuple:
        key = (tuple(round(r, 9) for r in ratios), tuple(hw), T)
        if key not in self._cache:
            res = count_flops(self.spec, None, views=self.views, ratios=list(ratios), bands=self.bands,
                              hw_tokens=hw, latent_frames=T, stride=self.stride, cross_view=self.cross_view,
                              method=self.method, scope=self.scope)
            self._cache[key] = (res["dense_total"], res["saved_total"])
        return self._cache[key]

    def add(self, ratios, hw, T, count: int) -> None:
        d, s = self.per_sample(ratios, hw, T)
        self.dense += d * count
        self.saved += s * count

    @property
    def fraction(self) -> float:
        return self.saved / self.dense if self.dense else 0.0


def _tensorboard(work_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as e:  # tensorboard is optional
        log.warning("TensorBoard scalars disabled (%s); pip install tensorboard to get them", e)
        return None
    return SummaryWriter(os.path.join(work_dir, "tensorboard"))


def train(cfg: TrainConfig, resume: Optional[str] = None, stop_after: Optional[int] = None) -> dict:
    """Run (or resume) fine-tuning; returns a summary dict. ``stop_after`` ends the process's loop
    early after that many steps of this invocation (tests use it to simulate a crash point)."""
    st = init_parallel(cfg.parallel.sp_size, cfg.parallel.backend)
    setup_logging(cfg.work_dir, st.is_main)
    finished = False
    try:
        summary = _train(cfg, st, resume, stop_after)
        finished = True
        return summary
    finally:
        destroy_parallel(wait_for_peers=finished)


def _train(cfg: TrainConfig, st, resume: Optional[str], stop_after: Optional[int]) -> dict:
    tc = cfg.train
    bundle = build_host_bundle(cfg.model, cfg.data, cfg.seed)
    model = bundle.model.to(st.device)
    if tc.init_from:  # before the teacher copy and the EMA: both start from these weights
        if bundle.init_weights is None:
            raise ValueError(f"train.init_from={tc.init_from!r}: model.type={cfg.model.get('type', 'builtin')!r} "
                             "reads no initial weights; load them in its builder")
        log.info("initial weights: %s", bundle.init_weights(model, tc.init_from))
    if hasattr(model, "set_sequence_parallel"):
        model.set_sequence_parallel(st.sp_group)
    if tc.grad_checkpoint and hasattr(model, "config"):
        model.config = dataclasses.replace(model.config, grad_checkpoint=True)
    teacher = make_teacher(model) if cfg.distill.enabled else None
    ctrl = apply_pruning(model, cfg.prune)
    schedule = ProgressiveSchedule(cfg.schedule, ctrl.names, ctrl.ratios, max_ratio=ctrl.cfg.max_ratio)
    ctrl.set_ratios(schedule.ratios)
    model.train()
    o = cfg.optim
    engine = build_engine(model, deepspeed_config(
        micro_batch=tc.micro_batch, lr=o.lr, grad_accum=tc.grad_accum, zero_stage=o.zero_stage, precision=o.precision,
        betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, grad_clip=o.grad_clip, warmup_steps=o.warmup_steps))
    ema = EMA(model, tc.ema_decay)
    start_step = 0
    flops = FlopsMeter(bundle.spec, bundle.spec.views, ctrl.bands, cfg.prune.stride, ctrl.cfg.cross_view,
                       ctrl.cfg.method, ctrl.cfg.scope)
    ratio_trace: List[List[float]] = []
    ckpt = resolve_resume(resume, cfg.work_dir)
    if ckpt:
        state = load_checkpoint(engine, ckpt)
        schedule.load_state_dict(state["schedule"])
        ctrl.set_ratios(schedule.ratios)
        ema.load_state_dict(state["ema"])
        start_step = int(state["step"])
        flops.dense, flops.saved = state["flops"]
        ratio_trace = state["ratio_trace"]
        log.info("resumed from %s at step %d (mean ratio %.3f)", ckpt, start_step, schedule.mean_ratio)
    elif resume == "auto":
        log.info("--resume auto: no complete checkpoint in %s, starting fresh", cfg.work_dir)
    writer = _tensorboard(cfg.work_dir) if st.is_main else None
    log.info("training %d prunable blocks (%s ...) for %d steps: world %d = DP %d x SP %d, bands %d",
             len(ctrl), ", ".join(ctrl.names[:2]), tc.steps, st.world_size, st.dp_size, st.sp_size, ctrl.bands)

    from tqdm import tqdm

    bar = tqdm(total=tc.steps, initial=start_step, disable=not st.is_main, desc="train", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    n_data = len(bundle.dataset)
    per_step = tc.micro_batch * st.dp_size * tc.grad_accum
    step = start_step
    ran = 0
    t_start = time.time()
    while step < tc.steps:
        lr = decayed_lr(o.lr, step, tc.steps, o.decay_steps)
        if lr is not None:
            set_lr(engine, lr)
        used_lr = float(engine.optimizer.param_groups[0]["lr"])
        begin_step(ctrl, schedule)
        attn_block = last_pruned_block(ctrl, schedule)
        terms_sum: Dict[str, float] = {}
        for micro in range(tc.grad_accum):
            pos = step * per_step + micro * tc.micro_batch * st.dp_size + st.dp_rank * tc.micro_batch
            idx = sample_indices(pos, tc.micro_batch, n_data, cfg.seed)
            batch = bundle.collate([bundle.dataset[i] for i in idx])
            batch = {k: (v.to(st.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            x0 = bundle.latents(batch)
            g = step_generator(cfg.seed, step, micro, st.dp_rank)
            if tc.cond_drop > 0 and bundle.drop_condition is not None:
                batch = bundle.drop_condition(batch, (torch.rand(x0.shape[0], generator=g) < tc.cond_drop)
                                              .to(st.device))
            height, width, frames = bundle.frame_info(batch)
            t = training_timesteps(x0.shape[0], cfg.rflow, height, width, frames, generator=g).to(st.device)
            noise = torch.randn(x0.shape, generator=g).to(st.device, x0.dtype)
            late = late_mask(t, cfg.rflow, cfg.prune.late_steps, height, width, frames).to(st.device)
            terms = flow_loss(engine.module, x0, batch, t, noise, late, bundle.forward, cfg.rflow, ctrl,
                              teacher, cfg.distill, attn_block)
            engine.backward(terms["loss"])
            engine.step()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach()) / tc.grad_accum
            hw, T = bundle.token_grid(x0), x0.shape[3]
            n_late = int(late.sum())
            flops.add(ctrl.ratios, hw, T, x0.shape[0] - n_late)
            flops.add([r * cfg.prune.late_factor for r in ctrl.ratios], hw, T, n_late)
        ema.update(engine.module, step)
        decision = end_step(ctrl, schedule)
        ratio_trace.append(schedule.ratios)
        step += 1
        ran += 1
        if decision is not None:
            log.info("step %d: raise %s to r=%.3f (redundancy %.4g); mean ratio %.4f; FLOPs saved so far %.2f%%",
                     step, decision.name, decision.ratio, decision.redundancy, decision.mean_ratio,
                     100 * flops.fraction)
        loss_t = torch.tensor([terms_sum["loss"]], dtype=torch.float64)
        if st.world_size > 1:  # DP-average for the log (SP ranks hold the same value)
            torch.distributed.all_reduce(loss_t)
            loss_t /= st.world_size
        if st.is_main:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_t.item():.4f}", ratio=f"{schedule.mean_ratio:.3f}",
                            flops_saved=f"{100 * flops.fraction:.1f}%")
            if writer is not None and step % tc.log_every == 0:
                writer.add_scalar("loss/total", loss_t.item(), step)
                for k in ("loss_ori", "loss_pred", "loss_attn"):
                    writer.add_scalar(f"loss/{k[5:]}", terms_sum[k], step)
                writer.add_scalar("optim/lr", used_lr, step)
                writer.add_scalar("prune/mean_ratio", schedule.mean_ratio, step)
                writer.add_scalar("prune/flops_saved_so_far", flops.fraction, step)
            if step % tc.log_every == 0:
                log.info("step %d/%d loss %.4f (ori %.4f pred %.4f attn %.4f) lr %.3g mean ratio %.3f "
                         "FLOPs saved %.2f%%", step, tc.steps, loss_t.item(), terms_sum["loss_ori"],
                         terms_sum["loss_pred"], terms_sum["loss_attn"], used_lr, schedule.mean_ratio,
                         100 * flops.fraction)
        if step % tc.ckpt_every == 0 or step == tc.steps:
            path = save_checkpoint(engine, cfg.work_dir, step, dict(
                step=step, schedule=schedule.state_dict(), ema=ema.state_dict(), flops=(flops.dense, flops.saved),
                ratio_trace=ratio_trace, data_position=step * per_step, config=repr(cfg)), tc.keep_last)
            log.info("saved checkpoint %s", path)
        if stop_after is not None and ran >= stop_after:
            bar.close()
            return dict(stopped_at=step)
    bar.close()
    summary = dict(steps=tc.steps, seconds=time.time() - t_start, mean_ratio=schedule.mean_ratio,
                   ratios=schedule.ratios, flops_saved_so_far=flops.fraction, decisions=len(schedule.state.history))
    if st.is_main:
        summary.update(finish(cfg, ctrl, schedule, flops, ratio_trace, bundle))
        if writer is not None:
            writer.close()
    return summary


def finish(cfg: TrainConfig, ctrl, schedule, flops: FlopsMeter, ratio_trace, bundle) -> dict:
    """Write the plan, the ratio plot and the FLOPs summary (rank 0)."""
    plan_path = os.path.join(cfg.work_dir, "plan.json")
    ctrl.save_plan(plan_path)
    x = bundle.latents(bundle.collate([bundle.dataset[0]]))
    hw, T = bundle.token_grid(x), x.shape[3]
    final = count_flops(bundle.spec, None, views=bundle.spec.views, ratios=schedule.ratios, bands=ctrl.bands,
                        hw_tokens=hw, latent_frames=T, stride=cfg.prune.stride, cross_view=ctrl.cfg.cross_view,
                        method=ctrl.cfg.method, scope=ctrl.cfg.scope)
    summary = dict(
        plan=plan_path,
        final_plan_self_attention_reduction=final["self_attention_reduction"],
        final_plan_total_reduction=final["total_reduction"],
        flops_saved_during_training=flops.fraction,
        mean_ratio=schedule.mean_ratio,
        decisions=schedule.state.history,
    )
    with open(os.path.join(cfg.work_dir, "flops_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    try:
        summary["ratio_plot"] = plot_ratios(ratio_trace, ctrl.names, os.path.join(cfg.work_dir, "ratios.png"))
    except ImportError as e:
        log.warning("no ratio plot (%s)", e)
    log.info("final plan: mean ratio %.3f; self-attention FLOPs -%.1f%%, total -%.1f%% at the training shape; "
             "FLOPs saved over the whole run %.1f%%; plan in %s", schedule.mean_ratio,
             100 * final["self_attention_reduction"], 100 * final["total_reduction"], 100 * flops.fraction, plan_path)
    return summary


def plot_ratios(trace: List[List[float]], names: List[str], path: str) -> str:
    """Per-block ratio over training steps (like the paper's Fig. 5b): a heat map and the final plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = torch.tensor(trace).T.numpy() if trace else torch.zeros(len(names), 1).numpy()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, max(3, 0.25 * len(names) + 1)),
                               gridspec_kw=dict(width_ratios=[3, 1]))
    im = a.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0,
                  extent=(0.5, data.shape[1] + 0.5, len(names) - 0.5, -0.5))
    a.set_yticks(range(len(names)))
    a.set_yticklabels(names, fontsize=7)
    a.set_xlabel("training step")
    a.set_title("pruning ratio per block")
    fig.colorbar(im, ax=a, fraction=0.03)
    b.barh(range(len(names)), data[:, -1])
    b.set_ylim(len(names) - 0.5, -0.5)
    b.set_yticks([])
    b.set_xlabel("final ratio")
    b.set_title(f"mean {data[:, -1].mean():.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["train", "sample_indices", "step_generator", "plot_ratios"]
