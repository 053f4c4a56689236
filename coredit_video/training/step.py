"""One training step's CoReDiT glue, shared by the built-in trainer and MagicDrive-V2's ``coredit_rflow``.

A host supplies its own loss and its own sampler times; everything CoReDiT adds to a step lives here:

- the phase split: samples whose time falls in the sampler's last ``late_steps`` steps run the
  ``late`` phase (``c * r_l``), the rest the ``main`` one, one forward per non-empty group
  (:func:`run_phases`), with the batch's rows sliced per group (:func:`take_rows`);
- the schedule around a step: redundancy statistics on (:func:`begin_step`), then fed to the
  progressive schedule, which may raise one block (:func:`end_step`);
- distillation: a frozen dense teacher (:func:`make_teacher`), the most recently pruned block's outputs
  of both (:class:`BlockCapture`), and the per-sample ``L_pred`` / ``L_attn`` (:func:`distill_terms`).

Every loss term is per sample (``[n]``): MagicDrive-V2's scheduler returns per-sample losses that its
training script weights and averages, and a per-sample term weighs each sample the same whichever phase
group, data-parallel rank or micro-batch it lands in. The built-in trainer averages the ``[B]`` terms.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..plugin import remove as remove_pruning

PHASES = ("main", "late")


# ------------------------------------------------------------------------------------------ phase split
def take_rows(value, idx: Optional[torch.Tensor], B: int, views: int = 1):
    """Rows of samples ``idx`` in one batch entry: tensors batched by ``B``, tensors laid out ``(B views)``
    (``[B * views, ...]``, e.g. MagicDrive-V2's per-camera entries), lists of ``B`` items, dicts
    recursively; anything else (order maps, scalars, per-view constants) unchanged. ``idx=None``: the whole
    batch, the very same objects."""
    if idx is None:
        return value
    if isinstance(value, dict):
        return {k: take_rows(v, idx, B, views) for k, v in value.items()}
    if isinstance(value, list) and len(value) == B:
        return [value[i] for i in idx.tolist()]
    if not torch.is_tensor(value) or value.dim() == 0:
        return value
    if value.shape[0] == B:
        return value[idx.to(value.device)]
    if views > 1 and value.shape[0] == B * views:
        rows = (idx[:, None] * views + torch.arange(views, device=idx.device)).flatten()
        return value[rows.to(value.device)]
    return value


def phase_groups(late: torch.Tensor) -> List[Tuple[str, Optional[torch.Tensor]]]:
    """``late [B]`` bool -> the non-empty ``(phase, sample indices)`` groups, ``main`` first; a batch that is
    all in one phase gives ``[(phase, None)]`` (no slicing: exactly the host's own call)."""
    groups = [(phase, sel.nonzero().flatten()) for phase, sel in zip(PHASES, (~late, late))]
    groups = [(phase, idx) for phase, idx in groups if idx.numel()]
    if len(groups) == 1:
        return [(groups[0][0], None)]
    return groups


def run_phases(controller, late: torch.Tensor,
               fn: Callable[[str, Optional[torch.Tensor]], Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Call ``fn(phase, idx)`` once per phase group with ``controller`` in that phase (``main`` again after,
    whatever happens); ``fn`` returns per-sample terms ``{name: [n]}`` for its rows (``idx=None``: all
    ``B``). Returns ``{name: [B]}`` in batch order."""
    parts: List[Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]] = []
    try:
        for phase, idx in phase_groups(late):
            if controller is not None:
                controller.set_phase(phase)
            parts.append((idx, fn(phase, idx)))
    finally:
        if controller is not None:
            controller.set_phase("main")
    if len(parts) == 1:
        return parts[0][1]
    back = torch.argsort(torch.cat([idx for idx, _ in parts]))
    return {k: torch.cat([terms[k] for _, terms in parts])[back.to(parts[0][1][k].device)] for k in parts[0][1]}


# ------------------------------------------------------------------------------------------ schedule
def begin_step(controller, schedule, active: bool = True) -> None:
    """Before a step's forwards: record eq. 4's redundancy increments while the schedule still raises."""
    on = active and not schedule.state.done
    controller.collect_stats(schedule.cfg.delta_ratio if on else None)


def end_step(controller, schedule):
    """After a step: feed its statistics to the schedule, let it decide (an all-reduce over all ranks every
    ``interval`` steps) and apply the new ratios. Returns the schedule's decision (``None`` most steps)."""
    schedule.observe(controller.pop_stats())
    controller.collect_stats(None)
    decision = schedule.step()
    if decision is not None:
        controller.set_ratios(schedule.ratios)
    return decision


def last_pruned_block(controller, schedule) -> Optional[str]:
    """Name of the module the schedule raised most recently (``L_attn``'s): its self-attention, or in block scope
    the whole spatial block (whose self-attention sees only the retained tokens); ``None`` before any."""
    last = schedule.state.last_pruned
    if last is None:
        return None
    name = controller.names[last]
    return name.rsplit(".", 1)[0] if controller.cfg.scope == "block" else name


# ------------------------------------------------------------------------------------------ distillation
def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen (eval, no gradients) dense copy of ``model``; a pruned model keeps its patch and its controller
    (the copy gets its own, removed)."""
    teacher = copy.deepcopy(model)
    remove_pruning(teacher)
    return teacher.eval().requires_grad_(False)


class BlockCapture:
    """Outputs of one block (``name``) of the student and the teacher, one entry per forward, while open
    (a context manager; ``name=None`` or no teacher: captures nothing)."""

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], name: Optional[str]):
        self.student: List[torch.Tensor] = []
        self.teacher: List[torch.Tensor] = []
        self.name = name
        self._handles = []
        if name and teacher is not None:
            self._handles = [student.get_submodule(name).register_forward_hook(self._keep(self.student)),
                             teacher.get_submodule(name).register_forward_hook(self._keep(self.teacher))]

    @staticmethod
    def _keep(store: List[torch.Tensor]):
        return lambda module, args, out: store.append(out[0] if isinstance(out, tuple) else out)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> BlockCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, ...]`` x2 -> ``[n]``: mean squared difference of each sample, in float32."""
    return ((a.float() - b.float()) ** 2).reshape(a.shape[0], -1).mean(1)


def distill_terms(pred: torch.Tensor, teacher_pred: torch.Tensor, capture: BlockCapture,
                  reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Per-sample distillation terms ``{"pred": [n], "attn": [n]}`` of ``n`` samples.

    ``L_pred``: ``reduce`` of the squared difference of the student's and the teacher's predictions
    ``[n, ...]`` (default: the mean over each sample; a host passes its own masked mean). ``L_attn``: the
    mean squared difference of the captured block outputs over each sample's rows (a block output is
    ``[n * k, ...]``, its rows sample-major: ``[B * views * frames, tokens, C]``), averaged over the
    block's forwards; zero when nothing was captured.
    """
    n = pred.shape[0]
    d = (pred.float() - teacher_pred.float().detach()) ** 2
    l_pred = reduce(d) if reduce is not None else d.reshape(n, -1).mean(1)
    pairs = list(zip(capture.student, capture.teacher))
    l_attn = l_pred.new_zeros(n)
    for a, b in pairs:
        if a.shape[0] % n:
            raise ValueError(f"L_attn: block {capture.name!r} returned {a.shape[0]} rows for {n} samples; "
                             "its output's first dimension must be the batch times a whole number")
        l_attn = l_attn + per_sample_mse(a.reshape(n, -1), b.detach().reshape(n, -1))
    return dict(pred=l_pred, attn=l_attn / max(len(pairs), 1))


__all__ = ["BlockCapture", "distill_terms", "end_step", "last_pruned_block", "make_teacher", "per_sample_mse",
           "phase_groups", "run_phases", "begin_step", "take_rows"]
