"""The dispatch of the two CoReDiT ops the methods call, scoring and reconstruction: the fused Triton kernels
(:mod:`.triton_ops`) when :func:`use_triton` says so, else the pure-torch ops of :mod:`coredit_video.ops`, which
stay the reference (CPU, no triton, ``torch.compile`` tracing, autograd needing gradients, float64). ``ops``
itself never imports the kernels. ``triton`` is an optional import.

Mode (``COREDIT_KERNELS`` environment variable, or :func:`set_mode`):

- ``"auto"`` (default): Triton for CUDA tensors of float16 / bfloat16 / float32 when ``triton`` imports,
  no gradient is needed and ``torch.compile`` is not tracing (inductor fuses the torch path itself).
- ``"torch"``: never Triton.
- ``"triton"``: Triton wherever it can run at all, CPU tensors included when ``TRITON_INTERPRET=1``
  (the Triton interpreter: slow, used by the parity tests to check the kernels without a GPU).

The kernels are forward-only: a call that autograd must differentiate always runs the torch path.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .. import ops
from ..ops.partition import is_compiling

MODES = ("auto", "torch", "triton")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

try:  # optional
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install
    HAS_TRITON = False

_mode: str = os.environ.get("COREDIT_KERNELS", "auto").strip().lower() or "auto"
if _mode not in MODES:
    raise ValueError(f"COREDIT_KERNELS must be one of {MODES}, got {_mode!r}")


def interpreting() -> bool:
    """Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def get_mode() -> str:
    return _mode


def set_mode(mode: str) -> str:
    """Set the kernel mode (see the module doc); returns the previous one."""
    global _mode
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got {mode!r}")
    if mode == "triton" and not HAS_TRITON:
        raise RuntimeError("kernel mode 'triton' needs the optional package triton (pip install triton)")
    prev, _mode = _mode, mode
    return prev


def available(device: Optional[torch.device] = None) -> bool:
    """Whether the Triton kernels can run on ``device`` (CUDA; CPU only under the interpreter)."""
    if not HAS_TRITON:
        return False
    if device is None:
        return torch.cuda.is_available() or interpreting()
    return torch.device(device).type == "cuda" or (interpreting() and torch.device(device).type == "cpu")


def use_triton(*tensors: torch.Tensor) -> bool:
    """Dispatch rule of the ops: take the fused kernels for these input tensors?"""
    if _mode == "torch" or not HAS_TRITON or is_compiling():
        return False
    first = tensors[0]
    if first.dtype not in _DTYPES or not available(first.device):
        return False
    if _mode == "auto" and first.device.type != "cuda":
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device == first.device for t in tensors)


def spatial_coherence(x: torch.Tensor, hw, grid, bands: int = 1) -> torch.Tensor:
    """``x [F, N, C]`` -> ``sc [F, N]`` float32: the fused Triton kernel when :func:`use_triton` says so, else the
    torch op (same contract: :func:`coredit_video.ops.spatial_coherence`)."""
    if x.dim() == 3 and x.is_floating_point() and use_triton(x):
        from .triton_ops import spatial_coherence_triton

        return spatial_coherence_triton(x, hw, grid, bands)
    return ops.spatial_coherence(x, hw, grid, bands)


def reconstruct(y_keep: torch.Tensor, keep_idx: torch.Tensor, skip_idx: torch.Tensor, sc: torch.Tensor, hw, grid,
                subgrid, bands: int = 1) -> torch.Tensor:
    """``y_keep [F, N-K, C]`` -> ``[F, N, C]``: the fused Triton kernels when :func:`use_triton` says so, else the
    torch op (same contract: :func:`coredit_video.ops.reconstruct`)."""
    if skip_idx.dim() == 2 and skip_idx.shape[1] and keep_idx.shape[1] and use_triton(y_keep, sc):
        from .triton_ops import reconstruct_triton

        return reconstruct_triton(y_keep, keep_idx, skip_idx, sc, hw, grid, subgrid, bands)
    return ops.reconstruct(y_keep, keep_idx, skip_idx, sc, hw, grid, subgrid, bands)


__all__ = ["HAS_TRITON", "MODES", "available", "get_mode", "interpreting", "reconstruct", "set_mode",
           "spatial_coherence", "use_triton"]
