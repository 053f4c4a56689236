"""3-D detection metrics: nuScenes mAP / NDS with ``nuscenes-devkit``, and a small pure-python center-distance AP.

Boxes are nuScenes result dicts (global frame)::

    {"sample_token": str, "translation": [x, y, z], "size": [w, l, h], "rotation": [qw, qx, qy, qz],
     "velocity": [vx, vy], "detection_name": str, "detection_score": float, "attribute_name": str}

:func:`evaluate_detection` runs the devkit's ``DetectionEval.evaluate`` (matching, AP, TP errors, NDS) on exactly
the scored samples: the devkit's constructor loads the ground truth of a whole split and insists that predictions
cover it, so we build both ``EvalBoxes`` ourselves, for the scored sample tokens only (W-CODA does the same:
its ``load_gt`` keeps the prediction's sample tokens), then apply the devkit's distance / point / bike-rack
filters. A sample without any predicted box is scored with an empty list; a generation with no box at all gives
AP 0 instead of the devkit's "Invalid box type: None" crash.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

BoxDict = Mapping[str, Any]
Predictions = Union[Mapping[str, Sequence[BoxDict]], Sequence[BoxDict], str]

DEFAULT_DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
MAX_BOXES_PER_SAMPLE = 500


class DevkitMissing(ImportError):
    """nuscenes-devkit is not installed."""


def _require_devkit():
    try:
        from nuscenes.eval.common.config import config_factory
        from nuscenes.eval.common.data_classes import EvalBoxes
        from nuscenes.eval.detection.data_classes import DetectionBox
        from nuscenes.eval.detection.evaluate import DetectionEval
    except ImportError as e:
        raise DevkitMissing(
            f"nuScenes mAP/NDS needs nuscenes-devkit ({e}); install it with "
            "`pip install -c .ci/constraints.txt nuscenes-devkit` (it is in coredit-video[eval])") from e
    return config_factory, EvalBoxes, DetectionBox, DetectionEval


# ---------------------------------------------------------------------------------------------------- formatting
def _group(predictions: Predictions) -> Dict[str, List[BoxDict]]:
    if isinstance(predictions, str):
        with open(predictions) as f:
            data = json.load(f)
        if "results" not in data:
            raise ValueError(f"{predictions}: not a nuScenes results file (no 'results' key)")
        return {k: list(v) for k, v in data["results"].items()}
    if isinstance(predictions, Mapping):
        if "results" in predictions and isinstance(predictions["results"], Mapping):
            predictions = predictions["results"]
        return {str(k): list(v) for k, v in predictions.items()}
    grouped: Dict[str, List[BoxDict]] = {}
    for i, box in enumerate(predictions):
        if "sample_token" not in box:
            raise ValueError(f"box {i} has no sample_token")
        grouped.setdefault(str(box["sample_token"]), []).append(box)
    return grouped


def normalize_box(box: BoxDict, sample_token: str, is_gt: bool = False) -> Dict[str, Any]:
    """Checks one box dict and fills the optional fields (velocity 0, attribute '', score -1 for GT)."""
    def vec(key, n, default=None):
        v = box.get(key, default)
        if v is None:
            raise ValueError(f"sample {sample_token}: box lacks {key!r}")
        v = [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]
        if len(v) < n:
            raise ValueError(f"sample {sample_token}: box {key!r} needs {n} values, got {len(v)}")
        return v[:n]

    name = box.get("detection_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"sample {sample_token}: box lacks a detection_name")
    score = box.get("detection_score", -1.0 if is_gt else None)
    if score is None:
        raise ValueError(f"sample {sample_token}: predicted box lacks detection_score")
    score = float(score)
    if not np.isfinite(score):
        raise ValueError(f"sample {sample_token}: detection_score must be finite, got {score}")
    out = {
        "sample_token": sample_token,
        "translation": vec("translation", 3),
        "size": vec("size", 3, [1.0, 1.0, 1.0]),
        "rotation": vec("rotation", 4, [1.0, 0.0, 0.0, 0.0]),
        "velocity": vec("velocity", 2, [0.0, 0.0]),
        "detection_name": name,
        "detection_score": score,
        "attribute_name": str(box.get("attribute_name", "") or ""),
    }
    if is_gt:
        out["num_pts"] = int(box.get("num_pts", 1))
    return out


def build_results_json(predictions: Predictions, sample_tokens: Optional[Iterable[str]] = None,
                       meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """nuScenes results JSON ``{"meta", "results"}`` with one (possibly empty) list per scored sample.

    Predictions for samples outside ``sample_tokens`` are dropped; scored samples without predictions get ``[]``.
    """
    grouped = _group(predictions)
    tokens = list(sample_tokens) if sample_tokens is not None else sorted(grouped)
    results = {}
    for tok in tokens:
        boxes = [normalize_box(b, tok) for b in grouped.get(tok, [])]
        if len(boxes) > MAX_BOXES_PER_SAMPLE:
            raise ValueError(f"sample {tok}: {len(boxes)} boxes, nuScenes allows at most {MAX_BOXES_PER_SAMPLE}")
        results[tok] = boxes
    m = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
    m.update(meta or {})
    return {"meta": m, "results": results}


# ---------------------------------------------------------------------------------------------------- pure AP
def _ap_from_pr(tp: np.ndarray, npos: int, min_recall: float, min_precision: float) -> float:
    if npos == 0 or len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    rec = ctp / float(npos)
    grid = np.linspace(0.0, 1.0, 101)
    prec_i = np.interp(grid, rec, prec, right=0.0)
    prec_i = prec_i[int(round(100 * min_recall)) + 1:]  # skip recalls up to min_recall
    prec_i = np.clip(prec_i - min_precision, 0.0, None)
    return float(prec_i.mean() / (1.0 - min_precision))


def average_precision(pred: Predictions, gt: Predictions,
                      dist_thresholds: Sequence[float] = DEFAULT_DIST_THRESHOLDS,
                      classes: Optional[Sequence[str]] = None, min_recall: float = 0.1,
                      min_precision: float = 0.1) -> Dict[str, Any]:
    """nuScenes-style center-distance AP without the devkit (no range / bike-rack filtering, no TP errors).

    Per class and threshold: predictions sorted by score (samples in token order, ties broken as the devkit
    does), each greedily matched to the nearest unmatched GT box of
    its sample and class whose xy center distance is below the threshold; precision is sampled at 101 recall points
    (0 beyond the reached recall), and AP is the mean of ``max(p - min_precision, 0)`` over recalls above
    ``min_recall``, divided by ``1 - min_precision``. Classes default to those in ``gt``; a class with no GT scores 0.

    Returns ``{"ap": {cls: {th: ap}}, "class_ap": {cls: mean over th}, "mAP": mean over classes}``.
    """
    if not 0 <= min_precision < 1 or not 0 <= min_recall <= 1:
        raise ValueError("need 0 <= min_precision < 1 and 0 <= min_recall <= 1")
    pg, gg = _group(pred), _group(gt)
    pb = [normalize_box(b, t) for t in sorted(pg) for b in pg[t]]
    gb = [normalize_box(b, t, is_gt=True) for t, bs in gg.items() for b in bs]
    names = list(classes) if classes is not None else sorted({b["detection_name"] for b in gb})
    ap: Dict[str, Dict[float, float]] = {}
    for name in names:
        gts: Dict[str, np.ndarray] = {}
        for b in gb:
            if b["detection_name"] == name:
                gts.setdefault(b["sample_token"], []).append(b["translation"][:2])
        gts = {k: np.asarray(v, dtype=np.float64) for k, v in gts.items()}
        npos = sum(len(v) for v in gts.values())
        preds = [b for b in pb if b["detection_name"] == name]
        # highest score first; ties: the later box first (the devkit's order)
        order = sorted(range(len(preds)), key=lambda i: (preds[i]["detection_score"], i), reverse=True)
        ap[name] = {}
        for th in dist_thresholds:
            taken = {k: np.zeros(len(v), dtype=bool) for k, v in gts.items()}
            tp = np.zeros(len(preds))
            for rank, i in enumerate(order):
                b = preds[i]
                g = gts.get(b["sample_token"])
                if g is None:
                    continue
                d = np.linalg.norm(g - np.asarray(b["translation"][:2]), axis=1)
                d[taken[b["sample_token"]]] = np.inf
                j = int(np.argmin(d))
                if d[j] < th:
                    taken[b["sample_token"]][j] = True
                    tp[rank] = 1.0
            ap[name][float(th)] = _ap_from_pr(tp, npos, min_recall, min_precision)
    class_ap = {n: float(np.mean(list(v.values()))) if v else 0.0 for n, v in ap.items()}
    return {"ap": ap, "class_ap": class_ap, "mAP": float(np.mean(list(class_ap.values()))) if class_ap else 0.0}


def center_distance_ap(predictions: Sequence[List[BoxDict]], ground_truths: Sequence[List[BoxDict]],
                       thresholds: Sequence[float] = DEFAULT_DIST_THRESHOLDS,
                       classes: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """:func:`average_precision` over per-frame box lists, for scoring the built-in perception.

    ``predictions[f]`` / ``ground_truths[f]``: the boxes of frame ``f`` as dicts with ``translation``,
    ``detection_name`` and, for predictions, ``detection_score``; both in the same frame. Returns
    ``{"mAP", "ap": {class: {threshold: AP}}, "num_gt": {class: n}}``; a class without ground truth has AP nan
    and is left out of the mean.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction frames vs {len(ground_truths)} ground-truth frames")
    token = "{:08d}".format
    pred = {token(f): list(boxes) for f, boxes in enumerate(predictions)}
    gt = {token(f): list(boxes) for f, boxes in enumerate(ground_truths)}
    res = average_precision(pred, gt, thresholds, classes)
    num_gt = {c: sum(1 for f in ground_truths for g in f if g["detection_name"] == c) for c in res["ap"]}
    ap = {c: {float(th): (v if num_gt[c] else float("nan")) for th, v in per.items()} for c, per in res["ap"].items()}
    vals = [v for c in ap for v in ap[c].values() if not np.isnan(v)]
    return {"mAP": float(np.mean(vals)) if vals else float("nan"), "ap": ap, "num_gt": num_gt}


