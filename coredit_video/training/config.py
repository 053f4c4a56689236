"""The training configuration: an mmengine ``Config`` validated once into dataclasses.

Every section is a plain dict in the config file; unknown keys and bad values fail at start with
the full key name (``train.ckpt_every``) and what to change.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..config import PruneConfig
from ..methods import REGISTRY
from ..rflow import RFlowConfig
from ..schedule import ScheduleConfig
from .losses import DistillConfig


@dataclass(frozen=True)
class ParallelConfig:
    sp_size: int = 1
    backend: Optional[str] = None  # nccl | gloo | None (auto)

    def __post_init__(self):
        if not isinstance(self.sp_size, int) or self.sp_size < 1:
            raise ValueError(f"sp_size must be an int >= 1, got {self.sp_size!r}")
        if self.backend not in (None, "nccl", "gloo"):
            raise ValueError(f"backend must be nccl, gloo or None, got {self.backend!r}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 over this many optimizer steps
    decay_steps: int = 0  # linear learning-rate decay to 0 over the last this many steps of train.steps

    def __post_init__(self):
        for name in ("warmup_steps", "decay_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0..3, got {self.zero_stage!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 100
    micro_batch: int = 1
    grad_accum: int = 1
    ckpt_every: int = 50
    keep_last: int = 3
    log_every: int = 1
    ema_decay: float = 0.99
    grad_checkpoint: bool = False
    num_workers: int = 0
    cond_drop: float = 0.1  # probability of dropping a sample's conditions (classifier-free guidance)
    init_from: Optional[str] = None  # weights to start from (a shipped host file or a checkpoint dir); not a resume

    def __post_init__(self):
        for k in ("steps", "micro_batch", "grad_accum", "ckpt_every", "log_every"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be an int >= 1, got {v!r}")
        if not 0 <= self.cond_drop < 1:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


@dataclass(frozen=True)
class TrainConfig:
    work_dir: str
    model: Dict[str, Any]
    data: Dict[str, Any]
    seed: int = 0
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    rflow: RFlowConfig = field(default_factory=RFlowConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)


_SECTIONS = {"parallel": ParallelConfig, "schedule": ScheduleConfig, "rflow": RFlowConfig,
             "distill": DistillConfig, "optim": OptimConfig, "train": LoopConfig}


def _section(name: str, cls, data: Any):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {name!r} must be a dict, got {type(data).__name__}")
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid - set(getattr(cls, "MOVED_KEYS", ())))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{name}.{k}' for k in unknown]}; valid keys in {name!r}: "
                         f"{sorted(valid)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    try:
        return cls.build(kwargs) if hasattr(cls, "build") else cls(**kwargs)
    except (TypeError, ValueError) as e:
        key = next((k for k in data if k in str(e)), None)
        where = f"{name}.{key}" if key else name
        raise ValueError(f"bad value in config {where!r}: {e}") from None


def build_train_config(cfg: Any) -> TrainConfig:
    """From an mmengine ``Config`` (or a dict); validates every section."""
    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in set(data) - top if not k.startswith("_"))
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {unknown}; valid: {sorted(top)}")
    for req in ("work_dir", "model", "data"):
        if req not in data:
            raise ValueError(f"config key {req!r} is required")
    out = {"work_dir": str(data["work_dir"]), "model": dict(data["model"]), "data": dict(data["data"]),
           "seed": int(data.get("seed", 0))}
    for name, cls in _SECTIONS.items():
        out[name] = _section(name, cls, data.get(name))
    prune = data.get("prune") or {}
    try:
        out["prune"] = PruneConfig.build(prune)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad value in config 'prune': {e}") from None
    sched, pr = out["schedule"], out["prune"]
    sched.check_cap(pr.max_ratio)
    if not REGISTRY[pr.method].trainable:
        able = [m for m, c in REGISTRY.items() if c.trainable]
        raise ValueError(f"prune.method={pr.method!r} passes no gradients to the host's weights, so it cannot be "
                         f"fine-tuned; train with one of {able} (and sample with {pr.method!r} afterwards)")
    if out["optim"].decay_steps > out["train"].steps:
        raise ValueError(f"optim.decay_steps={out['optim'].decay_steps} exceeds train.steps={out['train'].steps}")
    if out["rflow"].num_sampling_steps < pr.late_steps:
        raise ValueError(f"rflow.num_sampling_steps={out['rflow'].num_sampling_steps} is below "
                         f"prune.late_steps={pr.late_steps}")
    return TrainConfig(**out)
