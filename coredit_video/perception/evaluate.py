"""Ground truth of the synthetic clips for perception scoring: the rendered boxes a camera resolves,
within the nuScenes class ranges (the scoring itself: :func:`coredit_video.evaluation.pipeline.evaluate_perception`)."""
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..data.classes import CLASS_NAMES
from ..data.geometry import yaw_to_quaternion


# nuScenes detection benchmark: per-class evaluation range (metres from the ego).
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0,
               "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}


def in_range(box: Mapping[str, Any], max_range: Optional[float] = None) -> bool:
    """Whether a box dict lies within ``max_range`` metres of the ego (default: its class's ``CLASS_RANGE``)."""
    r = CLASS_RANGE.get(box["detection_name"], 50.0) if max_range is None else max_range
    return bool(np.hypot(*box["translation"][:2]) <= r)


def ground_truth_boxes(item: Mapping[str, Any], frame: int, min_pixels: int = 1,
                       max_range: Optional[float] = None) -> List[Dict[str, Any]]:
    """Ego-frame ground-truth dicts of ``frame`` of a ``SyntheticDrivingDataset`` item: valid boxes showing at
    least ``min_pixels`` pixels (over all cameras) within ``max_range`` metres of the ego (default: the
    nuScenes class ranges)."""
    boxes = np.asarray(item["boxes"][frame], np.float64)
    labels = np.asarray(item["labels"][frame])
    keep = np.asarray(item["box_mask"][frame], bool) & (np.asarray(item["box_pixels"][frame]) >= min_pixels)
    out = [{"translation": boxes[m, :3].tolist(), "size": boxes[m, 3:6].tolist(),
            "rotation": yaw_to_quaternion(boxes[m, 6]).tolist(), "velocity": boxes[m, 7:9].tolist(),
            "detection_name": CLASS_NAMES[int(labels[m])]} for m in np.nonzero(keep)[0]]
    return [b for b in out if in_range(b, max_range)]
