"""What the trainer, the samplers and the studies need from a host model: :class:`HostBundle`. A host's builder (e.g.
:mod:`coredit_video.embedded.host.bundle`) returns one; :func:`coredit_video.training.hosts.build_host_bundle` picks
the builder by name. Its own module, so that a builder never imports the training package that imports it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .flops import ModelSpec


@dataclass
class HostBundle:
    model: nn.Module
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor, Dict], torch.Tensor]
    dataset: Any
    collate: Callable
    latents: Callable[[Dict], torch.Tensor]  # batch -> x0 latents [B, NC, C, T, H, W]
    frame_info: Callable[[Dict], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # -> height, width, frames [B]
    spec: ModelSpec
    token_grid: Callable[[torch.Tensor], Tuple[int, int]]  # latents -> padded per-frame token grid
    codec: Any = None  # latents <-> pixels (``decode``) where the embedded default has one
    drop_condition: Optional[Callable[[Dict, torch.Tensor], Dict]] = None  # (batch, [B] bool) -> batch
    init_weights: Optional[Callable[[nn.Module, str], str]] = None  # (model, train.init_from) -> log description
