"""A fixed toy latent codec standing in for the VAE of the embedded default.

``encode``: pixel-unshuffle by ``factor`` (``3 f^2`` channels per latent pixel), then a fixed
orthonormal projection onto ``latent_channels`` directions: the per-block mean colour first (the
DC of each channel), then the strongest horizontal / vertical gradients. ``decode`` is the
transpose (least-squares inverse). No trainable parameters; lossy: it keeps the block means exactly
and drops most texture inside each ``f x f`` block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _basis(latent_channels: int, factor: int) -> torch.Tensor:
    """``[latent_channels, 3 * f * f]`` orthonormal rows (float64)."""
    f = factor
    n = 3 * f * f
    rows = []
    for c in range(3):  # channel means
        v = torch.zeros(3, f, f, dtype=torch.float64)
        v[c] = 1.0
        rows.append(v.flatten())
    ramp = torch.linspace(-1, 1, f, dtype=torch.float64)
    for grad in (ramp.view(1, f).expand(f, f), ramp.view(f, 1).expand(f, f)):  # luminance gradients
        rows.append(grad.expand(3, f, f).flatten())
    rows.append(torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    while len(rows) < latent_channels:
        rows.append(torch.randn(n, generator=torch.Generator().manual_seed(len(rows)), dtype=torch.float64))
    m = torch.stack(rows[:latent_channels])
    q, _ = torch.linalg.qr(m.T)  # Gram-Schmidt in the order above
    return q.T.contiguous()


class ToyCodec:
    """``encode([B, NC, 3, T, H, W]) -> [B, NC, C, T, H/f, W/f]``; ``decode`` maps back to pixels."""

    def __init__(self, latent_channels: int = 4, factor: int = 2, scale: float = 1.0):
        if latent_channels < 1 or latent_channels > 3 * factor * factor:
            raise ValueError(f"latent_channels must be in 1..{3 * factor * factor} for factor {factor}")
        self.latent_channels = latent_channels
        self.factor = factor
        self.scale = scale
        self.basis = _basis(latent_channels, factor).float()  # [C, 3 f^2]

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        B, NC, C3, T, H, W = video.shape
        f = self.factor
        if H % f or W % f:
            raise ValueError(f"frame size {H}x{W} is not divisible by the codec factor {f}")
        x = video.permute(0, 1, 3, 2, 4, 5).reshape(-1, C3, H, W)
        x = F.pixel_unshuffle(x, f)  # [N, 3 f^2, H/f, W/f]
        z = torch.einsum("kc,nchw->nkhw", self.basis.to(x), x) * self.scale
        return z.view(B, NC, T, self.latent_channels, H // f, W // f).permute(0, 1, 3, 2, 4, 5).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        B, NC, C, T, h, w = latents.shape
        f = self.factor
        z = latents.permute(0, 1, 3, 2, 4, 5).reshape(-1, C, h, w) / self.scale
        x = torch.einsum("kc,nkhw->nchw", self.basis.to(z), z)
        x = F.pixel_shuffle(x, f)
        return x.view(B, NC, T, 3, h * f, w * f).permute(0, 1, 3, 2, 4, 5).contiguous()
