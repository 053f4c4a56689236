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


def center_distance_ap(predictions: Sequence[List[Dict[str, Any]]], ground_truths: Sequence[List[Dict[str, Any]]],
                       thresholds: Sequence[float] = DIST_THRESHOLDS,
                       classes: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """mAP over classes with ground truth (or ``classes``) and thresholds (metres), per frame lists.

    ``predictions[f]`` / ``ground_truths[f]``: the boxes of frame ``f`` as dicts with ``translation``,
    ``detection_name`` and, for predictions, ``detection_score``; both in the same frame. The matching and AP
    are :func:`coredit_video.evaluation.metrics_det.average_precision`'s (one implementation for both).
    Returns ``{"mAP", "ap": {class: {threshold: AP}}, "num_gt": {class: n}}``; a class without ground truth
    has AP nan and is left out of the mean.
    """
    from ..evaluation.metrics_det import average_precision

    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction frames vs {len(ground_truths)} ground-truth frames")
    token = "{:08d}".format
    pred = {token(f): list(boxes) for f, boxes in enumerate(predictions)}
    gt = {token(f): list(boxes) for f, boxes in enumerate(ground_truths)}
    res = average_precision(pred, gt, thresholds, classes, MIN_RECALL, MIN_PRECISION)
    num_gt = {c: sum(1 for f in ground_truths for g in f if g["detection_name"] == c) for c in res["ap"]}
    ap = {c: {float(th): (v if num_gt[c] else float("nan")) for th, v in per.items()} for c, per in res["ap"].items()}
    vals = [v for c in ap for v in ap[c].values() if not np.isnan(v)]
    return {"mAP": float(np.mean(vals)) if vals else float("nan"), "ap": ap, "num_gt": num_gt}


def bev_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-channel IoU of bool rasters ``[..., C, H, W]`` summed over leading dims: ``[C]`` (nan if both empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    axes = tuple(i for i in range(pred.ndim) if i != pred.ndim - 3)
    inter = (pred & gt).sum(axis=axes)
    union = (pred | gt).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