# ---------------------------------------------------------------------------------------------------- devkit
@dataclass
class DetectionResult:
    """Headline numbers plus the devkit's serialised ``DetectionMetrics`` (``raw``)."""

    mAP: float
    NDS: float
    class_ap: Dict[str, float]
    tp_errors: Dict[str, float]
    num_samples: int
    num_pred: int
    num_gt: int
    raw: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _PoseOnlyNusc:
    """Just enough of ``NuScenes.get`` for the devkit's ``add_center_dist`` / ``filter_eval_boxes`` when the ego
    positions are given directly (no bike-rack filtering: samples have no annotations)."""

    def __init__(self, ego_translation: Mapping[str, Sequence[float]], default=(0.0, 0.0, 0.0)):
        self.ego = {k: [float(x) for x in v][:3] for k, v in ego_translation.items()}
        self.default = list(default)

    def get(self, table: str, token: str) -> Dict[str, Any]:
        if table == "sample":
            return {"token": token, "data": {"LIDAR_TOP": token}, "anns": []}
        if table == "sample_data":
            return {"token": token, "ego_pose_token": token}
        if table == "ego_pose":
            return {"token": token, "translation": self.ego.get(token, self.default), "rotation": [1, 0, 0, 0]}
        raise KeyError(f"{table}/{token}")


