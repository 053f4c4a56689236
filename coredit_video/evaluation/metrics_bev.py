"""BEV map-segmentation IoU / mIoU and the map-polyline rasteriser (W-CODA's BEVFormer fork, HDMapNet style).

Grid (``map_grid_conf`` of ``bevformer_base_seg_det_150x150.py``: x [-30, 30] m, y [-15, 15] m, 0.15 m):
a raster is ``[rows, cols] = [200, 400]`` in the ego frame (x forward, y left) with::

    col = floor((x - x_min) / res)      col 0 is x = -30 m (behind), col 399 ends at x = +30 m (ahead)
    row = floor((y - y_min) / res)      row 0 is y = -15 m (right),  row 199 ends at y = +15 m (left)

i.e. no flip: W-CODA's visualiser flips axis 0 only for display, and its BEVFormer head transposes/flips the BEV
features so that predictions come out in this same layout.

Classes, in channel order and in increasing priority: divider (road + lane dividers), ped_crossing, boundary
(road-segment / lane contours). Each class is drawn with ``cv2.polylines(thickness=5)`` (which covers 7 cells
across, round caps); a higher class then clears the lower ones within its lines drawn with thickness 9
(``overlap_filter``), so the classes are mutually exclusive and a label map (0 = background, c = class c) carries
the same information.

IoU (W-CODA ``IntersectionOverUnion`` on label maps; prediction = argmax over background + classes): true /
false positives and false negatives of each class are summed over every sample of the set, and
``IoU_c = TP / (TP + FP + FN)``; a class absent from both prediction and ground truth over the whole set scores
``absent_score`` (0 in W-CODA). mIoU is the mean over the foreground classes. This is not the mean of per-sample
IoUs. ``multilabel`` mode takes one boolean raster per class instead (BEVFusion style) with the same accumulation.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .protocol import EvalProtocol, w_coda

Array = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------------- rasteriser
def world_to_grid(xy: np.ndarray, protocol: Optional[EvalProtocol] = None) -> np.ndarray:
    """Ego-frame metres ``[N, 2]`` (x, y) -> continuous (col, row) cell coordinates ``[N, 2]``."""
    p = protocol or w_coda()
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    rows, cols = p.bev_shape
    sx = cols / (p.bev_x_range[1] - p.bev_x_range[0])
    sy = rows / (p.bev_y_range[1] - p.bev_y_range[0])
    return np.stack([(xy[:, 0] - p.bev_x_range[0]) * sx, (xy[:, 1] - p.bev_y_range[0]) * sy], axis=1)


def _clip_segment(p0, p1, lo, hi):
    """Liang-Barsky: the part of segment p0 -> p1 inside the box [lo, hi] (None when outside)."""
    d = p1 - p0
    t0, t1 = 0.0, 1.0
    for k in range(2):
        for pk, qk in ((-d[k], p0[k] - lo[k]), (d[k], hi[k] - p0[k])):
            if pk == 0:
                if qk < 0:
                    return None
                continue
            t = qk / pk
            if pk < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
            if t0 > t1:
                return None
    return p0 + t0 * d, p0 + t1 * d


def _clipped_runs(line: np.ndarray, lo, hi) -> List[np.ndarray]:
    """Split a polyline into the runs of points that lie inside the box (segments clipped at its edges)."""
    runs: List[List[np.ndarray]] = []
    cur: List[np.ndarray] = []
    for a, b in zip(line[:-1], line[1:]):
        seg = _clip_segment(a, b, lo, hi)
        if seg is None:
            if cur:
                runs.append(cur)
                cur = []
            continue
        s, e = seg
        if cur and np.allclose(cur[-1], s):
            cur.append(e)
        else:
            if cur:
                runs.append(cur)
            cur = [s, e]
        if not np.allclose(e, b):  # left the box inside this segment
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [np.asarray(r) for r in runs if len(r) >= 2]


def _draw_numpy(mask: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    """Cells whose centre (integer coordinate) is within ``(thickness + 1) / 2`` of a segment: OpenCV's 8-connected
    thick line of thickness ``t > 1`` covers ``t + 2`` cells across with round caps of that radius."""
    r = (thickness + 1) / 2.0 if thickness > 1 else 0.5
    H, W = mask.shape
    for a, b in zip(pts[:-1].astype(np.float64), pts[1:].astype(np.float64)):
        c0, c1 = int(max(0, np.floor(min(a[0], b[0]) - r))), int(min(W - 1, np.ceil(max(a[0], b[0]) + r)))
        r0, r1 = int(max(0, np.floor(min(a[1], b[1]) - r))), int(min(H - 1, np.ceil(max(a[1], b[1]) + r)))
        if c0 > c1 or r0 > r1:
            continue
        cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
        d = b - a
        L2 = float(d @ d)
        px, py = cc - a[0], rr - a[1]
        t = np.clip((px * d[0] + py * d[1]) / L2, 0.0, 1.0) if L2 > 0 else np.zeros_like(px, dtype=np.float64)
        dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2
        mask[r0:r1 + 1, c0:c1 + 1] |= dist2 <= r * r


def _draw(mask: np.ndarray, pts: np.ndarray, thickness: int, backend: str) -> None:
    if backend == "cv2":
        import cv2

        canvas = mask.view(np.uint8)
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, color=1, thickness=int(thickness))
    else:
        _draw_numpy(mask, pts, thickness)


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "cv2", "numpy"):
        raise ValueError(f"backend must be 'auto', 'cv2' or 'numpy', got {backend!r}")
    if backend == "auto":
        try:
            import cv2  # noqa: F401

            return "cv2"
        except ImportError:
            return "numpy"
    return backend


def _group_polylines(polylines, num_classes: int) -> List[List[np.ndarray]]:
    if isinstance(polylines, Mapping):
        raise TypeError("pass polylines as a per-class sequence or a list of {'pts', 'type'} dicts")
    groups: List[List[np.ndarray]] = [[] for _ in range(num_classes)]
    items = list(polylines)
    if items and isinstance(items[0], Mapping):  # W-CODA vectors: {'pts', 'pts_num', 'type'}
        for v in items:
            c = int(v["type"])
            if not 0 <= c < num_classes:
                continue  # W-CODA drops type -1 ("others")
            pts = np.asarray(v["pts"], dtype=np.float64)[:, :2]
            n = int(v.get("pts_num", len(pts)))
            groups[c].append(pts[:n])
        return groups
    if len(items) != num_classes:
        raise ValueError(f"expected {num_classes} per-class polyline lists, got {len(items)}")
    for c, lines in enumerate(items):
        groups[c] = [np.asarray(line, dtype=np.float64)[:, :2] for line in lines]
    return groups


def rasterize_polylines(polylines, protocol: Optional[EvalProtocol] = None, backend: str = "auto",
                        overlap_filter: bool = True) -> np.ndarray:
    """Map polylines in ego-frame metres -> boolean rasters ``[C, rows, cols]`` (C = ``len(miou_classes)``).

    ``polylines``: one list of ``[N, 2+]`` point arrays per class, or W-CODA vector dicts
    ``{"pts": [N, 2+], "pts_num": n, "type": class_index}``. Lines are clipped to the grid in metres, mapped to
    cells by truncation (as W-CODA's ``np.int32`` cast), and drawn ``map_thickness`` cells wide (OpenCV when
    available, exactly as W-CODA; else a numpy disc-sweep that can differ on a few edge cells). With
    ``overlap_filter`` a class clears every lower class within its lines drawn ``map_thickness +
    map_filter_extra`` wide, which makes the channels exclusive.
    """
    p = protocol or w_coda()
    be = _resolve_backend(backend)
    C = len(p.miou_classes)
    rows, cols = p.bev_shape
    groups = _group_polylines(polylines, C)
    lo = np.array([p.bev_x_range[0], p.bev_y_range[0]])
    hi = np.array([p.bev_x_range[1], p.bev_y_range[1]])
    masks = np.zeros((C, rows, cols), dtype=bool)
    filters = np.zeros((C, rows, cols), dtype=bool)
    for c, lines in enumerate(groups):
        for line in lines:
            if len(line) < 2:
                continue
            for run in _clipped_runs(line, lo, hi):
                px = world_to_grid(run, p).astype(np.int32)  # truncation, as W-CODA
                if len(px) < 2:
                    continue
                _draw(masks[c], px, p.map_thickness, be)
                if overlap_filter:
                    _draw(filters[c], px, p.map_thickness + p.map_filter_extra, be)
    if overlap_filter:
        for c in range(C - 1, 0, -1):
            masks[:c] &= ~filters[c]
    return masks


def wcoda_to_forward_up(raster: Array) -> np.ndarray:
    """W-CODA layout ``[..., rows = y ascending, cols = x ascending]`` -> "forward up" layout ``[..., rows = x
    descending (row 0 ahead), cols = y descending (col 0 on the left)]`` (``coredit_video.data.bev.BevGrid``)."""
    a = np.asarray(raster.cpu() if isinstance(raster, torch.Tensor) else raster)
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)[..., ::-1, ::-1])


def forward_up_to_wcoda(raster: Array) -> np.ndarray:
    """Inverse of :func:`wcoda_to_forward_up`."""
    a = np.asarray(raster.cpu() if isinstance(raster, torch.Tensor) else raster)
    return np.ascontiguousarray(np.swapaxes(a[..., ::-1, ::-1], -1, -2))


def masks_to_labels(masks: Array) -> np.ndarray:
    """Boolean ``[..., C, H, W]`` -> int64 labels ``[..., H, W]`` (0 background, c + 1 for channel c; where channels
    overlap, the highest channel wins, as after W-CODA's overlap filter)."""
    m = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
    C = m.shape[-3]
    labels = np.zeros(m.shape[:-3] + m.shape[-2:], dtype=np.int64)
    for c in range(C):
        labels[m[..., c, :, :]] = c + 1
    return labels


def labels_to_masks(labels: Array, num_classes: int) -> np.ndarray:
    """int labels ``[..., H, W]`` -> boolean ``[..., C, H, W]`` for foreground classes 1..C."""
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    return np.stack([lab == c for c in range(1, num_classes + 1)], axis=-3)


def logits_to_labels(logits: Array) -> np.ndarray:
    """W-CODA prediction: argmax over ``[..., 1 + C, H, W]`` scores (channel 0 = background) -> labels."""
    t = logits if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
    return t.argmax(dim=-3).cpu().numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------------- IoU
class BEVIoU:
    """Accumulates per-class TP / FP / FN over a set of samples; :meth:`compute` gives per-class IoU and mIoU.

    ``update(pred, gt)`` takes, for ``mode="argmax"``, int label maps ``[..., H, W]`` (0 = background, 1..C) and,
    for ``mode="multilabel"``, boolean rasters ``[..., C, H, W]``. Leading dims are a batch.
    """

    def __init__(self, classes: Sequence[str] = ("divider", "ped_crossing", "boundary"), mode: str = "argmax",
                 absent_score: float = 0.0):
        if mode not in ("argmax", "multilabel"):
            raise ValueError(f"mode must be 'argmax' or 'multilabel', got {mode!r}")
        self.classes = tuple(classes)
        self.mode = mode
        self.absent_score = float(absent_score)
        self.reset()

    @classmethod
    def from_protocol(cls, protocol: Optional[EvalProtocol] = None) -> BEVIoU:
        p = protocol or w_coda()
        return cls(p.miou_classes, p.miou_mode)

    def reset(self) -> None:
        C = len(self.classes)
        self.tp = torch.zeros(C, dtype=torch.float64)
        self.fp = torch.zeros(C, dtype=torch.float64)
        self.fn = torch.zeros(C, dtype=torch.float64)
        self.samples = 0

    def _masks(self, x: Array, what: str) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        C = len(self.classes)
        if self.mode == "argmax":
            if t.is_floating_point() or t.dtype == torch.bool:
                raise TypeError(f"{what}: argmax mode takes integer label maps, got {t.dtype} "
                                f"(use logits_to_labels / masks_to_labels first)")
            if t.ndim == 2:
                t = t.unsqueeze(0)
            if int(t.max()) > C or int(t.min()) < 0:
                raise ValueError(f"{what}: labels must be in [0, {C}], got [{int(t.min())}, {int(t.max())}]")
            cls_ids = torch.arange(1, C + 1, dtype=t.dtype).view(C, 1, 1)
            return (t.unsqueeze(-3) == cls_ids).reshape(-1, C, *t.shape[-2:])
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.shape[-3] != C:
            raise ValueError(f"{what}: expected {C} class channels, got shape {tuple(t.shape)}")
        return t.to(torch.bool).reshape(-1, C, *t.shape[-2:])

    def update(self, pred: Array, gt: Array) -> None:
        pm, gm = self._masks(pred, "pred"), self._masks(gt, "gt")
        if pm.shape != gm.shape:
            raise ValueError(f"prediction {tuple(pm.shape)} and ground truth {tuple(gm.shape)} differ in shape")
        self.tp += (pm & gm).sum(dim=(0, 2, 3)).double()
        self.fp += (pm & ~gm).sum(dim=(0, 2, 3)).double()
        self.fn += (~pm & gm).sum(dim=(0, 2, 3)).double()
        self.samples += pm.shape[0]

    def compute(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for c, name in enumerate(self.classes):
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            # W-CODA: absent from ground truth (support = TP + FN) and from prediction (TP + FP) -> absent_score
            if tp + fp + fn == 0:
                out[name] = self.absent_score
            else:
                out[name] = float(tp / (tp + fp + fn))
        out["mIoU"] = float(np.mean([out[n] for n in self.classes]))
        return out


def bev_iou(pred: Array, gt: Array, classes: Sequence[str] = ("divider", "ped_crossing", "boundary"),
            mode: str = "argmax", absent_score: float = 0.0) -> Dict[str, float]:
    """One-shot :class:`BEVIoU` over a batch (accumulated over it, not averaged per sample)."""
    m = BEVIoU(classes, mode, absent_score)
    m.update(pred, gt)
    return m.compute()


def mean_iou_summaries(summaries: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """``aggregate_generations="mean"``: the mean of each per-class IoU and of mIoU over generations (W-CODA's
    ``read_map_miou.py``). For ``"pooled"``, feed every generation into one :class:`BEVIoU` instead."""
    if not summaries:
        raise ValueError("no IoU summary to average")
    keys = [k for k in summaries[0] if all(k in s for s in summaries)]
    return {k: float(np.mean([s[k] for s in summaries])) for k in keys}
