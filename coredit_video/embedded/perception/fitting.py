"""Analysis-by-synthesis fitting of a prior-size box to segmented pixels in one or more cameras.

A box hypothesis (ground position, uniform size scale; yaw and size prior fixed) is scored by the
pixels its silhouette gets wrong: blob pixels it misses plus pixels it covers that show neither the
blob nor another box (another box may be an occluder, so those pixels are "don't care"). The
silhouette test is exact for the renderer: the ray through a pixel centre hits the box (slab test).
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..world.scene import EGO_LENGTH, EGO_REAR_OVERHANG, EGO_WIDTH

MAX_PIXELS = 2000  # pixels of a view's window kept for scoring (strided beyond that)
# Uniform size scales tried in the fine stages. Only the prior size by default: with per-dimension size
# variation, freeing one scale traded range accuracy for silhouette fit (measured: lower mAP).
SCALES = (1.0,)


@dataclass
class View:
    """One camera's evidence about one object: window pixel rays and their labels."""
    cam: np.ndarray  # camera position, ego frame [3]
    rays: np.ndarray  # ego-frame ray directions through the window pixels [P, 3]
    target: np.ndarray  # bool [P]: pixel belongs to the blob
    free: np.ndarray  # bool [P]: pixel may be scored (not another box's)
    n_target: int  # blob pixels in the window (before striding), for normalising


def pixel_rays(K: np.ndarray, E: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Ego-frame directions ``[P, 3]`` of the rays through pixel centres ``(v, u)``."""
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(len(u))], 1)
    return d @ E[:3, :3].T


def make_view(rows: np.ndarray, cols: np.ndarray, target: np.ndarray, other: np.ndarray, K: np.ndarray,
              E: np.ndarray) -> View:
    """View of a blob (pixel ``rows``, ``cols``) over a window around it. ``target`` / ``other``: bool ``[H, W]``
    masks of the blob / of other boxes' pixels."""
    h, w = target.shape
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    pr, pc = 2 + (r1 - r0 + 1) // 2, 2 + (c1 - c0 + 1) // 2
    r0, r1, c0, c1 = max(0, r0 - pr), min(h - 1, r1 + pr), max(0, c0 - pc), min(w - 1, c1 + pc)
    stride = max(1, int(np.ceil(np.sqrt((r1 - r0 + 1) * (c1 - c0 + 1) / MAX_PIXELS))))
    vv, uu = np.meshgrid(np.arange(r0, r1 + 1, stride), np.arange(c0, c1 + 1, stride), indexing="ij")
    vv, uu = vv.ravel(), uu.ravel()
    tgt = target[vv, uu]
    return View(E[:3, 3].copy(), pixel_rays(K, E, vv.astype(float), uu.astype(float)), tgt,
                ~(other[vv, uu] & ~tgt), len(rows))


def ray_box_hits(cam: np.ndarray, rays: np.ndarray, xy: np.ndarray, scale: np.ndarray, size: np.ndarray,
                 yaw: float) -> np.ndarray:
    """``[N, P]`` whether each ray from ``cam`` hits each box (ground centre ``xy [N, 2]``, size ``(w, l, h) *
    scale [N]``, standing on z = 0, heading ``yaw``)."""
    c, s = np.cos(yaw), np.sin(yaw)
    to_box = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # ego -> box axes (l, w, h)
    d = rays @ to_box.T
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)  # [P, 3]
    half = size[None] * scale[:, None] / 2
    o = np.concatenate([cam[:2] - xy, (cam[2] - half[:, 2])[:, None]], 1) @ to_box.T  # camera in box frame [N, 3]
    ext = (half[:, 1], half[:, 0], half[:, 2])  # half extents along the box axes
    tmin = np.zeros((len(xy), len(rays)))
    tmax = np.full((len(xy), len(rays)), np.inf)
    for k in range(3):  # slab test, one axis at a time (cheaper than reducing a trailing axis of 3)
        t1 = (-ext[k][:, None] - o[:, k:k + 1]) * inv[None, :, k]
        t2 = (ext[k][:, None] - o[:, k:k + 1]) * inv[None, :, k]
        np.maximum(tmin, np.minimum(t1, t2), out=tmin)
        np.minimum(tmax, np.maximum(t1, t2), out=tmax)
    return tmax >= tmin


