"""``ToyCodec``: a fixed linear stand-in for the video VAE (no parameters, no training, deterministic).

Encoding cuts every frame into ``factor x factor`` pixel blocks (pixel unshuffle: ``3 f^2`` values per
latent pixel) and projects each block onto ``latent_channels`` fixed orthonormal atoms; decoding is
the transpose, so ``decode(encode(x))`` is the orthogonal projection of ``x`` onto the atoms' span
(the best reconstruction a linear decoder can give). Atoms are products of a colour basis (luma
``(1, 1, 1)/sqrt 3``, chroma ``(1, -1, 0)/sqrt 2`` and ``(1, 1, -2)/sqrt 6``) and the orthonormal 2D
DCT-II basis of the block, taken in a fixed priority order: the three colour block means, then luma
detail by increasing frequency (top-bottom differences first: road scenes are mostly horizontal
edges), then chroma detail. With the defaults (4 channels, factor 2) a latent keeps the block's mean
colour and its luma top-bottom difference.

The codec is lossy: every block loses its within-block detail beyond those atoms. On the default
``SyntheticDrivingDataset`` (64 x 112) the round trip's PSNR is about 31 dB (30.5 to 31.5 dB over
seeds; ``psnr(x, decode(encode(x)))`` over [0, 1] pixels); ``tests/test_data.py`` asserts > 28 dB.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

_COLOR = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
_COLOR = _COLOR / _COLOR.norm(dim=1, keepdim=True)  # rows: luma, chroma 1, chroma 2


def _dct_basis(f: int) -> torch.Tensor:
    """Orthonormal 1D DCT-II basis ``[f, f]`` (row k = frequency k)."""
    n = torch.arange(f, dtype=torch.float64)
    k = n[:, None]
    b = torch.cos(math.pi * (n[None, :] + 0.5) * k / f)
    b[0] /= math.sqrt(2.0)
    return b * math.sqrt(2.0 / f)


def _atom_order(f: int) -> List[Tuple[int, int, int]]:
    """``(colour, vertical freq, horizontal freq)`` of all ``3 f^2`` atoms in priority order."""
    means = [(c, 0, 0) for c in range(3)]
    detail = sorted(((u, v) for u in range(f) for v in range(f) if (u, v) != (0, 0)),
                    key=lambda uv: (uv[0] + uv[1], -uv[0], uv[1]))  # (1, 0): top-bottom detail first
    return means + [(0, u, v) for u, v in detail] + [(c, u, v) for c in (1, 2) for u, v in detail]


def codec_atoms(latent_channels: int, factor: int) -> torch.Tensor:
    """Projection ``[latent_channels, 3 * factor * factor]`` (rows orthonormal), float64. Columns index
    the unshuffled block as ``(colour, row in block, column in block)``."""
    if not 1 <= latent_channels <= 3 * factor * factor:
        raise ValueError(f"latent_channels must be in 1..{3 * factor * factor} for factor {factor}")
    d = _dct_basis(factor)
    rows = []
    for c, u, v in _atom_order(factor)[:latent_channels]:
        spatial = torch.outer(d[u], d[v])  # [f, f]
        rows.append((_COLOR[c][:, None, None] * spatial[None]).reshape(-1))
    return torch.stack(rows)


class ToyCodec(nn.Module):
    """``encode(video [B, NC, 3, T, H, W]) -> [B, NC, latent_channels, T, H/f, W/f]``, ``decode`` back.

    Works on any leading dims (``[..., 3, T, H, W]``); ``H`` and ``W`` must be multiples of ``factor``.
    ``scale`` multiplies the latents (and divides them back in ``decode``). Holds its projection as a
    non-persistent buffer: no parameters, nothing in the state dict.
    """

    def __init__(self, latent_channels: int = 4, factor: int = 2, scale: float = 1.0):
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.factor = int(factor)
        self.scale = float(scale)
        self.register_buffer("atoms", codec_atoms(self.latent_channels, self.factor).float(), persistent=False)

    @property
    def basis(self) -> torch.Tensor:
        """The projection ``[latent_channels, 3 f^2]`` (alias of ``atoms``)."""
        return self.atoms

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        f = self.factor
        *lead, c, t, h, w = video.shape
        if c != 3 or h % f or w % f:
            raise ValueError(f"expected [..., 3, T, H, W] with H, W multiples of {f}, got {tuple(video.shape)}")
        x = video.reshape(-1, 3, t, h, w).transpose(1, 2).reshape(-1, 3, h, w)
        x = F.pixel_unshuffle(x, f)  # [N T, 3 f f, h', w'], channels ordered (colour, row, column)
        z = torch.einsum("kc,nchw->nkhw", self.atoms.to(x), x) * self.scale
        return z.reshape(-1, t, self.latent_channels, h // f, w // f).transpose(1, 2).reshape(
            *lead, self.latent_channels, t, h // f, w // f)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        f = self.factor
        *lead, c, t, h, w = latents.shape
        if c != self.latent_channels:
            raise ValueError(f"expected {self.latent_channels} latent channels, got {c}")
        z = latents.reshape(-1, c, t, h, w).transpose(1, 2).reshape(-1, c, h, w) / self.scale
        x = F.pixel_shuffle(torch.einsum("kc,nkhw->nchw", self.atoms.to(z), z), f)  # [N T, 3, H, W]
        return x.reshape(-1, t, 3, h * f, w * f).transpose(1, 2).reshape(*lead, 3, t, h * f, w * f)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR in dB of ``y`` against ``x`` (default range 2: videos in [-1, 1], i.e. PSNR over [0, 1] pixels)."""
    mse = torch.mean((x.double() - y.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)
