"""Scoring the built-in perception on the synthetic world: ground truth (the rendered boxes a camera resolves,
within the nuScenes class ranges), mAP / NDS and BEV mIoU over a folder of generations
(:func:`synthetic_perception_metrics`, the evaluation pipeline's in-process scorer) and over rendered or given
videos (:func:`evaluate_perception`). The metrics themselves are :mod:`coredit_video.evaluation`'s."""
import functools
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ...evaluation.metrics_bev import BEVIoU, mean_iou_summaries
from ...evaluation.metrics_det import DEFAULT_DIST_THRESHOLDS, center_distance_ap, evaluate_detection, mean_detection
from ...evaluation.protocol import EvalProtocol
from ...evaluation.video_io import find_clips, read_video
from ..world.bev import BEV_CHANNELS
from ..world.classes import CLASS_NAMES
from ..world.geometry import yaw_to_quaternion
from .base import Calibration, boxes_to_global, frames_from_video


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


def synthetic_perception_metrics(videos_dir: str, dataset, protocol: EvalProtocol, progress: bool = True,
                                 perception=None, nusc=None) -> Dict[str, Any]:
    """mAP / NDS (nuScenes DetectionEval) and BEV mIoU of the built-in perception on every generation.

    Ground truth for detection: the nuScenes-format export of ``dataset`` read back by the devkit when
    ``nusc`` is given (``NuScenes(version="v1.0-synthetic", dataroot=...)``), else the dataset's boxes."""
    from tqdm import tqdm

    from .synthetic import SyntheticPerception

    model = perception or SyntheticPerception()
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    by_token = {}
    for i in range(len(dataset)):
        item = dataset[i]
        by_token[item["token"]] = item
    missing = sorted(set(gens) - set(by_token))
    if missing:
        raise KeyError(f"{len(missing)} generated tokens are not in the dataset (e.g. {missing[:2]}); generate and "
                       "evaluate with the same data config and seed offset")
    ks = sorted({k for g in gens.values() for k in g if k >= 0})
    det_results, ious = [], []
    for k in ks:
        preds, gts, ego = {}, {}, {}
        # W-CODA's rule per generation: TP / FP / FN summed over its maps, a class empty in both scores 0
        iou = BEVIoU(BEV_CHANNELS, mode="multilabel", absent_score=0.0)
        for tok in tqdm(sorted(gens), desc=f"perception gen{k}", disable=not progress, file=sys.stderr):
            if k not in gens[tok]:
                continue
            item = by_token[tok]
            clips = {cam: read_video(path) for cam, path in gens[tok][k].items()}
            T = min(c.shape[0] for c in clips.values())
            for f in [f for f in protocol.key_frames if f < T]:
                frames = {cam: clips[cam][f] for cam in item["camera_names"]}
                calib = Calibration.from_item(item, f)
                out = model.predict(frames, calib)
                stok = item["frame_tokens"][f]
                pose = np.asarray(item["ego2global"][f], np.float64)
                preds[stok] = boxes_to_global(out["boxes"], pose)
                gts[stok] = boxes_to_global(ground_truth_boxes(item, f, min_pixels=16), pose)
                ego[stok] = pose[:3, 3].tolist()
                if f == 0:  # the dataset's BEV map is around the frame-0 ego
                    iou.update(np.asarray(out["bev_seg"], bool), np.asarray(item["bev_map"]) > 0.5)
        ious.append(iou.compute())
        if nusc is not None:
            det_results.append(evaluate_detection(preds, sorted(preds), nusc=nusc, ego_translation=ego,
                                                  config=protocol.det_config))
        else:
            det_results.append(evaluate_detection(preds, sorted(preds), gt=gts, ego_translation=ego,
                                                  config=protocol.det_config))
    det = mean_detection(det_results)
    iou = mean_iou_summaries(ious)
    miou = iou.pop("mIoU")
    return dict(mAP=det["mAP"], NDS=det["NDS"], class_ap=det.get("class_ap", {}), iou=iou, mIoU=miou,
                generations=len(ks))

def synthetic_scorer(dataset, protocol: EvalProtocol, nusc=None, progress: bool = True
                     ) -> Callable[[str], Dict[str, Any]]:
    """The pipeline's ``perception`` argument for the embedded default: ``score(videos_dir)``."""
    return functools.partial(synthetic_perception_metrics, dataset=dataset, protocol=protocol, nusc=nusc,
                             progress=progress)


def evaluate_perception(model, dataset, indices: Optional[Sequence[int]] = None,
                        videos: Optional[Sequence[Any]] = None, frames: Optional[Sequence[int]] = None,
                        min_pixels: int = 16, max_range: Optional[float] = None,
                        thresholds: Sequence[float] = DEFAULT_DIST_THRESHOLDS) -> Dict[str, Any]:
    """Score a perception model on synthetic clips: run ``model`` on ``frames`` (default: all) of samples
    ``indices`` (default: all) of ``dataset``.

    ``videos[i]``: optional ``[NC, 3, T, H, W]`` in [-1, 1] replacing sample ``indices[i]``'s rendered video.
    Ground truth: boxes with at least ``min_pixels`` visible pixels (16: boxes a camera resolves; the
    analogue of nuScenes dropping boxes without lidar points) within ``max_range`` m (default: the nuScenes
    class ranges); predictions beyond the same range are dropped. Returns ``center_distance_ap``'s
    dict plus ``bev_iou`` (``[C]`` per channel against ``dataset.bev_map`` of each frame, summed over frames, nan
    for a class empty in both or if the model's BEV grid differs from the data set's) and ``num_frames``.
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
    res["bev_iou"] = np.full(3, np.nan)
    if seg:
        iou = BEVIoU(tuple(map(str, range(len(seg[0])))), mode="multilabel", absent_score=float("nan"))
        iou.update(np.asarray(np.stack(seg), bool), np.asarray(np.stack(seg_gt), bool))
        res["bev_iou"] = np.array([v for k, v in iou.compute().items() if k != "mIoU"])
    res["num_frames"] = len(preds)
    return res
