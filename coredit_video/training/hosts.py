"""What the trainer needs from a host model, behind one small interface.

A :class:`HostBundle` holds the model, ``forward(model, x_t, t, batch) -> velocity``, the data it
trains on, how latents are made from a batch, the pixel size / frame count each sample has (for
the timestep transform) and a FLOPs spec. ``build_host_bundle(cfg)`` picks the builder named by
``model.type``: a name in :data:`HOST_BUILDERS` or a ``"package.module:function"`` path, imported when first
used, so training never imports a host it does not run. The embedded default is ``"builtin"``
(:mod:`coredit_video.embedded.host.bundle`, the built-in host on the synthetic world).
"""
from __future__ import annotations

import importlib
from typing import Dict

from ..host_bundle import HostBundle

__all__ = ["HOST_BUILDERS", "HostBundle", "build_host_bundle", "held_out_data"]


def held_out_data(data_cfg: Dict, num_samples: int, seed_offset: int) -> Dict:
    """The data config of held-out samples for generation and evaluation: the same world, ``seed + seed_offset``."""
    return dict(data_cfg, num_samples=int(num_samples), seed=int(data_cfg.get("seed", 0)) + int(seed_offset))


HOST_BUILDERS: Dict[str, str] = {"builtin": "coredit_video.embedded.host.bundle:build_builtin"}


def build_host_bundle(model_cfg: Dict, data_cfg: Dict, seed: int) -> HostBundle:
    """``HOST_BUILDERS[model.type]`` (or ``model.type`` itself, ``"package.module:function"``) called with
    ``(model_cfg, data_cfg, seed)``."""
    kind = model_cfg.get("type", "builtin")
    path = HOST_BUILDERS.get(kind, kind)
    if ":" not in path:
        raise ValueError(f"model.type={kind!r} is not known; choose one of {sorted(HOST_BUILDERS)} or give "
                         "'package.module:function'")
    module, fn = path.split(":", 1)
    try:
        builder = getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.type={kind!r}: cannot import {path} ({e})") from e
    return builder(model_cfg, data_cfg, seed)
