"""Condition features handed to the host: box tokens ``y`` and per-camera features ``cams``."""
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .classes import CLASS_NAMES

BOX_BASE_DIM = 22  # slots of a token before the Fourier features (see ``encode_condition``)
CAM_DIM = 12


def encode_condition(boxes, labels, mask, cond_dim: int = 32, num_tokens: Optional[int] = None) -> torch.Tensor:
    """Encode one frame's boxes as condition tokens ``[..., L, cond_dim]`` float32 (a fixed function).

    ``boxes [..., M, 9]`` (x, y, z, w, l, h, yaw, vx, vy; metres, radians, m/s, ego frame), ``labels [..., M]``
    (indices into ``CLASS_NAMES``), ``mask [..., M]`` (valid boxes). ``L = num_tokens`` (default ``M + 1``).

    Token 0 is the scene token: slot 1 = 1, slots 2..11 the class histogram (fractions of the valid
    boxes), slot 12 the valid count / ``L - 1``, slot 13 the mean speed / 10 m/s. Tokens 1.. are the
    valid boxes, nearest to the ego first (ties by index): slot 0 = 1, slots 2..11 one-hot class,
    12..14 ``x/50, y/50, z/5``, 15..17 ``log w, log l, log h``, 18..19 ``sin, cos yaw``, 20..21
    ``vx/10, vy/10``, then ``cond_dim - 22`` Fourier features cycling through
    ``sin(pi 2^k x/50), cos(.. x ..), sin(.. y ..), cos(.. y ..)`` for octaves ``k = 0, 1, ...``.
    Unused tokens are zero. Boxes beyond ``L - 1`` are dropped (the farthest).
    """
    if cond_dim < BOX_BASE_DIM:
        raise ValueError(f"cond_dim must be >= {BOX_BASE_DIM}, got {cond_dim}")
    boxes = torch.as_tensor(np.asarray(boxes) if not torch.is_tensor(boxes) else boxes).double()
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).bool()
    lead, m = boxes.shape[:-2], boxes.shape[-2]
    L = m + 1 if num_tokens is None else int(num_tokens)
    if L < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    b = boxes.reshape(-1, m, 9)
    lab = labels.reshape(-1, m)
    msk = mask.reshape(-1, m)
    n = b.shape[0]
    nc = len(CLASS_NAMES)
    out = torch.zeros(n, L, cond_dim, dtype=torch.float64)

    # Scene token.
    onehot = torch.zeros(n, m, nc, dtype=torch.float64)
    onehot.scatter_(2, lab.clamp(0, nc - 1)[..., None], 1.0)
    onehot = onehot * msk[..., None]
    count = msk.sum(1).double()
    out[:, 0, 1] = 1.0
    out[:, 0, 2:2 + nc] = onehot.sum(1) / count.clamp(min=1)[:, None]
    out[:, 0, 12] = count / max(L - 1, 1)
    speed = torch.linalg.norm(b[..., 7:9], dim=-1) * msk
    out[:, 0, 13] = speed.sum(1) / count.clamp(min=1) / 10

    if L > 1 and m:
        # Box tokens, nearest first; invalid boxes sort last.
        dist = torch.linalg.norm(b[..., :2], dim=-1).masked_fill(~msk, float("inf"))
        order = torch.sort(dist, dim=1, stable=True).indices[:, :L - 1]
        k = order.shape[1]
        bb = torch.gather(b, 1, order[..., None].expand(n, k, 9))
        oh = torch.gather(onehot, 1, order[..., None].expand(n, k, nc))
        valid = torch.gather(msk, 1, order).double()[..., None]
        x, y = bb[..., 0], bb[..., 1]
        feats = [torch.ones_like(x)[..., None], torch.zeros_like(x)[..., None], oh,
                 torch.stack([x / 50, y / 50, bb[..., 2] / 5], -1),
                 torch.log(bb[..., 3:6].clamp(min=1e-3)),
                 torch.stack([torch.sin(bb[..., 6]), torch.cos(bb[..., 6]), bb[..., 7] / 10, bb[..., 8] / 10], -1)]
        extra = []
        for j in range(cond_dim - BOX_BASE_DIM):
            v = x if (j // 2) % 2 == 0 else y
            arg = math.pi * 2 ** (j // 4) * v / 50
            extra.append(torch.sin(arg) if j % 2 == 0 else torch.cos(arg))
        tok = torch.cat(feats + ([torch.stack(extra, -1)] if extra else []), -1)
        out[:, 1:1 + k] = tok * valid
    return out.reshape(*lead, L, cond_dim).float()


def camera_features(intrinsics: np.ndarray, cam2ego: np.ndarray, image_hw: Tuple[int, int]) -> np.ndarray:
    """``[NC, 12]`` float32 camera features: ``fx/W, fy/H, cx/W, cy/H``, the optical axis (camera +z) and
    the image-right axis (camera +x) in the ego frame (3 + 3, unit vectors), and the mounting ``x, y``
    in metres (the height is left out: all cameras sit at about 1.5 m)."""
    h, w = image_hw
    k, e = np.asarray(intrinsics), np.asarray(cam2ego)
    f = np.concatenate([
        np.stack([k[:, 0, 0] / w, k[:, 1, 1] / h, k[:, 0, 2] / w, k[:, 1, 2] / h], 1),
        e[:, :3, 2], e[:, :3, 0], e[:, :2, 3],
    ], axis=1)
    return f.astype(np.float32)


GROUND_CHANNELS = 5  # grass, sidewalk, road, divider, crossing (``scene.GRASS`` .. ``scene.CROSSING``)
VIEW_LAYOUT_CHANNELS = GROUND_CHANNELS + len(CLASS_NAMES)


def view_layout(ids: np.ndarray, ground: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """The scene's layout as each camera sees it: ``[NC, VIEW_LAYOUT_CHANNELS, T, H, W]`` float32 one-hot.

    ``ids [NC, T, H, W]`` (visible box index, -1 none) and ``ground [NC, T, H, W]`` (ground label, -1 sky) are
    the renderer's buffers, i.e. the boxes and the road map projected through the cameras; ``labels [M]`` the
    class of each box. Channels ``0..4`` the ground label where no box is seen, ``5..`` the class of the box
    seen; sky pixels are all zero. It carries what ``y`` (boxes) and ``bev_map`` hold, put where the views show it.
    """
    ids, ground = np.asarray(ids), np.asarray(ground)
    code = np.where(ground >= 0, ground.astype(np.int64), -1)
    if len(labels):
        lab = np.asarray(labels, dtype=np.int64)
        box = ids >= 0
        code = np.where(box, GROUND_CHANNELS + lab[np.clip(ids, 0, None)], code)
    out = np.zeros((VIEW_LAYOUT_CHANNELS,) + code.shape, dtype=np.float32)  # [Cl, NC, T, H, W]
    for c in range(VIEW_LAYOUT_CHANNELS):
        out[c] = code == c
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3, 4))
