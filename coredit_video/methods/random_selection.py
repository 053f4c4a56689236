"""Ablation ``random``: CoReDiT's budgets, m-stride and reconstruction, but the skipped tokens drawn at random."""
from __future__ import annotations

import zlib

import torch

from .base import CallGeometry
from .coredit import CoReDiT


def random_scores(x: torch.Tensor, ordinal: int) -> torch.Tensor:
    """Uniform ``[F, N]`` scores, a deterministic function of the block and of ``x [F, N, C]`` (so a
    gradient-checkpoint recompute draws the same tokens) and different for every input.

    The seed hashes the signs of ``x``'s first channel, not its bits: float kernels differ between CPUs in
    the last bits, which would change the draw, while a sign changes only for a value within rounding of 0.
    """
    probe = (x.detach()[:, :, 0] > 0).cpu().numpy().tobytes()
    g = torch.Generator().manual_seed(zlib.crc32(probe) * 131 + int(ordinal))
    return torch.rand(x.shape[:2], generator=g).to(x.device)


class RandomSelection(CoReDiT):
    name = "random"
    supports_cross_view = False

    def selection_scores(self, x: torch.Tensor, geo: CallGeometry, sc: torch.Tensor) -> torch.Tensor:
        return random_scores(x, geo.layout.ordinal)
