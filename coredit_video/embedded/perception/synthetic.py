"""``SyntheticPerception``: a hand-built perception model for the synthetic world (no learning).

Detection, per camera: pixels are classified by colour, split into 4-connected blobs, and each blob
is lifted to 3D with the flat-ground assumption: the ray through the bottom of the blob meets the
ground z = 0 at the box's nearest bottom edge; the class's size prior and its yaw prior (aligned
with the ego's road: ``yaw = 0``, barriers ``pi / 2``) give a first centre. The centre is then
refined by analysis by synthesis (``fitting.py``): ground positions around it, coarse to fine, are
scored by the pixels the prior-size box's silhouette gets wrong (pixels of other boxes, possible
occluders, are "don't care"), and the centre of the best ones is kept. A blob with a solid part
the fitted box leaves unexplained (two same-class boxes overlapping in the image) is split and the
rest fitted again. Same-class detections that may be one object (duplicates seen by two cameras,
blobs split by an occluder) are clustered; a cluster becomes one box fitted to all its members'
pixels jointly when such a box explains them about as well as the separate fits (else its members
stay separate). Confidence falls with range (the range error of one pixel row of ground contact
grows with range squared), small blobs and blobs cut by the image border. Velocities and
attributes are not estimated (zero, '').

Road layout: ground pixels are labelled by colour; the sub-cell sample points of every BEV cell are
projected into every camera and read the label there. A cell is a divider / ped_crossing if any
sample sees that paint, a boundary if its samples see both road and off-road ground; dividers are
then closed along the driving direction to bridge dashes.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..world.bev import BevGrid
from ..world.cameras import project
from ..world.classes import CLASS_NAMES, CLASS_SIZES
from ..world.geometry import yaw_to_quaternion
from ..world.scene import CROSSING, DIVIDER, GRASS, ROAD, SIDEWALK
from .base import Calibration, PerceptionModel
from .fitting import fit_box, make_view, pixel_rays, ray_box_hits
from .segmentation import classify_ground, classify_objects, connected_components

PRIOR_YAW = {"barrier": np.pi / 2}  # ego-frame yaw prior per class (default 0: along the road)


def _dilate_rows(m: np.ndarray, k: int, fill: bool) -> np.ndarray:
    """OR (``fill=False``) / AND (``fill=True``) of ``m [..., H, W]`` over row shifts ``-k..k``."""
    out = m.copy()
    for s in range(1, k + 1):
        for sh in (s, -s):
            shifted = np.full_like(m, fill)
            if sh > 0:
                shifted[..., sh:, :] = m[..., :-sh, :]
            else:
                shifted[..., :sh, :] = m[..., -sh:, :]
            out = (out & shifted) if fill else (out | shifted)
    return out


class SyntheticPerception(PerceptionModel):
    """Detector + BEV segmenter for ``SyntheticDrivingDataset`` images (any resolution, any rig).

    Args:
        bev_grid: grid of ``bev_seg`` (default ``BevGrid()``: the data set's default).
        min_pixels: smallest blob (pixels) that is lifted.
        refine: run the silhouette fit (else keep the bottom-edge estimate).
        max_range: drop detections farther than this from the ego (m).
        merge_radius: same-class detections whose ranges differ by less than ``max(merge_radius, 0.15 * range)``
            and that are less than ``max(1, 0.6 * class width)`` m apart across the line of sight are one object.
        classes: detection-class indices to look for (default: all of ``CLASS_NAMES``).
        bev_sub: BEV samples per cell side; ``divider_close``: rows bridged when closing dividers.
    """

    def __init__(self, bev_grid: Optional[BevGrid] = None, min_pixels: int = 3, refine: bool = True,
                 max_range: float = 60.0, merge_radius: float = 2.0, classes: Optional[Sequence[int]] = None,
                 bev_sub: int = 3, divider_close: int = 2):
        self.bev_grid = BevGrid() if bev_grid is None else bev_grid
        self.min_pixels = int(min_pixels)
        self.refine = bool(refine)
        self.max_range = float(max_range)
        self.merge_radius = float(merge_radius)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.bev_sub = int(bev_sub)
        self.divider_close = int(divider_close)
        self._bev_cache: Dict[Tuple, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ detection
    def predict(self, frames: Mapping[str, np.ndarray], calib: Calibration) -> Dict[str, Any]:
        dets: List[Dict[str, Any]] = []
        grounds: Dict[str, np.ndarray] = {}
        for name, img in frames.items():
            k, e = (np.asarray(x, np.float64) for x in calib.camera(name))
            img = np.asarray(img)
            cls_map = classify_objects(img, self.classes)
            ground = classify_ground(img)
            ground[cls_map >= 0] = -1
            grounds[name] = ground
            comps = connected_components(cls_map)
            fg = comps >= 0
            if not fg.any():
                continue
            rr, cc = np.nonzero(fg)
            flat = comps[rr, cc]
            order = np.argsort(flat, kind="stable")
            ids, starts = np.unique(flat[order], return_index=True)
            for cid, a, b in zip(ids, starts, list(starts[1:]) + [len(order)]):
                sel = order[a:b]
                if len(sel) < self.min_pixels:
                    continue
                rows, cols = rr[sel], cc[sel]
                target = comps == cid
                for det in self._blob_detections(rows, cols, int(cls_map[rows[0], cols[0]]), target, fg & ~target,
                                                 k, e):
                    det["camera"] = name
                    dets.append(det)
        boxes = [d for d in self._merge(dets) if np.hypot(*d["translation"][:2]) <= self.max_range]
        for d in boxes:
            d.pop("_fit", None)
        return {"boxes": boxes, "bev_seg": self._bev(grounds, calib)}

    def _blob_detections(self, rows, cols, label, target, other, K, E, depth: int = 0) -> List[Dict[str, Any]]:
        """Detections explaining one blob (``rows``, ``cols`` of its pixels; ``target`` / ``other`` bool
        ``[H, W]``: the blob's pixels / pixels of other boxes). A blob that the fitted box leaves largely
        unexplained (two same-class boxes overlapping in the image) is split: the rest is fitted again."""
        name = CLASS_NAMES[label]
        size = np.array(CLASS_SIZES[name], dtype=np.float64)
        yaw = PRIOR_YAW.get(name, 0.0)
        xy = self._initial_center(rows, cols, size, yaw, K, E)
        scale, quality, view, wrong = 1.0, 1.0, None, 0.0
        if self.refine:
            view = make_view(rows, cols, target, other, K, E)
            xy, scale, wrong = fit_box([view], xy, E[:3, 3], size, yaw)
            quality = float(np.clip(1.0 - wrong / len(rows), 0.0, 1.0))
        h, w = target.shape
        # Confidence: fit quality, blob size, and the range error one pixel row of ground contact makes
        # (range^2 / (f * camera height), metres). Blobs cut by the image's side or bottom edge are less reliable.
        cut = cols.min() == 0 or cols.max() == w - 1 or rows.max() == h - 1
        rng = float(np.linalg.norm(xy - E[:2, 3]))
        per_row = rng ** 2 / (K[1, 1] * max(E[2, 3], 0.5))
        score = quality * (1.0 - np.exp(-len(rows) / 25.0)) / (1.0 + per_row) * (0.5 if cut else 1.0)
        dets = [self._box(name, xy, size * scale, yaw, score)]
        dets[0]["_fit"] = (view, E[:3, 3], size, yaw, wrong, len(rows))
        if view is not None and depth < 2:
            part = self._unexplained(rows, cols, target.shape, K, E, xy, scale, size, yaw)
            if part is not None:
                explained = target & ~part
                r2, c2 = np.nonzero(part)
                dets += self._blob_detections(r2, c2, label, part, other | explained, K, E, depth + 1)
        return dets

    def _unexplained(self, rows, cols, hw, K, E, xy, scale, size, yaw) -> Optional[np.ndarray]:
        """The largest part of a blob outside the fitted box's silhouette if it is a solid region (it keeps at
        least ``min_pixels`` pixels after a one-pixel erosion: not just a rim left by a size mismatch)."""
        hit = ray_box_hits(E[:3, 3], pixel_rays(K, E, rows.astype(float), cols.astype(float)), xy[None],
                           np.array([scale]), size, yaw)[0]
        if (~hit).sum() < self.min_pixels:
            return None
        rest = np.zeros(hw, dtype=bool)
        rest[rows[~hit], cols[~hit]] = True
        core = rest.copy()
        core[1:] &= rest[:-1]
        core[:-1] &= rest[1:]
        core[:, 1:] &= rest[:, :-1]
        core[:, :-1] &= rest[:, 1:]
        if core.sum() < self.min_pixels:
            return None
        comps = connected_components(np.where(rest, 0, -1).astype(np.int8))
        ids, counts = np.unique(comps[core], return_counts=True)
        if counts.max() < self.min_pixels:
            return None
        return comps == ids[np.argmax(counts)]

    @staticmethod
    def _box(name: str, xy, size, yaw: float, score: float) -> Dict[str, Any]:
        return {"translation": [float(xy[0]), float(xy[1]), float(size[2]) / 2], "size": [float(x) for x in size],
                "rotation": yaw_to_quaternion(yaw).tolist(), "velocity": [0.0, 0.0], "detection_name": name,
                "detection_score": float(score), "attribute_name": ""}

    @staticmethod
    def _initial_center(rows, cols, size, yaw, K, E) -> np.ndarray:
        """Ground centre ``(x, y)`` from the flat-ground assumption: the blob's lowest pixel edge lies on the
        ground at the box's near face."""
        cam = E[:3, 3]
        vb = rows.max()
        ub = cols[rows == vb].mean()
        ray = E[:3, :3] @ np.array([(ub - K[0, 2]) / K[0, 0], (vb + 0.5 - K[1, 2]) / K[1, 1], 1.0])
        if ray[2] < -1e-6:
            ground = cam + ray * (-cam[2] / ray[2])
        else:  # bottom not below the horizon: range from the apparent height instead
            rng = K[1, 1] * size[2] / max(rows.max() - rows.min() + 1, 1)
            flat_ray = np.array([ray[0], ray[1], 0.0])
            ground = cam + flat_ray / max(np.linalg.norm(flat_ray), 1e-9) * rng
        d = ground[:2] - cam[:2]
        d /= max(np.linalg.norm(d), 1e-9)
        a, b = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
        support = size[1] / 2 * abs(d @ a) + size[0] / 2 * abs(d @ b)  # centre to the near face along d
        return ground[:2] + support * d

    def _merge(self, dets: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Cluster same-class detections (duplicates across cameras, blobs split by occluders); a cluster whose
        members' evidence one box explains about as well as their own fits do becomes that joint fit."""
        clusters: List[List[Dict[str, Any]]] = []
        for det in sorted(dets, key=lambda x: -x["detection_score"]):
            for cl in clusters:
                if cl[0]["detection_name"] == det["detection_name"] and self._same_object(cl[0], det):
                    cl.append(det)
                    break
            else:
                clusters.append([det])
        out = []
        for cl in clusters:
            head = cl[0]
            fits = [d.get("_fit") for d in cl]
            if len(cl) > 1 and all(f is not None and f[0] is not None for f in fits):
                views = [f[0] for f in fits]
                _, origin, size, yaw, _, _ = fits[0]
                xy, scale, wrong = fit_box(views, np.asarray(head["translation"][:2]), origin, size, yaw,
                                           coarse=False)
                alone = sum(f[4] for f in fits)
                if wrong <= alone + 0.1 * sum(f[5] for f in fits):
                    head = dict(self._box(head["detection_name"], xy, size * scale, yaw, head["detection_score"]),
                                camera=head.get("camera"))
                else:  # one box cannot explain them all: distinct objects after all
                    out.extend(cl[1:])
            out.append(head)
        return sorted(out, key=lambda x: -x["detection_score"])

    def _same_object(self, a: Dict[str, Any], b: Dict[str, Any]) -> bool:
        """Whether two same-class detections may be one object: close in range (monocular range is the
        uncertain direction) and across the line of sight (well determined; two objects are at least
        about a box width apart there)."""
        pa, pb = np.asarray(a["translation"][:2]), np.asarray(b["translation"][:2])
        ra, rb = float(np.linalg.norm(pa)), float(np.linalg.norm(pb))
        r = max(0.5 * (ra + rb), 1e-6)
        across = abs(pa[0] * pb[1] - pa[1] * pb[0]) / max(ra * rb, 1e-12) * r  # r * sin(angle between)
        width = min(CLASS_SIZES[a["detection_name"]][:2])
        return abs(ra - rb) < max(self.merge_radius, 0.15 * r) and across < max(1.0, 0.6 * width)

    # ------------------------------------------------------------------ road layout
    def _bev_lookup(self, name: str, K: np.ndarray, E: np.ndarray, hw: Tuple[int, int]):
        key = (name, K.tobytes(), E.tobytes(), hw)
        if key not in self._bev_cache:
            pts = self.bev_grid.sample_points(self.bev_sub)
            pts3 = np.concatenate([pts, np.zeros(pts.shape[:-1] + (1,))], -1)
            uv, depth = project(pts3, K, E)
            ui, vi = np.floor(uv[..., 0] + 0.5).astype(np.int64), np.floor(uv[..., 1] + 0.5).astype(np.int64)
            ok = (depth > 0.5) & (ui >= 0) & (ui < hw[1]) & (vi >= 0) & (vi < hw[0])
            self._bev_cache[key] = (np.where(ok, vi, 0), np.where(ok, ui, 0), ok)
        return self._bev_cache[key]

    def _bev(self, grounds: Mapping[str, np.ndarray], calib: Calibration) -> np.ndarray:
        hb, wb = self.bev_grid.hw
        div, cross, road, off = (np.zeros((hb, wb), dtype=bool) for _ in range(4))
        for name, ground in grounds.items():
            k, e = calib.camera(name)
            vi, ui, ok = self._bev_lookup(name, np.asarray(k, np.float64), np.asarray(e, np.float64), ground.shape)
            lab = np.where(ok, ground[vi, ui], -1)  # [Hb, Wb, S]
            div |= (lab == DIVIDER).any(-1)
            cross |= (lab == CROSSING).any(-1)
            road |= np.isin(lab, (ROAD, DIVIDER, CROSSING)).any(-1)
            off |= np.isin(lab, (GRASS, SIDEWALK)).any(-1)
        if self.divider_close:
            div = _dilate_rows(_dilate_rows(div, self.divider_close, False), self.divider_close, True)
        return np.stack([div, cross, road & off])
