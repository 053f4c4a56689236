"""The handle ``apply`` returns: it controls. Prunable blocks in plan order and their ratios, the denoising phase,
coherence statistics for the schedule, and pruning plans (JSON). What one forward prunes with lives in
:mod:`.forward_context` with the host's hooks, and what one call of a patched attention runs in
:mod:`.patched_attention`."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from .config import PruneConfig
from .forward_context import ForwardContext, ForwardTracker, HookBinding
from .methods import BlockLayout, CallGeometry, build_method
from .ops import redundancy_increment
from .ops.selection import check_ratio
from .plan import PLAN_VERSION, Plan, grids_json, read_plan, write_plan
from .step_cache import StepCache

PHASES = ("main", "late", "dense")  # "dense": the first prune.dense_steps steps, ratio 0


def step_phase(step_index: int, num_steps: int, dense_steps: int, late_steps: int) -> str:
    """The phase of sampling step ``step_index`` of ``num_steps`` (0-based): ``"dense"`` in the first ``dense_steps``,
    ``"late"`` in the last ``late_steps``, else ``"main"``."""
    if not 0 <= step_index < num_steps:
        raise ValueError(f"step_index {step_index} outside [0, {num_steps})")
    if step_index < dense_steps:
        return "dense"
    return "late" if step_index >= num_steps - late_steps else "main"


def phase_ratio(ratio: float, phase: str, late_factor: float) -> float:
    """A block's ratio ``r`` in ``phase``: ``r`` in the main phase, ``c * r`` (``late_factor``) in the late steps, 0 in
    a dense step."""
    if phase == "dense":
        return 0.0
    return ratio * late_factor if phase == "late" else ratio


class PruningController:
    def __init__(self, model: nn.Module, cfg: PruneConfig, adapter, blocks: List[Tuple[str, nn.Module]],
                 bands: int):
        self.model = model
        self.cfg = cfg
        self.adapter = adapter
        self.bands = bands
        self.method = build_method(cfg.method, **cfg.method_options())
        self.names = [name for name, _ in blocks]
        self.modules = [mod for _, mod in blocks]
        # the spatial blocks holding them (patched in block scope)
        self.blocks = [model.get_submodule(name.rsplit(".", 1)[0]) for name in self.names]
        self.layouts = [
            BlockLayout(i, *cfg.grid_specs[i % len(cfg.grid_specs)], stride=cfg.stride) for i in range(len(blocks))
        ]
        self._ratios = [0.0] * len(blocks)
        self.phase = "main"
        self.step_cache: Optional[StepCache] = StepCache() if cfg.step_cache else None
        self.enabled = True
        self.sp_group = None  # set by apply() from the adapter
        self.hooks = HookBinding()
        self.forwards = ForwardTracker(bands)
        self.cross_view_names: List[str] = []  # patched cross-view attentions (set by apply())
        self.cross_view_modules: List[nn.Module] = []
        self.cross_view_ordinals: set = set()
        # block scope, cache_context "all": each prunable block's cross-view attention (set by apply())
        self.full_context_cross_views: Dict[int, nn.Module] = {}
        self._stats_delta: Optional[float] = None
        self._stats: Dict[int, List[float]] = {}
        if cfg.resolved_plan is not None:
            self._apply_plan(cfg.resolved_plan)
        else:
            self.set_ratios(cfg.ratios)

    @property
    def needs_views(self) -> bool:
        """The adapter must describe the views of each forward (``ForwardContext.views``): cross-view pruning, or
        a step cache whose cross-view attention sees every token."""
        return bool(self.cross_view_modules or self.full_context_cross_views)

    def __getstate__(self) -> dict:
        return dict(self.__dict__, sp_group=None)  # a process group belongs to a process: rebound on first use

    @property
    def sp_group_size(self) -> int:
        """Ranks in the host's sequence-parallel group (1 without one)."""
        return dist.get_world_size(self.sp_group) if self.sp_group is not None else 1

    @property
    def handles(self) -> list:
        return self.hooks.handles

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
        """``r_l`` in the main phase, ``c * r_l`` in the last ``late_steps`` steps; 0 when disabled or in the first
        ``dense_steps`` steps."""
        if not self.enabled:
            return 0.0
        return phase_ratio(self._ratios[ordinal], phase or self.phase, self.cfg.late_factor)

    # ------------------------------------------------------------------ phase and frame
    def set_phase(self, phase: str) -> None:
        """Set the phase by hand (training, or after a sampling loop): the step cache, if any, is dropped."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase
        if self.step_cache is not None:
            self.step_cache.end_loop()

    def set_step(self, step_index: int, num_steps: int) -> str:
        """Sampler hook: step ``i`` of ``num_steps`` (0-based); the first ``dense_steps`` are 'dense', the last
        ``late_steps`` 'late'. Step 0 starts a fresh step cache."""
        self.phase = step_phase(step_index, num_steps, self.cfg.dense_steps, self.cfg.late_steps)
        if self.step_cache is not None:
            self.step_cache.start_step(step_index, num_steps)
        return self.phase

    @property
    def context(self) -> Optional[ForwardContext]:
        """The context of the forward running now (:mod:`.forward_context`)."""
        return self.forwards.context

    @property
    def hw(self) -> Optional[Tuple[int, int]]:
        """The padded token grid of the current forward's frames (``None`` before one)."""
        return self.context.hw if self.context is not None else None

    def begin_forward(self, hw: Optional[Tuple[int, int]] = None, width: Optional[int] = None) -> ForwardContext:
        """Adapter hook at a model forward: opens its context with the current phase (see
        :meth:`ForwardTracker.begin_forward`)."""
        ctx = self.forwards.begin_forward(self.phase, hw, width)
        if self.step_cache is not None:
            ctx.step, ctx.slot = self.step_cache.step, self.step_cache.begin_forward()
        return ctx

    def set_frame(self, hw: Tuple[int, int]) -> ForwardContext:
        """Open a context for frames of ``(H, W)`` tokens (to call the patched attentions directly)."""
        return self.begin_forward(hw=hw)

    # ------------------------------------------------------------------ statistics for the schedule
    def collect_stats(self, delta_ratio: Optional[float]) -> None:
        """Start (``delta_ratio`` > 0) or stop (``None``) recording eq. 4's ``dR_l`` each forward."""
        self._stats_delta = delta_ratio
        self._stats = {}

    @property
    def collecting_stats(self) -> bool:
        return self._stats_delta is not None

    def pop_stats(self) -> List[Optional[float]]:
        """Mean recorded ``dR_l`` per block since the last pop (``None`` where nothing was seen)."""
        out = [(sum(v) / len(v)) if (v := self._stats.get(i)) else None for i in range(len(self))]
        self._stats = {}
        return out

    def record_scores(self, ordinal: int, sc: torch.Tensor, geo: CallGeometry, sp_size: int) -> None:
        """File eq. 4's ``dR_l`` of block ``ordinal`` from this rank's detached scores ``sc [F, N]``. Each SP rank
        sees ``bands/P`` of the bands: scaled by ``P``, the mean over ranks is the frame's value. A checkpoint
        recompute records the same value again, so the mean holds."""
        if self._stats_delta is None:
            return
        r, b = self._ratios[ordinal], geo.layout
        dr = redundancy_increment(sc, geo.hw, r, self._stats_delta, b.stride, b.ordinal, geo.bands) * sp_size
        self._stats.setdefault(ordinal, []).append(float(dr))

    # ------------------------------------------------------------------ plans
    def plan_settings(self) -> dict:
        """The settings a plan fixes (:data:`coredit_video.plan.LAYOUT_KEYS`), as this controller runs them."""
        return {"grids": list(self.cfg.grid_specs), "stride": self.cfg.stride, "bands": self.bands,
                "late_factor": self.cfg.late_factor, "late_steps": self.cfg.late_steps}

    def plan(self) -> dict:
        lay = self.plan_settings()
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
        bad = plan.conflicts(self.plan_settings())
        if bad:
            raise ValueError(
                f"{plan.source} was made with another layout than this controller runs ({'; '.join(bad)}); apply it "
                "with cv.apply(model, {'plan': path}) so the model takes the plan's layout"
            )
        self.set_ratios(plan.ratios)
