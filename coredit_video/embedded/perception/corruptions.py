"""Image corruptions for checking that a perception score drops on degraded frames.

All act on videos ``[..., 3, T, H, W]`` in [-1, 1] (torch) and return the same shape and range.
"""
import math

import torch
import torch.nn.functional as F


def _frames(video: torch.Tensor):
    """``[..., 3, T, H, W]`` -> ``([N, 3, H, W], restore)``."""
    shape = video.shape
    x = video.movedim(-3, -4).reshape(-1, 3, shape[-2], shape[-1])  # [..., T, 3, H, W] -> [N, 3, H, W]

    def restore(y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*shape[:-4], shape[-3], 3, shape[-2], shape[-1]).movedim(-4, -3)

    return x, restore


def gaussian_blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every frame, ``sigma`` pixels (edges replicated)."""
    if sigma <= 0:
        return video.clone()
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=video.dtype) / sigma) ** 2)
    k = k / k.sum()
    x, restore = _frames(video)
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return restore(x)


def gaussian_noise(video: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of ``std`` (in [-1, 1] units; 0.1 is about 13 grey levels) and clamp."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(video.shape, generator=g, dtype=video.dtype)
    return (video + std * noise).clamp(-1, 1)


def shift(video: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate every frame by ``(dy, dx)`` pixels (down, right), replicating the edge pixels."""
    x, restore = _frames(video)
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return restore(x[:, :, rows][:, :, :, cols])