def _load_gt_from_db(nusc, sample_tokens: List[str], verbose: bool):
    from nuscenes.eval.common import loaders
    from nuscenes.eval.detection.data_classes import DetectionBox

    if hasattr(loaders, "load_gt_of_sample_tokens"):  # nuscenes-devkit >= 1.1.11
        return loaders.load_gt_of_sample_tokens(nusc, sample_tokens, DetectionBox, verbose=verbose)
    # older devkits: load the split that holds the samples, keep the scored ones
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.utils.splits import create_splits_scenes

    scene_names = {nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in sample_tokens}
    split = next((s for s, names in create_splits_scenes().items() if scene_names <= set(names)
                  and s in ("val", "train", "mini_val", "mini_train")), None)
    if split is None:
        raise ValueError("the scored samples do not belong to one nuScenes split; upgrade nuscenes-devkit")
    full = loaders.load_gt(nusc, split, DetectionBox, verbose=verbose)
    out = EvalBoxes()
    for t in sample_tokens:
        out.add_boxes(t, full[t])
    return out


def evaluate_detection(predictions: Predictions, sample_tokens: Optional[Iterable[str]] = None, *, nusc=None,
                       gt: Optional[Predictions] = None,
                       ego_translation: Optional[Mapping[str, Sequence[float]]] = None,
                       config: Union[str, Any] = "detection_cvpr_2019", output_dir: Optional[str] = None,
                       verbose: bool = False) -> DetectionResult:
    """nuScenes mAP / NDS / per-class AP on exactly ``sample_tokens`` (default: the predictions' samples).

    Ground truth comes from ``nusc`` (a ``NuScenes`` instance; the annotations of the scored samples only, and ego
    poses from the database) or from ``gt`` box dicts (with optional ``num_pts``; ego positions from
    ``ego_translation`` or the origin). ``config`` is a devkit config name or a ``DetectionConfig``. With
    ``output_dir``, ``metrics_summary.json`` is written there (same content as the devkit's).
    """
    config_factory, EvalBoxes, DetectionBox, DetectionEval = _require_devkit()
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes

    cfg = config_factory(config) if isinstance(config, str) else config
    grouped = _group(predictions)
    tokens = list(dict.fromkeys(sample_tokens)) if sample_tokens is not None else sorted(grouped)
    if not tokens:
        raise ValueError("no sample to score")
    extra = sorted(set(grouped) - set(tokens))
    if extra and verbose:
        print(f"evaluate_detection: ignoring predictions for {len(extra)} unscored sample(s)")
    results = build_results_json(grouped, tokens)["results"]
    pred_boxes = EvalBoxes.deserialize(results, DetectionBox)

    if nusc is not None and gt is None:
        gt_boxes = _load_gt_from_db(nusc, tokens, verbose)
        # a camera-only export has no LIDAR_TOP, which the devkit reads ego poses from: take them as given
        pose_src = _PoseOnlyNusc(ego_translation) if ego_translation else nusc
    elif gt is not None:
        gg = _group(gt)
        missing = [t for t in tokens if t not in gg]
        if missing and verbose:
            print(f"evaluate_detection: {len(missing)} scored sample(s) have no ground-truth box")
        gt_boxes = EvalBoxes()
        for t in tokens:
            gt_boxes.add_boxes(t, [DetectionBox(**{k: v for k, v in normalize_box(b, t, is_gt=True).items()})
                                   for b in gg.get(t, [])])
        pose_src = nusc if nusc is not None else _PoseOnlyNusc(ego_translation or {})
    else:
        raise ValueError("evaluate_detection needs ground truth: pass nusc=NuScenes(...) or gt=box dicts")

    pred_boxes = add_center_dist(pose_src, pred_boxes)
    gt_boxes = add_center_dist(pose_src, gt_boxes)
    # the devkit's filter looks for one box to learn the class field and raises on a set with no box at all
    if len(pred_boxes.all):
        pred_boxes = filter_eval_boxes(pose_src, pred_boxes, cfg.class_range, verbose=verbose)
    if len(gt_boxes.all):
        gt_boxes = filter_eval_boxes(pose_src, gt_boxes, cfg.class_range, verbose=verbose)

    class _ScoredSamplesEval(DetectionEval):
        def __init__(self):  # the parent's __init__ loads a whole split; set only what evaluate() reads
            self.nusc, self.cfg, self.verbose = pose_src, cfg, verbose
            self.pred_boxes, self.gt_boxes = pred_boxes, gt_boxes
            self.sample_tokens = tokens
            self.output_dir = output_dir

    metrics, _ = _ScoredSamplesEval().evaluate()
    raw = metrics.serialize()
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "metrics_summary.json"), "w") as f:
            json.dump(raw, f, indent=2)
    class_ap = {k: float(np.mean(list(v.values()))) for k, v in raw["label_aps"].items()}
    return DetectionResult(
        mAP=float(raw["mean_ap"]), NDS=float(raw["nd_score"]), class_ap=class_ap,
        tp_errors={k: float(v) for k, v in raw["tp_errors"].items()}, num_samples=len(tokens),
        num_pred=len(pred_boxes.all), num_gt=len(gt_boxes.all), raw=raw)


def mean_detection(results: Sequence[DetectionResult]) -> Dict[str, Any]:
    """Mean of mAP / NDS / per-class AP over generations (W-CODA ``read_map_miou.py`` averages per-generation
    results), with each generation's numbers kept."""
    if not results:
        raise ValueError("no detection result to average")
    classes = list(results[0].class_ap)
    return {
        "mAP": float(np.mean([r.mAP for r in results])),
        "NDS": float(np.mean([r.NDS for r in results])),
        "class_ap": {c: float(np.mean([r.class_ap.get(c, 0.0) for r in results])) for c in classes},
        "per_generation": [{"mAP": r.mAP, "NDS": r.NDS} for r in results],
    }

