"""Bird's-eye-view road-layout rasters from a vector map.

Grid (``BevGrid``): a rectangle of the ego frame, ``x`` (forward) in ``[-x_range/2, x_range/2]`` and
``y`` (left) in ``[-y_range/2, y_range/2]``, 60 m x 30 m by default. Row 0 is the front edge (largest
x), rows run backwards; column 0 is the left edge (largest y), columns run to the right. So the raster
reads like a map with the ego at the centre facing up. Channels (the W-CODA order): 0 divider (road
and lane dividers), 1 ped_crossing, 2 boundary (road outline).

A cell is set for a line if the line (with its painted width for dividers) overlaps the cell, for a
polygon if any of ``sub x sub`` evenly spread sample points of the cell lies inside it.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from .geometry import invert_transform

BEV_CHANNELS: Tuple[str, ...] = ("divider", "ped_crossing", "boundary")


@dataclass(frozen=True)
class BevGrid:
    hw: Tuple[int, int] = (64, 64)
    x_range: float = 60.0  # metres along ego x, centred on the ego
    y_range: float = 30.0  # metres along ego y

    @property
    def cell(self) -> Tuple[float, float]:
        """Cell size ``(dx, dy)`` in metres (rows, columns)."""
        return self.x_range / self.hw[0], self.y_range / self.hw[1]

    def cell_index(self, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ego ``(x, y)`` ``[..., 2]`` -> ``(row, col, inside)``."""
        dx, dy = self.cell
        row = np.floor((self.x_range / 2 - xy[..., 0]) / dx).astype(np.int64)
        col = np.floor((self.y_range / 2 - xy[..., 1]) / dy).astype(np.int64)
        inside = (row >= 0) & (row < self.hw[0]) & (col >= 0) & (col < self.hw[1])
        return row, col, inside

    def sample_points(self, sub: int = 1) -> np.ndarray:
        """Ego ``(x, y)`` of ``sub x sub`` evenly spread points in every cell: ``[H, W, sub * sub, 2]``."""
        dx, dy = self.cell
        off = (np.arange(sub) + 0.5) / sub
        r = np.arange(self.hw[0])[:, None] + off[None, :]  # [H, sub] fractional rows
        c = np.arange(self.hw[1])[:, None] + off[None, :]
        x = self.x_range / 2 - r * dx
        y = self.y_range / 2 - c * dy
        xx = np.broadcast_to(x[:, None, :, None], (self.hw[0], self.hw[1], sub, sub))
        yy = np.broadcast_to(y[None, :, None, :], (self.hw[0], self.hw[1], sub, sub))
        return np.stack([xx, yy], axis=-1).reshape(self.hw[0], self.hw[1], sub * sub, 2)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of points ``[..., 2]`` against a simple polygon ``[P, 2]`` (not closed)."""
    x, y = points[..., 0], points[..., 1]
    inside = np.zeros(x.shape, dtype=bool)
    a, b = polygon, np.roll(polygon, -1, axis=0)
    for (ax, ay), (bx, by) in zip(a, b):
        crosses = (ay > y) != (by > y)
        xint = ax + (y - ay) * (bx - ax) / np.where(by == ay, 1e-12, by - ay)
        inside ^= crosses & (x < xint)
    return inside


def _densify(polyline: np.ndarray, step: float, width: float) -> np.ndarray:
    """Points every ``step`` metres along a polyline ``[P, 2]``, replicated across ``width``: ``[N, 2]``."""
    pts = []
    for a, b in zip(polyline[:-1], polyline[1:]):
        seg = b - a
        n = max(1, int(np.ceil(np.linalg.norm(seg) / step)))
        f = np.arange(n + 1)[:, None] / n
        p = a + f * seg
        if width > 0:
            normal = np.array([-seg[1], seg[0]]) / max(np.linalg.norm(seg), 1e-12)
            k = max(1, int(np.ceil(width / step)))
            offs = np.linspace(-width / 2, width / 2, k + 1)
            p = (p[:, None, :] + offs[None, :, None] * normal).reshape(-1, 2)
        pts.append(p)
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def rasterize_map(elements: Dict[str, List[np.ndarray]], ego2global: np.ndarray, grid: BevGrid = BevGrid(),
                  line_width: float = 0.3, sub: int = 3) -> np.ndarray:
    """``[3, H, W]`` bool raster (divider, ped_crossing, boundary) of a vector map around the ego pose.

    ``elements``: global-frame map (``Road.map_elements`` keys ``road_dividers``, ``lane_dividers``,
    ``ped_crossings``, ``boundaries``); ``ego2global [4, 4]``; ``line_width``: painted divider width.
    """
    g2e = invert_transform(ego2global)
    out = np.zeros((3,) + tuple(grid.hw), dtype=bool)
    step = 0.25 * min(grid.cell)

    def mark_lines(ch, lines, width):
        for line in lines:
            p = _densify(np.asarray(line, float), step, width)
            if not len(p):
                continue
            e = p @ g2e[:2, :2].T + g2e[:2, 3]
            r, c, ok = grid.cell_index(e)
            out[ch, r[ok], c[ok]] = True

    mark_lines(0, list(elements.get("road_dividers", [])) + list(elements.get("lane_dividers", [])), line_width)
    mark_lines(2, elements.get("boundaries", []), 0.0)
    if elements.get("ped_crossings"):
        pts = grid.sample_points(sub) @ ego2global[:2, :2].T + ego2global[:2, 3]  # [H, W, S, 2] global
        for poly in elements["ped_crossings"]:
            out[1] |= points_in_polygon(pts, np.asarray(poly, float)).any(axis=-1)
    return out
