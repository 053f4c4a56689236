"""The handle ``apply`` returns: prunable blocks in plan order, their ratios, the denoising phase,
coherence statistics for the schedule, and pruning plans (JSON)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from .attention import BlockLayout, pruned_self_attention
from .config import PruneConfig
from .ops import band_budgets, redundancy_increment
from .ops.selection import check_ratio
from .parallel.seq_attention import sp_self_attention
from .plan import PLAN_VERSION, Plan, grids_json, read_plan, write_plan

PHASES = ("main", "late")


def sp_size_of(group) -> int:
    """Ranks in a sequence-parallel process group (1 without one)."""
    return dist.get_world_size(group) if group is not None else 1


class _Hook:
    """What the host holds for each adapter hook: forwards to the controller's current hook ``index``. Picklable
    and copyable, so a copied model's hooks reach the copied controller (which rebinds them, :meth:`hook`)."""

    def __init__(self, controller: PruningController, index: int):
        self.controller, self.index = controller, index

    def __call__(self, *args, **kwargs):
        return self.controller.hook(self.index)(*args, **kwargs)


class PruningController:
    def __init__(self, model: nn.Module, cfg: PruneConfig, adapter, blocks: List[Tuple[str, nn.Module]],
                 bands: int):
        self.model = model
        self.cfg = cfg
        self.adapter = adapter
        self.bands = bands
        self.names = [name for name, _ in blocks]
        self.modules = [mod for _, mod in blocks]
        self.layouts = [
            BlockLayout(l, *cfg.grid_specs[l % len(cfg.grid_specs)], stride=cfg.stride) for l in range(len(blocks))
        ]
        self._ratios = [0.0] * len(blocks)
        self.phase = "main"
        self.enabled = True
        self.sp_group = None  # set by apply() from the adapter
        self.handles: list = []
        self._hook_fns: Optional[list] = None  # the adapter's hooks on self.model (None: not bound yet)
        self.hw: Optional[Tuple[int, int]] = None
        # recompute safety: (phase, hw) as seen by each forward, keyed by a tensor every block receives
        self._contexts: OrderedDict[int, Tuple[str, Tuple[int, int]]] = OrderedDict()
        self._fresh: set = set()
        self._expect_new = True
        self._active: Optional[Tuple[str, Tuple[int, int]]] = None
        self._stats_delta: Optional[float] = None
        self._stats: Dict[int, List[float]] = {}
        if cfg.resolved_plan is not None:
            self._apply_plan(cfg.resolved_plan)
        else:
            self.set_ratios(cfg.ratios)

    @property
    def sp_group_size(self) -> int:
        return sp_size_of(self.sp_group)

    # ------------------------------------------------------------------ hooks, copies and pickles
    def bind_hooks(self) -> None:
        """Attach the adapter's hooks to ``self.model``; the host holds a :class:`_Hook` in place of each."""
        self.handles = self.adapter.attach(self.model, self)
        fns = []
        for i, handle in enumerate(self.handles):
            hooks = handle.hooks_dict_ref()
            fns.append(hooks[handle.id])
            hooks[handle.id] = _Hook(self, i)
        self._hook_fns = fns

    def hook(self, index: int):
        """Adapter hook ``index``, bound to this controller's model (rebound once after a copy or a load)."""
        if self._hook_fns is None:
            self._rebind()
        return self._hook_fns[index]

    def _rebind(self) -> None:
        # A deep copy / unpickled model holds copies of the _Hook proxies: take the adapter's hooks for this model
        # and this controller, and leave the proxies where they are (same order, same flags).
        fns = []
        for handle in self.adapter.attach(self.model, self):
            fns.append(handle.hooks_dict_ref()[handle.id])
            handle.remove()
        if len(fns) != len(self.handles):
            raise RuntimeError(f"the adapter attached {len(fns)} hooks to the copied model, the original had "
                               f"{len(self.handles)}; re-apply pruning on the copy: cv.apply(copy, cv.get_controller"
                               "(original).cfg)")
        self._hook_fns = fns
        self.sp_group = self.adapter.sp_group(self.model)

    def __getstate__(self) -> dict:
        # hooks are closures and process groups belong to a process: both are rebound on first use
        return dict(self.__dict__, _hook_fns=None, sp_group=None)

    # ------------------------------------------------------------------ ratios
    def __len__(self) -> int:
        return len(self.names)

    @property
    def ratios(self) -> List[float]:
        """Base ratio ``r_l`` of each prunable block, in plan order (a copy)."""
        return list(self._ratios)

    def set_ratios(self, ratios: Union[float, Sequence[float]]) -> None:
        vals = [float(ratios)] * len(self) if isinstance(ratios, (int, float)) else [float(r) for r in ratios]
        if len(vals) != len(self):
            raise ValueError(f"got {len(vals)} ratios for {len(self)} prunable blocks ({self.names[:3]}...)")
        self._ratios = [check_ratio(r, self.cfg.max_ratio, f"ratio of {n}") for r, n in zip(vals, self.names)]

    def set_ratio(self, ordinal: int, ratio: float) -> None:
        self._ratios[ordinal] = check_ratio(ratio, self.cfg.max_ratio, f"ratio of {self.names[ordinal]}")

    @property
    def mean_ratio(self) -> float:
        return sum(self._ratios) / max(1, len(self))

    def effective_ratio(self, ordinal: int, phase: Optional[str] = None) -> float:
        """``r_l`` in the main phase, ``c * r_l`` in the last ``late_steps`` steps; 0 when disabled."""
        if not self.enabled:
            return 0.0
        r = self._ratios[ordinal]
        return r * self.cfg.late_factor if (phase or self.phase) == "late" else r

    # ------------------------------------------------------------------ phase and frame
    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase

    def set_step(self, step_index: int, num_steps: int) -> str:
        """Sampler hook: step ``i`` of ``num_steps`` (0-based); the last ``late_steps`` are 'late'."""
        if not 0 <= step_index < num_steps:
            raise ValueError(f"step_index {step_index} outside [0, {num_steps})")
        self.set_phase("late" if step_index >= num_steps - self.cfg.late_steps else "main")
        return self.phase

    def set_frame(self, hw: Tuple[int, int]) -> None:
        """Adapter hook: the padded token grid ``(H, W)`` of this forward's frames."""
        self.hw = self._check_hw(hw)
        self._fresh, self._expect_new, self._active = set(), True, None

    def _check_hw(self, hw) -> Tuple[int, int]:
        hw = (int(hw[0]), int(hw[1]))
        if hw[0] % self.bands:
            raise ValueError(
                f"the frame has {hw[0]} token rows, not a multiple of bands={self.bands}; pad H for "
                "the SP size (MagicDrive-V2: force_pad_h_for_sp_size / simulate_sp_size) or change bands"
            )
        return hw

    def enter_block(self, key: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> None:
        """Adapter hook before each prunable block: binds the block to the forward it belongs to.

        ``key`` is a tensor every block of one forward receives and that lives until its backward (the
        timestep modulation). The first block of a forward records the current phase and frame under
        it; a gradient-checkpoint recompute of an older forward finds that record again, so it selects
        exactly the tokens the original forward selected even if the phase has changed since.
        """
        ptr = key.data_ptr()
        if self._expect_new or ptr in self._fresh:
            if ptr not in self._fresh:
                self._contexts[ptr] = (self.phase, self._check_hw(hw) if hw is not None else self.hw)
                self._contexts.move_to_end(ptr)
                while len(self._contexts) > 64:
                    self._contexts.popitem(last=False)
                self._fresh.add(ptr)
                self._expect_new = False
            elif hw is not None and self._contexts[ptr][1] != tuple(hw):
                raise ValueError(f"blocks of one forward disagree on the frame size: {self._contexts[ptr][1]} vs {hw}")
        self._active = self._contexts.get(ptr)

    def frame_of(self, key: torch.Tensor) -> Optional[Tuple[int, int]]:
        """The frame ``(H, W)`` recorded by :meth:`enter_block` for the forward keyed by ``key`` (or ``None``)."""
        ctx = self._contexts.get(key.data_ptr())
        return ctx[1] if ctx is not None else None

    # ------------------------------------------------------------------ statistics for the schedule
    def collect_stats(self, delta_ratio: Optional[float]) -> None:
        """Start (``delta_ratio`` > 0) or stop (``None``) recording eq. 4's ``dR_l`` each forward."""
        self._stats_delta = delta_ratio
        self._stats = {}

    def pop_stats(self) -> List[Optional[float]]:
        """Mean recorded ``dR_l`` per block since the last pop (``None`` where nothing was seen)."""
        out = [(sum(v) / len(v)) if (v := self._stats.get(l)) else None for l in range(len(self))]
        self._stats = {}
        return out

    def _scores_hook(self, ordinal: int, hw: Tuple[int, int], layout: BlockLayout, bands: int, sp_size: int):
        if self._stats_delta is None:  # a checkpoint recompute records the same value again: the mean holds
            return None
        r, d = self._ratios[ordinal], self._stats_delta

        def record(sc: torch.Tensor) -> None:
            # each SP rank sees bands/P of the bands: scaled by P, the mean over SP ranks is the frame's value
            dr = redundancy_increment(sc, hw, r, d, layout.stride, layout.ordinal, bands) * sp_size
            self._stats.setdefault(ordinal, []).append(float(dr))

        return record

    # ------------------------------------------------------------------ the patched forward
    def run_block(self, ordinal: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pruned self-attention for block ``ordinal`` on ``x [frames, tokens, C]``."""
        if self._hook_fns is None:  # a copy whose host hooks have not run yet: take this process's SP group
            self._rebind()
        phase, hw = self._active if self._active is not None else (self.phase, self.hw)
        if hw is None:
            raise RuntimeError(
                f"{self.names[ordinal]} ran before the host told its frame size; call the model's forward "
                "(the adapter hooks it) or controller.set_frame((H, W)) first"
            )
        H, W = hw
        P = sp_size_of(self.sp_group)
        if x.dim() != 3 or x.shape[1] * P != H * W:
            share = f" (this rank's 1/{P} share: {H // P} of {H} rows)" if P > 1 else ""
            raise ValueError(
                f"{self.names[ordinal]}: expected [frames, {H * W // P} tokens{share}, C], got {tuple(x.shape)}; "
                "the adapter's frame size does not match this block's input"
            )
        ratio, layout = self.effective_ratio(ordinal, phase), self.layouts[ordinal]
        if P == 1:
            return pruned_self_attention(
                attn, x, hw, ratio, layout, self.bands, self.cfg.backend,
                on_scores=self._scores_hook(ordinal, hw, layout, self.bands, 1), method=self.cfg.method,
            )
        if self.cfg.method == "tome":
            raise ValueError("prune.method='tome' (the token-merging baseline) runs without sequence parallelism; "
                             "set parallel.sp_size=1")
        # SP: this rank holds rows [rank*H/P, (rank+1)*H/P), i.e. bands/P whole bands. Selection and
        # reconstruction run on them alone; the m-stride pattern is shifted to stay in frame coordinates.
        rank, h = dist.get_rank(self.sp_group), H // P
        local = replace(layout, ordinal=layout.ordinal - rank * h)
        budgets = band_budgets(hw, ratio, layout.stride, layout.ordinal, self.bands)
        per_rank = self.bands // P
        counts = [h * W - sum(budgets[j * per_rank:(j + 1) * per_rank]) for j in range(P)]
        group, backend = self.sp_group, self.cfg.backend
        return pruned_self_attention(
            attn, x, (h, W), ratio, local, per_rank, backend,
            attend=lambda a, t: sp_self_attention(a, t, group, counts, backend),
            on_scores=self._scores_hook(ordinal, (h, W), local, per_rank, P), method=self.cfg.method,
        )

    # ------------------------------------------------------------------ plans
    def layout(self) -> dict:
        """The settings a plan fixes (:data:`coredit_video.plan.LAYOUT_KEYS`), as this controller runs them."""
        return {"grids": list(self.cfg.grid_specs), "stride": self.cfg.stride, "bands": self.bands,
                "late_factor": self.cfg.late_factor, "late_steps": self.cfg.late_steps}

    def plan(self) -> dict:
        lay = self.layout()
        return {
            "version": PLAN_VERSION,
            "blocks": list(self.names),
            "ratios": self.ratios,
            "mean_ratio": self.mean_ratio,
            "max_ratio": self.cfg.max_ratio,
            "late_factor": lay["late_factor"],
            "late_steps": lay["late_steps"],
            "grids": grids_json(lay["grids"]),
            "stride": lay["stride"],
            "bands": lay["bands"],
        }

    def save_plan(self, path: str) -> None:
        write_plan(path, self.plan())

    def load_plan(self, path_or_plan: Union[str, dict]) -> None:
        """Set the ratios of a plan whose layout is this controller's; a plan made with another layout raises,
        naming each setting (``cv.apply(model, {"plan": path})`` applies a plan with its layout)."""
        self._apply_plan(read_plan(path_or_plan))

    def _apply_plan(self, plan: Plan) -> None:
        if plan.blocks is not None and plan.blocks != self.names:
            raise ValueError(
                f"{plan.source} lists {len(plan.blocks)} blocks that do not match this model's {len(self)} prunable "
                "blocks in order; was it saved for another model or another block selection?"
            )
        bad = plan.conflicts(self.layout())
        if bad:
            raise ValueError(
                f"{plan.source} was made with another layout than this controller runs ({'; '.join(bad)}); apply it "
                "with cv.apply(model, {'plan': path}) so the model takes the plan's layout"
            )
        self.set_ratios(plan.ratios)
