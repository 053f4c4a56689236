"""A DeepSpeed engine (ZeRO stage 2 by default) over the DP x SP process mesh.

DeepSpeed sees every rank as data-parallel and averages gradients over all of them. That is right
here because the host scales gradients like MagicDrive-V2 does under SP (``split_seq`` /
``gather_seq``): each SP rank's gradient is ``P`` times its share, so the world average equals the
average over data-parallel groups of the per-sample gradient. Ranks of one SP group must be fed the
same samples (and the same noise).
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Dict, Optional

import torch.nn as nn

PRECISIONS = ("fp32", "bf16", "fp16")


def deepspeed_config(micro_batch: int, lr: float, grad_accum: int = 1, zero_stage: int = 2,
                     precision: str = "fp32", betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                     grad_clip: Optional[float] = None, warmup_steps: int = 0,
                     extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The DeepSpeed JSON config for AdamW under ZeRO ``zero_stage``; ``extra`` is merged last."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0..3, got {zero_stage!r}")
    cfg: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": int(grad_accum),
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "betas": list(betas), "eps": eps,
                                                  "weight_decay": weight_decay, "torch_adam": True}},
        "zero_optimization": {"stage": zero_stage, "contiguous_gradients": True, "overlap_comm": False,
                              "reduce_scatter": True},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    # DeepSpeed clips at 1.0 unless told otherwise; make "no clipping" explicit
    cfg["gradient_clipping"] = float(grad_clip or 0.0)
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    if warmup_steps > 0:
        cfg["scheduler"] = {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": lr,
                                                           "warmup_num_steps": int(warmup_steps),
                                                           "warmup_type": "linear"}}
    for k, v in (extra or {}).items():
        cfg[k] = v
    return cfg


def decayed_lr(lr: float, step: int, total_steps: int, decay_steps: int) -> Optional[float]:
    """The learning rate of optimizer step ``step`` (0-based) in the linear decay to 0 over the last
    ``decay_steps`` of ``total_steps``; ``None`` before the decay starts (the engine's own schedule holds).
    The last step trains at ``lr / decay_steps``, not at 0."""
    start = total_steps - decay_steps
    if decay_steps <= 0 or step < start:
        return None
    return lr * (total_steps - step) / decay_steps


def set_lr(engine, lr: float) -> None:
    """Set the learning rate of every parameter group for the next ``engine.step()``. DeepSpeed's warm-up
    scheduler rewrites it after each optimizer step, so call this before each step of a decay."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def _quiet_cpu_deepspeed() -> None:
    """Without CUDA: name DeepSpeed's accelerator (no "unable to detect" warning) and skip the shared-memory
    all-reduce op that its CPU comm backend JIT-compiles on start (~50 s, silent, needs a C++ compiler):
    training reduces through torch.distributed (gloo) and never calls it. Idempotent."""
    import torch

    if torch.cuda.is_available():
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:  # (`import deepspeed.comm.torch as m` would bind torch itself: the package re-exports it)
        ds_torch = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return
    if hasattr(ds_torch, "build_shm_op"):
        ds_torch.build_shm_op = lambda: None


def build_engine(model: nn.Module, ds_config: Dict[str, Any], parameters=None):
    """``deepspeed.initialize`` on an already initialised process group (see ``init_parallel``).

    Returns the engine: ``loss = engine(...)``-style use is optional; call ``engine.backward(loss)``
    and ``engine.step()``; ``engine.module`` is the model.
    """
    _quiet_cpu_deepspeed()
    try:
        import deepspeed
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the training engine needs DeepSpeed: pip install 'coredit-video[deepspeed]' "
            "(keep your torch: add -c constraints pinning it)"
        ) from e
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("call coredit_video.parallel.init_parallel() before building the engine")
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config,
                                           dist_init_required=False)
    return engine