def overlaps_ego(xy: np.ndarray, scale: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """``[N]`` whether boxes (ground centre ``xy [N, 2]``, size ``size * scale``, heading ``yaw``) overlap the ego
    car's footprint (separating-axis test of the two rectangles)."""
    ego_c = np.array([EGO_LENGTH / 2 - EGO_REAR_OVERHANG, 0.0])
    ego_half = np.array([EGO_LENGTH / 2, EGO_WIDTH / 2])
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    hl, hw = size[1] * scale / 2, size[0] * scale / 2
    # Half extents of the box along the ego axes, and of the ego along the box axes.
    bx, by = c * hl + s * hw, s * hl + c * hw
    ex, ey = c * ego_half[0] + s * ego_half[1], s * ego_half[0] + c * ego_half[1]
    d = xy - ego_c
    db = np.stack([np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1], -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]], 1)
    return (np.abs(d[:, 0]) < bx + ego_half[0]) & (np.abs(d[:, 1]) < by + ego_half[1]) & \
        (np.abs(db[:, 0]) < hl + ex) & (np.abs(db[:, 1]) < hw + ey)


def mismatch(views: Sequence[View], xy: np.ndarray, scale: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """Wrong pixels ``[N]`` of each hypothesis summed over ``views`` (strided pixels count ``stride**2``);
    ``inf`` for boxes overlapping the ego car."""
    out = np.where(overlaps_ego(xy, scale, size, yaw), np.inf, 0.0)
    for v in views:
        weight = v.n_target / max(int(v.target.sum()), 1)
        step = max(1, 400_000 // max(len(v.rays), 1))
        for i in range(0, len(xy), step):
            sil = ray_box_hits(v.cam, v.rays, xy[i:i + step], scale[i:i + step], size, yaw)
            out[i:i + step] += weight * ((sil & ~v.target & v.free).sum(1) + (~sil & v.target).sum(1))
    return out


def fit_box(views: List[View], center_xy: np.ndarray, origin: np.ndarray, size: np.ndarray, yaw: float,
            coarse: bool = True) -> Tuple[np.ndarray, float, float]:
    """Search the hypothesis with the fewest wrong pixels, in polar coordinates ``(r, theta)`` around
    ``origin`` (a camera position) starting at ``center_xy`` (and a size scale among ``SCALES``).

    ``coarse``: first scan ranges 0.25x .. 4x of the start (its bottom may be hidden); else only refine.
    Returns ``(xy [2], scale, wrong pixels)``: the centre of the tied best hypotheses of the last stage.
    """
    rel = center_xy - origin[:2]
    r0, th0 = max(float(np.linalg.norm(rel)), 0.5), float(np.arctan2(rel[1], rel[0]))
    dth = max(0.5 * float(np.hypot(size[0], size[1])) / r0, 0.01)

    def evaluate(rs, ths, scs):
        g = np.stack(np.meshgrid(rs, ths, scs, indexing="ij"), -1).reshape(-1, 3)
        xy = origin[:2] + g[:, :1] * np.stack([np.cos(g[:, 1]), np.sin(g[:, 1])], 1)
        return g, mismatch(views, xy, g[:, 2], size, yaw)

    def centre_of_best(g, m):
        # Pixel quantisation leaves a region of equally good hypotheses: take its centre, not its first point.
        return g[m <= m.min()].mean(0)

    lr = np.log(2.0) / 6
    if coarse:
        g, m = evaluate(np.maximum(r0 * np.exp(np.arange(-12, 13) * lr), 1.0), th0 + np.linspace(-dth, dth, 7), [1.0])
        best = g[int(np.argmin(m))]  # coarse: the tie set may hold separate minima, keep one
        dth /= 3
    else:
        best = np.array([r0, th0, 1.0])
        lr, dth = lr / 2, dth / 3
    for _ in range(2):
        g, m = evaluate(best[0] * np.exp(np.linspace(-lr, lr, 9)), best[1] + np.linspace(-dth, dth, 7),
                        np.clip(best[2] * np.array(SCALES), 0.9, 1.1))
        best = centre_of_best(g, m)
        lr, dth = lr / 3, dth / 3
    tie = best
    xy = origin[:2] + tie[0] * np.array([np.cos(tie[1]), np.sin(tie[1])])
    return xy, float(tie[2]), float(m.min())
