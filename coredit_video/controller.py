"""The handle ``apply`` returns: prunable blocks in plan order, their ratios, the denoising phase,
the per-forward context the adapters open, coherence statistics for the schedule, and pruning
plans (JSON)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from .attention import BlockLayout, Selection, ViewPairs, choose_tokens, pruned_self_attention
from .attention.cross_view import Attend, local_attend, pruned_cross_view_attention
from .attention.dense import attn_dropout
from .config import PruneConfig
from .ops import band_budgets, redundancy_increment
from .ops.selection import check_ratio
from .parallel.seq_attention import sp_attention, sp_self_attention
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


@dataclass(eq=False)
class ForwardContext:
    """What one model forward prunes with, shared by all its blocks and by a checkpoint recompute of them.

    ``phase``: the denoising phase when the forward began. ``hw``: the padded token grid ``(H, W)`` of a
    frame (``width`` alone until a host reveals the height at its first block). ``views``: where each
    cross-view row's frames sit (set by the adapter when cross-view pruning is on). ``budgets``: per-band
    skip counts per ``(block, ratio)``, computed once. ``retained``: the selection each block's
    self-attention made, held until that block's cross-view attention takes it.
    """

    phase: str
    hw: Optional[Tuple[int, int]] = None
    width: Optional[int] = None
    views: Optional[ViewPairs] = None
    budgets: Dict[Tuple[int, float], List[int]] = field(default_factory=dict)
    retained: Dict[int, Optional[Selection]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Call:
    """One block call's geometry on this rank: local frame, layout, bands, budgets, and per-rank retained counts."""

    ctx: ForwardContext
    ratio: float
    hw: Tuple[int, int]
    layout: BlockLayout
    bands: int
    budgets: List[int]
    counts: Optional[List[int]]  # retained tokens per frame on each SP rank (None without SP)

    @property
    def skipped(self) -> int:
        return sum(self.budgets)


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
        self.cross_view_names: List[str] = []  # patched cross-view attentions (set by apply())
        self.cross_view_modules: List[nn.Module] = []
        self.cross_view_ordinals: set = set()
        # the context of the forward running now, and every recent forward's, keyed by a tensor all its
        # blocks receive (a gradient-checkpoint recompute finds its forward's context again)
        self.context: Optional[ForwardContext] = None
        self._pending: Optional[ForwardContext] = None
        self._contexts: OrderedDict[int, ForwardContext] = OrderedDict()
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
        # hooks are closures and process groups belong to a process: both are rebound on first use. Forward
        # contexts belong to forwards of the original (keyed by its tensors' addresses): a copy starts with none.
        return dict(self.__dict__, _hook_fns=None, sp_group=None, context=None, _pending=None,
                    _contexts=OrderedDict())

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

    @property
    def hw(self) -> Optional[Tuple[int, int]]:
        """The padded token grid of the current forward's frames (``None`` before one)."""
        return self.context.hw if self.context is not None else None

    def begin_forward(self, hw: Optional[Tuple[int, int]] = None, width: Optional[int] = None) -> ForwardContext:
        """Adapter hook at a model forward: opens its context with the current phase. ``hw`` when the host
        knows its padded token grid now, else ``width`` and the first block tells the height
        (:meth:`set_frame_height`). The next :meth:`enter_block` adopts it."""
        ctx = ForwardContext(self.phase, self._check_hw(hw) if hw is not None else None, width)
        self._pending = self.context = ctx
        return ctx

    def set_frame(self, hw: Tuple[int, int]) -> ForwardContext:
        """Open a context for frames of ``(H, W)`` tokens (to call the patched attentions directly)."""
        return self.begin_forward(hw=hw)

    def _check_hw(self, hw) -> Tuple[int, int]:
        hw = (int(hw[0]), int(hw[1]))
        if hw[0] % self.bands:
            raise ValueError(
                f"the frame has {hw[0]} token rows, not a multiple of bands={self.bands}; pad H for "
                "the SP size (MagicDrive-V2: force_pad_h_for_sp_size / simulate_sp_size) or change bands"
            )
        return hw

    def enter_block(self, key: torch.Tensor) -> ForwardContext:
        """Adapter hook before each prunable block: binds the block to the forward it belongs to.

        ``key`` is a tensor every block of one forward receives and that lives until its backward (the
        timestep modulation). The first block after :meth:`begin_forward` files the new context under
        it (replacing a dead forward's whose freed storage came back); a gradient-checkpoint recompute
        of an older forward finds that forward's context again, so it selects exactly the tokens the
        original forward selected even if the phase has changed since.
        """
        ptr = key.data_ptr()
        if self._pending is not None:
            ctx, self._pending = self._pending, None
            self._contexts[ptr] = ctx
            self._contexts.move_to_end(ptr)
            while len(self._contexts) > 64:
                self._contexts.popitem(last=False)
        else:
            ctx = self._contexts.get(ptr)
            if ctx is None:
                raise RuntimeError("a prunable block ran outside its model's forward (no pruning context); call "
                                   "the model's forward (the adapter hooks it) or controller.set_frame((H, W))")
        self.context = ctx
        return ctx

    def set_frame_height(self, ctx: ForwardContext, H: int) -> Tuple[int, int]:
        """The first block of a forward tells its padded height; later blocks must agree."""
        hw = self._check_hw((H, ctx.width))
        if ctx.hw is None:
            ctx.hw = hw
        elif ctx.hw != hw:
            raise ValueError(f"blocks of one forward disagree on the frame size: {ctx.hw} vs {hw}")
        return hw

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

    # ------------------------------------------------------------------ the patched forwards
    def _call(self, ordinal: int, x: torch.Tensor, what: str) -> _Call:
        """Geometry of block ``ordinal`` for ``x [rows, tokens, C]`` in the current context (budgets computed
        once per forward). Under SP this rank holds rows ``[rank*H/P, (rank+1)*H/P)`` of every frame, i.e.
        ``bands/P`` whole bands: selection and reconstruction run on them alone, the m-stride pattern shifted
        to stay in frame coordinates."""
        if self._hook_fns is None:  # a copy whose host hooks have not run yet: take this process's SP group
            self._rebind()
        ctx = self.context
        if ctx is None or ctx.hw is None:
            raise RuntimeError(
                f"{self.names[ordinal]} ran before the host told its frame size; call the model's forward "
                "(the adapter hooks it) or controller.set_frame((H, W)) first"
            )
        (H, W), P = ctx.hw, sp_size_of(self.sp_group)
        if x.dim() != 3 or x.shape[1] * P != H * W:
            share = f" (this rank's 1/{P} share: {H // P} of {H} rows)" if P > 1 else ""
            raise ValueError(
                f"{self.names[ordinal]} {what}: expected [frames, {H * W // P} tokens{share}, C], got "
                f"{tuple(x.shape)}; the adapter's frame size does not match this block's input"
            )
        ratio, layout = self.effective_ratio(ordinal, ctx.phase), self.layouts[ordinal]
        budgets = ctx.budgets.get((ordinal, ratio))
        if budgets is None:
            budgets = ctx.budgets[(ordinal, ratio)] = band_budgets(ctx.hw, ratio, layout.stride, layout.ordinal,
                                                                   self.bands)
        if P == 1:
            return _Call(ctx, ratio, ctx.hw, layout, self.bands, budgets, None)
        rank, h, per_rank = dist.get_rank(self.sp_group), H // P, self.bands // P
        counts = [h * W - sum(budgets[j * per_rank:(j + 1) * per_rank]) for j in range(P)]
        local = replace(layout, ordinal=layout.ordinal - rank * h)
        return _Call(ctx, ratio, (h, W), local, per_rank, budgets[rank * per_rank:(rank + 1) * per_rank], counts)

    def run_block(self, ordinal: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pruned self-attention for block ``ordinal`` on ``x [frames, tokens, C]``."""
        call = self._call(ordinal, x, "self-attention")
        P = sp_size_of(self.sp_group)
        on_select = None
        if ordinal in self.cross_view_ordinals and self.cfg.cross_view_select == "self":
            def on_select(sel: Optional[Selection]) -> None:
                call.ctx.retained[ordinal] = sel
        attend = None
        if P > 1:
            if self.cfg.method == "tome":
                raise ValueError("prune.method='tome' (the token-merging baseline) runs without sequence "
                                 "parallelism; set parallel.sp_size=1")
            group, backend, counts = self.sp_group, self.cfg.backend, call.counts
            attend = lambda a, t: sp_self_attention(a, t, group, counts, backend)  # noqa: E731
        return pruned_self_attention(
            attn, x, call.hw, call.ratio, call.layout, call.bands, self.cfg.backend, attend=attend,
            on_scores=self._scores_hook(ordinal, call.hw, call.layout, call.bands, P), on_select=on_select,
            budgets=call.budgets, method=self.cfg.method,
        )

    def run_cross_view(self, ordinal: int, attn: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Cross-view attention of block ``ordinal``: ``x [rows, tokens, C]`` to ``cond [rows, J*tokens, C]``,
        pruned as ``cfg.cross_view`` says; the host's own forward when nothing is skipped."""
        call = self._call(ordinal, x, "cross-view attention")
        if call.skipped == 0:
            return type(attn).forward(attn, x, cond)
        ctx = call.ctx
        if ctx.views is None:
            raise RuntimeError(f"{self.cross_view_names[0]}: the adapter did not describe the views of this "
                               "forward (ForwardContext.views); cross-view pruning needs them")
        pairs = ctx.views
        if self.cfg.cross_view_select == "self":
            sel = ctx.retained.pop(ordinal, None)
            if sel is None:
                raise RuntimeError(f"{self.names[ordinal]}: cross-view attention ran before the block's "
                                   "self-attention chose its tokens (cross_view_select='self')")
        else:
            sel = choose_tokens(x.index_select(0, pairs.first), call.hw, call.ratio, call.layout, call.bands,
                                budgets=call.budgets)
        return pruned_cross_view_attention(attn, x, cond, pairs, sel, self.cfg.cross_view, call.hw, call.layout,
                                           call.bands, self._cross_view_attend(attn, call, pairs.kv.shape[1]))

    def _cross_view_attend(self, attn: nn.Module, call: _Call, J: int) -> Attend:
        if call.counts is None:
            return local_attend(attn, self.cfg.backend)
        group, backend, counts = self.sp_group, self.cfg.backend, call.counts
        kv_counts = [J * c for c in counts]

        def attend(q, k, v, q_pruned: bool):
            q_counts = counts if q_pruned else None
            return sp_attention(q, k, v, group, attn.scale, backend, attn_dropout(attn), q_counts, kv_counts,
                                tag="cross_view")

        return attend

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
