"""Progressive, block-adaptive pruning schedule (paper sec. 3.3.2; spec "Progressive schedule").

Each training step the controller records eq. 4's redundancy increment ``dR_l`` of every prunable
block. Every ``interval`` steps the schedule averages them over the steps and over all ranks (one
all-reduce of ``[sums, counts]``), picks the block with the largest average among those still
below the cap ``prune.max_ratio`` (ties: lowest ordinal) and raises its ratio by ``delta_ratio``, until the mean
ratio reaches ``target_ratio`` or every block is at the cap. Ratios, not token counts, so one
schedule serves every resolution bucket.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ScheduleConfig:
    """Schedule settings; the per-block cap is ``prune.max_ratio`` (``PruneConfig.max_ratio``), passed to
    :class:`ProgressiveSchedule` by whoever builds it from the controller."""

    MOVED_KEYS: ClassVar[Dict[str, str]] = {"max_ratio": "prune.max_ratio"}  # keys that live elsewhere now

    delta_ratio: float = 0.02
    interval: int = 15
    target_ratio: float = 0.26
    start_step: int = 0  # no decision before this many steps (warm-up with the dense model)

    def __post_init__(self):
        if not 0 < self.delta_ratio < 1:
            raise ValueError(f"schedule.delta_ratio must be in (0, 1), got {self.delta_ratio}")
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"schedule.interval must be an int >= 1, got {self.interval!r}")
        if not 0 <= self.target_ratio < 1:
            raise ValueError(f"schedule.target_ratio must be in [0, 1), got {self.target_ratio}")
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ValueError(f"schedule.start_step must be an int >= 0, got {self.start_step!r}")

    @classmethod
    def build(cls, data: Optional[dict] = None) -> ScheduleConfig:
        """From a config section dict; a key that moved (``max_ratio``) is named with its new place."""
        data = dict(data or {})
        for key, new in cls.MOVED_KEYS.items():
            if key in data:
                raise ValueError(f"schedule.{key} is gone: set the per-block cap once, as {new} (the schedule "
                                 f"follows the controller's cap)")
        return cls(**data)

    def check_cap(self, max_ratio: float) -> None:
        """``target_ratio`` and ``delta_ratio`` must fit under the cap ``prune.max_ratio``."""
        if self.target_ratio > max_ratio + 1e-12:
            raise ValueError(f"schedule.target_ratio={self.target_ratio} exceeds prune.max_ratio={max_ratio}; "
                             "lower it or raise prune.max_ratio")
        if self.delta_ratio > max_ratio + 1e-12:
            raise ValueError(f"schedule.delta_ratio={self.delta_ratio} exceeds prune.max_ratio={max_ratio}; "
                             "lower it or raise prune.max_ratio")


@dataclass
class Decision:
    step: int
    ordinal: int  # of the block among the prunable blocks
    name: str
    ratio: float
    mean_ratio: float
    redundancy: float


@dataclass
class ScheduleState:
    ratios: List[float]
    sums: List[float]
    counts: List[int]
    step: int = 0
    done: bool = False
    last_pruned: Optional[int] = None
    history: List[dict] = field(default_factory=list)  # one entry per decision (for logs and the plot)


def _snap(r: float, delta: float) -> float:
    """Ratios live on the ``delta`` lattice; snapping keeps repeated additions exact across ranks."""
    return round(round(r / delta) * delta, 12)


class ProgressiveSchedule:
    """Drives a :class:`~coredit_video.controller.PruningController`'s ratios during fine-tuning, up to the
    controller's cap ``max_ratio`` (``controller.cfg.max_ratio``)."""

    def __init__(self, cfg: ScheduleConfig, names: Sequence[str], ratios: Optional[Sequence[float]] = None, *,
                 max_ratio: float):
        cfg.check_cap(max_ratio)
        self.cfg = cfg
        self.max_ratio = float(max_ratio)
        self.names = list(names)
        n = len(self.names)
        start = [0.0] * n if ratios is None else [float(r) for r in ratios]
        if len(start) != n:
            raise ValueError(f"got {len(start)} initial ratios for {n} blocks")
        self.state = ScheduleState(ratios=start, sums=[0.0] * n, counts=[0] * n)
        self.state.done = self._finished()

    # ------------------------------------------------------------------ queries
    @property
    def ratios(self) -> List[float]:
        return list(self.state.ratios)

    @property
    def mean_ratio(self) -> float:
        return sum(self.state.ratios) / max(1, len(self.state.ratios))

    def _finished(self) -> bool:
        cap = self.max_ratio
        return self.mean_ratio >= self.cfg.target_ratio - 1e-9 or all(r >= cap - 1e-9 for r in self.state.ratios)

    # ------------------------------------------------------------------ per step
    def observe(self, increments: Sequence[Optional[float]]) -> None:
        """Add one step's ``dR_l`` per block (``None``: the block did not run this step)."""
        if len(increments) != len(self.names):
            raise ValueError(f"got {len(increments)} increments for {len(self.names)} blocks")
        for l, v in enumerate(increments):
            if v is not None and math.isfinite(v):
                self.state.sums[l] += float(v)
                self.state.counts[l] += 1

    def step(self, all_reduce: Optional[Callable[[torch.Tensor], None]] = None) -> Optional[Decision]:
        """Advance one training step; every ``interval`` steps, decide. ``all_reduce`` sums a tensor over
        all ranks in place (default: ``torch.distributed.all_reduce`` when initialised)."""
        st = self.state
        st.step += 1
        if st.done or st.step < self.cfg.start_step or st.step % self.cfg.interval:
            return None
        n = len(self.names)
        packed = torch.tensor(st.sums + [float(c) for c in st.counts], dtype=torch.float64)
        if all_reduce is not None:
            all_reduce(packed)
        elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(packed)
        sums, counts = packed[:n], packed[n:]
        st.sums, st.counts = [0.0] * n, [0] * n
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, -math.inf))
        cap = self.max_ratio
        best, best_val = None, -math.inf
        for l in range(n):  # strict '>' keeps the lowest ordinal on ties
            if st.ratios[l] < cap - 1e-9 and mean[l].item() > best_val:
                best, best_val = l, mean[l].item()
        if best is None:
            st.done = self._finished()
            return None
        new = min(cap, _snap(st.ratios[best] + self.cfg.delta_ratio, self.cfg.delta_ratio))
        st.ratios[best] = new
        st.last_pruned = best
        st.done = self._finished()
        d = Decision(step=st.step, ordinal=best, name=self.names[best], ratio=new, mean_ratio=self.mean_ratio,
                     redundancy=best_val)
        st.history.append(dict(asdict(d), ratios=list(st.ratios)))
        return d

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        st = self.state
        return dict(config=asdict(self.cfg), names=list(self.names), ratios=list(st.ratios), sums=list(st.sums),
                    counts=list(st.counts), step=st.step, done=st.done, last_pruned=st.last_pruned,
                    history=[dict(h) for h in st.history])

    def load_state_dict(self, sd: dict) -> None:
        if list(sd["names"]) != self.names:
            raise ValueError("schedule state is for other blocks than this model's prunable blocks")
        self.state = ScheduleState(ratios=list(sd["ratios"]), sums=list(sd["sums"]), counts=list(sd["counts"]),
                                   step=int(sd["step"]), done=bool(sd["done"]), last_pruned=sd["last_pruned"],
                                   history=[dict(h) for h in sd["history"]])
