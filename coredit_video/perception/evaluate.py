"""Score a perception model on synthetic clips: detection mAP against the rendered boxes, BEV IoU
against the rasterised map. Pass ``videos`` to score other pixels (generated, decoded, corrupted)
against the same ground truth."""
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..data.classes import CLASS_NAMES
from ..data.geometry import yaw_to_quaternion
from .base import Calibration, PerceptionModel, frames_from_video
from .metrics import DIST_THRESHOLDS, bev_iou, center_distance_ap


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


def evaluate_perception(model: PerceptionModel, dataset, indices: Optional[Sequence[int]] = None,
                        videos: Optional[Sequence[Any]] = None, frames: Optional[Sequence[int]] = None,
                        min_pixels: int = 16, max_range: Optional[float] = None,
                        thresholds: Sequence[float] = DIST_THRESHOLDS) -> Dict[str, Any]:
    """Run ``model`` on ``frames`` (default: all) of samples ``indices`` (default: all) of ``dataset``.

    ``videos[i]``: optional ``[NC, 3, T, H, W]`` in [-1, 1] replacing sample ``indices[i]``'s rendered video.
    Ground truth: boxes with at least ``min_pixels`` visible pixels (16: boxes a camera resolves; the
    analogue of nuScenes dropping boxes without lidar points) within ``max_range`` m (default: the nuScenes
    class ranges, ``CLASS_RANGE``); predictions beyond the same range are dropped. Returns
    ``center_distance_ap``'s dict plus ``bev_iou`` (per channel, against ``dataset.bev_map`` of each
    frame; nan if the model's BEV grid differs from the data set's) and ``num_frames``.
    """
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if videos is not None and len(videos) != len(indices):
        raise ValueError(f"{len(videos)} videos for {len(indices)} samples")
    preds, gts, seg, seg_gt = [], [], [], []
    same_grid = tuple(model.bev_grid.hw) == tuple(dataset.grid.hw) and \
        (model.bev_grid.x_range, model.bev_grid.y_range) == (dataset.grid.x_range, dataset.grid.y_range)
    for i, idx in enumerate(indices):
        item = dataset[idx]
        video = item["video"] if videos is None else videos[i]
        for t in (range(dataset.frames) if frames is None else frames):
            out = model.predict(frames_from_video(video, t, item["camera_names"]), Calibration.from_item(item, t))
            preds.append([b for b in out["boxes"] if in_range(b, max_range)])
            gts.append(ground_truth_boxes(item, t, min_pixels, max_range))
            if same_grid:
                seg.append(out["bev_seg"])
                seg_gt.append(dataset.bev_map(idx, t))
    res = center_distance_ap(preds, gts, thresholds)
    res["bev_iou"] = bev_iou(np.stack(seg), np.stack(seg_gt)) if seg else np.full(3, np.nan)
    res["num_frames"] = len(preds)
    return res
