"""The cached index tables of the ops: calling an ``lru_cache``'d builder (also under ``torch.compile``) and
keeping one copy of each table per device."""
from __future__ import annotations

import torch


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the caller."""
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False


def cached(fn, *args):
    """Call an ``lru_cache``'d builder. Under ``torch.compile`` its body is traced directly (dynamo ignores
    the cache anyway; this says so instead of warning): the tables become constants of the graph."""
    return fn.__wrapped__(*args) if is_compiling() else fn(*args)


_DEVICE_CACHE: dict = {}


def on_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cached copy of a (cached, immutable) index tensor on ``device``."""
    if t.device == device:
        return t
    if is_compiling():  # traced: the copy becomes part of the graph (a constant)
        return t.to(device)
    key = (id(t), str(device))
    hit = _DEVICE_CACHE.get(key)
    if hit is None or hit[0] is not t:
        hit = (t, t.to(device))
        _DEVICE_CACHE[key] = hit
    return hit[1]
