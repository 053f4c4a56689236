"""Detection AP with nuScenes' centre-distance matching, and BEV segmentation IoU.

AP follows the nuScenes detection benchmark's definition: per class, predictions over all frames
sorted by score are greedily matched to the nearest unmatched ground truth of the same frame within
a BEV centre distance threshold; precision is interpolated at 101 recall points, recall below 0.1 and
precision below 0.1 are cut off, and the rest is normalised to [0, 1].
"""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
MIN_RECALL = 0.1
MIN_PRECISION = 0.1


def _ap_from_matches(tp: np.ndarray, n_gt: int) -> float:
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    prec = ctp / np.maximum(ctp + cfp, 1)
    rec = ctp / n_gt
    # Precision linearly interpolated on a 101-point recall grid, 0 beyond the largest recall reached.
    p = np.interp(np.linspace(0, 1, 101), rec, prec, right=0.0)
    p = p[int(round(100 * MIN_RECALL)) + 1:] - MIN_PRECISION
    return float(np.mean(np.clip(p, 0, None)) / (1 - MIN_PRECISION))


def center_distance_ap(predictions: Sequence[List[Dict[str, Any]]], ground_truths: Sequence[List[Dict[str, Any]]],
                       thresholds: Sequence[float] = DIST_THRESHOLDS,
                       classes: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """mAP over classes with ground truth (or ``classes``) and thresholds (metres).

    ``predictions[f]`` / ``ground_truths[f]``: the boxes of frame ``f`` as dicts with ``translation`` (first
    two used), ``detection_name`` and, for predictions, ``detection_score``; both in the same frame.
    Returns ``{"mAP", "ap": {class: {threshold: AP}}, "num_gt": {class: n}}``.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction frames vs {len(ground_truths)} ground-truth frames")
    names = sorted({g["detection_name"] for f in ground_truths for g in f}) if classes is None else list(classes)
    ap: Dict[str, Dict[float, float]] = {}
    num_gt: Dict[str, int] = {}
    for cls in names:
        gts = [np.array([g["translation"][:2] for g in f if g["detection_name"] == cls]).reshape(-1, 2)
               for f in ground_truths]
        num_gt[cls] = int(sum(len(g) for g in gts))
        preds = [(p["detection_score"], fi, np.asarray(p["translation"][:2], float))
                 for fi, f in enumerate(predictions) for p in f if p["detection_name"] == cls]
        preds.sort(key=lambda x: -x[0])
        ap[cls] = {}
        for th in thresholds:
            taken = [np.zeros(len(g), dtype=bool) for g in gts]
            tp = np.zeros(len(preds), dtype=bool)
            for i, (_, fi, xy) in enumerate(preds):
                g = gts[fi]
                if not len(g):
                    continue
                dist = np.linalg.norm(g - xy, axis=1)
                dist[taken[fi]] = np.inf
                j = int(np.argmin(dist))
                if dist[j] < th:
                    taken[fi][j] = True
                    tp[i] = True
            ap[cls][float(th)] = _ap_from_matches(tp, num_gt[cls])
    vals = [v for c in ap for v in ap[c].values() if not np.isnan(v)]
    return {"mAP": float(np.mean(vals)) if vals else float("nan"), "ap": ap, "num_gt": num_gt}


def bev_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-channel IoU of bool rasters ``[..., C, H, W]`` summed over leading dims: ``[C]`` (nan if both empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    axes = tuple(i for i in range(pred.ndim) if i != pred.ndim - 3)
    inter = (pred & gt).sum(axis=axes)
    union = (pred | gt).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
