"""Pixel classification by colour and connected components (numpy only).

Box pixels are recognised by chromaticity (the renderer only scales a class colour, so ``rgb / sum``
is the class's), ground pixels by the nearest ground colour.
"""
from typing import Tuple

import numpy as np

from ..world.classes import CLASS_COLORS, CLASS_NAMES, CROSSING_COLOR, DIVIDER_COLOR, GRASS_COLOR, ROAD_COLOR, \
    SIDEWALK_COLOR
from ..world.render import MIN_SHADE
from ..world.scene import CROSSING, DIVIDER, GRASS, ROAD, SIDEWALK

_CLASS_RGB = np.array([CLASS_COLORS[n] for n in CLASS_NAMES], dtype=np.float32)
_CLASS_CHROMA = _CLASS_RGB / _CLASS_RGB.sum(1, keepdims=True)
_GROUND_CODES = np.array([GRASS, SIDEWALK, ROAD, DIVIDER, CROSSING], dtype=np.int8)
_GROUND_RGB = np.array([GRASS_COLOR, SIDEWALK_COLOR, ROAD_COLOR, DIVIDER_COLOR, CROSSING_COLOR], dtype=np.float32)


def classify_objects(image: np.ndarray, classes: Tuple[int, ...] = None, chroma_tol: float = 0.08,
                     min_saturation: float = 0.3) -> np.ndarray:
    """Class index of each pixel of ``image`` uint8 ``[H, W, 3]`` that looks like a box, else -1: int8 ``[H, W]``.

    A pixel matches class ``k`` if its chromaticity is within ``chroma_tol`` (L2) of the class's, its
    saturation ``(max - min) / max`` is at least ``min_saturation`` and its brightness lies in the
    range the shading can produce. ``classes`` restricts the candidates (default: all).
    """
    rgb = image.astype(np.float32)
    s = rgb.sum(-1)
    chroma = rgb / np.maximum(s, 1.0)[..., None]
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat_ok = (mx - mn) >= min_saturation * np.maximum(mx, 1.0)
    cand = np.arange(len(CLASS_NAMES)) if classes is None else np.asarray(classes)
    d = np.linalg.norm(chroma[..., None, :] - _CLASS_CHROMA[cand], axis=-1)  # [H, W, K]
    best = np.argmin(d, axis=-1)
    base_sum = _CLASS_RGB[cand].sum(1)[best]
    ok = sat_ok & (np.take_along_axis(d, best[..., None], -1)[..., 0] <= chroma_tol)
    ok &= (s >= 0.7 * MIN_SHADE * base_sum) & (s <= 1.25 * base_sum)
    return np.where(ok, cand[best], -1).astype(np.int8)


def classify_ground(image: np.ndarray, max_dist: float = 60.0) -> np.ndarray:
    """Ground label (GRASS, SIDEWALK, ROAD, DIVIDER, CROSSING) of the nearest ground colour within
    ``max_dist`` (RGB L2), else -1: int8 ``[H, W]``."""
    rgb = image.astype(np.float32)
    d = np.linalg.norm(rgb[..., None, :] - _GROUND_RGB, axis=-1)
    best = np.argmin(d, axis=-1)
    ok = np.take_along_axis(d, best[..., None], -1)[..., 0] <= max_dist
    return np.where(ok, _GROUND_CODES[best], -1).astype(np.int8)


def connected_components(labels: np.ndarray) -> np.ndarray:
    """4-connected components of equal non-negative labels ``[H, W]``: component id per pixel (the smallest
    flat pixel index in the component), -1 where ``labels < 0``."""
    h, w = labels.shape
    fg = labels >= 0
    big = h * w
    comp = np.where(fg, np.arange(h * w).reshape(h, w), big)
    same_v = fg[1:] & fg[:-1] & (labels[1:] == labels[:-1])  # pixel (i+1, j) joins (i, j)
    same_h = fg[:, 1:] & fg[:, :-1] & (labels[:, 1:] == labels[:, :-1])
    while True:
        new = comp.copy()
        np.minimum(new[1:], np.where(same_v, comp[:-1], big), out=new[1:])
        np.minimum(new[:-1], np.where(same_v, comp[1:], big), out=new[:-1])
        np.minimum(new[:, 1:], np.where(same_h, comp[:, :-1], big), out=new[:, 1:])
        np.minimum(new[:, :-1], np.where(same_h, comp[:, 1:], big), out=new[:, :-1])
        # Pointer jumping: a pixel may adopt the label of the pixel its label points to.
        flat = new.ravel()
        idx = np.where(fg.ravel(), flat, 0)
        flat = np.where(fg.ravel(), np.minimum(flat, flat[idx]), big)
        new = flat.reshape(h, w)
        if np.array_equal(new, comp):
            break
        comp = new
    return np.where(fg, comp, -1)
