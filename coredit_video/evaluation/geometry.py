"""Undo (and redo) the generation crop, so perception sees frames laid out like nuScenes.

Forward (how a generation-size frame relates to the 900x1600 camera image, MagicDrive-V2 data pipeline)::

    900x1600 --drop the top 52 rows--> 848x1600 --resize--> generation size (848x1600, 424x800, ...)

Inverse (:func:`undo_generation_crop`, MagicDrive-V2 ``Resize(BICUBIC)`` + ``Pad([0, 52, 0, 0])``)::

    generation size --bicubic resize to width 1600--> 848x1600 --pad 52 rows at the top--> 900x1600

With ``pad_side="top"`` rows ``[0, P)`` of the result are padding (value ``pad_value``) and rows ``[P, 900)`` are
content, where ``P = 900 - round(H_gen * 1600 / W_gen)`` (:meth:`EvalProtocol.padding_rows`): 52 rows for 848x1600
and 424x800 videos, 4 rows for 224x400 ones, 0 for 900x1600 ones (already undone: returned unchanged).

Resizing is ``torch.nn.functional.interpolate`` with ``antialias=True``, which for ``bicubic`` is PIL's filter
(a = -0.5), so it matches what W-CODA's PIL / torchvision code does up to rounding.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .protocol import EvalProtocol, w_coda


def _to_tensor(frames) -> Tuple[torch.Tensor, bool, bool]:
    """uint8/float ``[T, H, W, 3]`` or ``[H, W, 3]`` -> float ``[T, 3, H, W]``; remembers numpy-ness / 3-D."""
    was_numpy = isinstance(frames, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(frames)) if was_numpy else frames
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    single = t.ndim == 3
    if single:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [T, H, W, C] (C = 1 or 3), got {tuple(t.shape)}")
    return t, was_numpy, single


def _from_tensor(t: torch.Tensor, dtype, was_numpy: bool, single: bool):
    if dtype == torch.uint8:
        t = t.round().clamp_(0, 255).to(torch.uint8)
    else:
        t = t.to(dtype)
    t = t.permute(0, 2, 3, 1).contiguous()
    if single:
        t = t[0]
    return t.numpy() if was_numpy else t


def resize_frames(frames, size_hw: Tuple[int, int], mode: str = "bicubic"):
    """Resize ``[T, H, W, C]`` (numpy or torch, uint8 or float) to ``size_hw``; same type and dtype back."""
    t, was_numpy, single = _to_tensor(frames)
    dtype = t.dtype
    H, W = int(size_hw[0]), int(size_hw[1])
    if tuple(t.shape[1:3]) == (H, W):
        return frames
    x = t.permute(0, 3, 1, 2).to(torch.float32)
    if mode == "nearest":
        y = F.interpolate(x, size=(H, W), mode="nearest")
    else:
        y = F.interpolate(x, size=(H, W), mode=mode, align_corners=False, antialias=True)
    return _from_tensor(y, dtype, was_numpy, single)


def _frame_hw(frames) -> Tuple[int, int]:
    return (int(frames.shape[-3]), int(frames.shape[-2]))


def undo_generation_crop(frames, protocol: Optional[EvalProtocol] = None):
    """Generation-size frames ``[T, H, W, 3]`` -> ``protocol.target_hw`` frames, padding where the crop was.

    ``fit_width``: resize to the target width keeping the aspect, then pad ``pad_side`` with ``pad_value`` up to the
    target height. ``stretch``: resize straight to ``target_hw`` (W-CODA's ``decode_video.py``). Frames already at
    ``target_hw`` come back unchanged. Numpy in, numpy out; torch in, torch out; the dtype is kept.
    """
    p = protocol or w_coda()
    H, W = _frame_hw(frames)
    TH, TW = p.target_hw
    if (H, W) == (TH, TW):
        return frames
    if p.resize_mode == "stretch":
        return resize_frames(frames, (TH, TW), p.resample)
    ch = p.content_height((H, W))
    if ch > TH:
        raise ValueError(f"a {H}x{W} frame resized to width {TW} is {ch} rows high, more than the target {TH}; "
                         f"use resize_mode='stretch' or a different target_hw")
    resized = resize_frames(frames, (ch, TW), p.resample)
    start, stop = p.padding_rows((H, W))
    if stop <= start:
        return resized
    t, was_numpy, single = _to_tensor(resized)
    pad_shape = (t.shape[0], stop - start, TW, t.shape[-1])
    pad = torch.full(pad_shape, p.pad_value, dtype=t.dtype)
    out = torch.cat([pad, t], dim=1) if p.pad_side == "top" else torch.cat([t, pad], dim=1)
    if single:
        out = out[0]
    return out.numpy() if was_numpy else out


def apply_generation_crop(frames, protocol: Optional[EvalProtocol] = None,
                          generation_hw: Optional[Tuple[int, int]] = None):
    """The forward of :func:`undo_generation_crop`: ``target_hw`` frames -> ``generation_hw`` frames.

    ``fit_width``: drop the padding rows (the top ones for ``pad_side="top"``), then resize the content to
    ``generation_hw``. ``stretch``: resize straight to ``generation_hw``. ``generation_hw`` defaults to the
    protocol's.
    """
    p = protocol or w_coda()
    hw = tuple(generation_hw) if generation_hw is not None else p.generation_hw
    if hw is None:
        raise ValueError("apply_generation_crop needs generation_hw (argument or protocol.generation_hw)")
    H, W = _frame_hw(frames)
    if (H, W) != tuple(p.target_hw):
        raise ValueError(f"expected frames of target_hw {p.target_hw}, got {H}x{W}")
    if p.resize_mode == "stretch":
        return resize_frames(frames, hw, p.resample)
    start, stop = p.padding_rows(hw)
    if stop > start:
        keep = slice(stop, H) if p.pad_side == "top" else slice(0, start)
        frames = frames[..., keep, :, :]
    return resize_frames(frames, hw, p.resample)


def content_slice(frame_hw: Tuple[int, int], protocol: Optional[EvalProtocol] = None,
                  generation_hw: Optional[Tuple[int, int]] = None) -> slice:
    """Rows of real content in a frame of ``frame_hw``: the padding is left out only for ``target_hw`` frames
    (a generation-size frame is all content)."""
    p = protocol or w_coda()
    if tuple(frame_hw) != tuple(p.target_hw):
        return slice(0, int(frame_hw[0]))
    start, stop = p.padding_rows(generation_hw)
    if stop <= start:
        return slice(0, int(frame_hw[0]))
    return slice(stop, int(frame_hw[0])) if p.pad_side == "top" else slice(0, start)
