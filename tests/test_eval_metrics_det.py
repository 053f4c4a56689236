"""Detection AP: the pure-python center-distance AP and nuscenes-devkit's DetectionEval on a hand-made set."""
import copy
import json

import numpy as np
import pytest

from coredit_video.evaluation.metrics_det import (
    average_precision,
    build_results_json,
    evaluate_detection,
    mean_detection,
)
from coredit_video.evaluation.protocol import NUSCENES_DETECTION_CLASSES

ATTR = {"car": "vehicle.parked", "truck": "vehicle.parked", "bus": "vehicle.parked", "trailer": "vehicle.parked",
        "construction_vehicle": "vehicle.parked", "pedestrian": "pedestrian.standing",
        "motorcycle": "cycle.without_rider", "bicycle": "cycle.without_rider", "traffic_cone": "", "barrier": ""}
SIZE = {"car": [1.9, 4.5, 1.6], "truck": [2.5, 8.0, 3.0], "bus": [3.0, 11.0, 3.5], "trailer": [2.5, 10.0, 3.5],
        "construction_vehicle": [2.8, 6.0, 3.0], "pedestrian": [0.7, 0.7, 1.8], "motorcycle": [0.8, 2.1, 1.5],
        "bicycle": [0.6, 1.7, 1.3], "traffic_cone": [0.4, 0.4, 1.0], "barrier": [2.5, 0.5, 1.0]}


def _gt_set(tokens=("s1", "s2"), ego=(100.0, 200.0, 0.0)):
    """Every nuScenes class in every sample, spread on a ring 6-20 m around the ego."""
    gt = {}
    for si, tok in enumerate(tokens):
        boxes = []
        for ci, name in enumerate(NUSCENES_DETECTION_CLASSES):
            ang = 2 * np.pi * (ci + 0.3 * si) / len(NUSCENES_DETECTION_CLASSES)
            rad = 6.0 + ci * 1.4
            boxes.append({"translation": [ego[0] + rad * np.cos(ang), ego[1] + rad * np.sin(ang), 1.0],
                          "size": SIZE[name], "rotation": [np.cos(ang / 2), 0, 0, np.sin(ang / 2)],
                          "velocity": [0.0, 0.0], "detection_name": name, "attribute_name": ATTR[name],
                          "num_pts": 10})
        gt[tok] = boxes
    return gt


def _perfect(gt, score=0.9):
    pred = copy.deepcopy(gt)
    for boxes in pred.values():
        for i, b in enumerate(boxes):
            b.pop("num_pts")
            b["detection_score"] = score - 0.01 * i
    return pred


def _shift(pred, dx):
    out = copy.deepcopy(pred)
    for boxes in out.values():
        for b in boxes:
            b["translation"] = [b["translation"][0] + dx, b["translation"][1], b["translation"][2]]
    return out


# ---------------------------------------------------------------------------------------------------- pure AP
def test_pure_ap_perfect_shifted_empty():
    gt = _gt_set()
    pred = _perfect(gt)
    r = average_precision(pred, gt)
    assert r["mAP"] == pytest.approx(1.0)
    assert set(r["class_ap"]) == set(NUSCENES_DETECTION_CLASSES)
    # 0.7 m off: a match only at the 1, 2 and 4 m thresholds
    r = average_precision(_shift(pred, 0.7), gt)
    assert r["ap"]["car"][0.5] == 0.0 and r["ap"]["car"][1.0] == pytest.approx(1.0)
    assert r["mAP"] == pytest.approx(0.75)
    r = average_precision(_shift(pred, 3.0), gt)  # only the 4 m threshold
    assert r["mAP"] == pytest.approx(0.25)
    r = average_precision({}, gt)
    assert r["mAP"] == 0.0
    assert average_precision({"s1": []}, gt, classes=["car"])["mAP"] == 0.0


def test_pure_ap_ranking_matters():
    gt = {"s": [{"translation": [0, 0, 0], "detection_name": "car"},
                {"translation": [10, 0, 0], "detection_name": "car"}]}
    good = [{"sample_token": "s", "translation": [0, 0, 0], "detection_name": "car", "detection_score": 0.9},
            {"sample_token": "s", "translation": [10, 0, 0], "detection_name": "car", "detection_score": 0.8},
            {"sample_token": "s", "translation": [30, 0, 0], "detection_name": "car", "detection_score": 0.1}]
    ap_good = average_precision(good, gt)["mAP"]
    # the false positive ranks last, yet precision at recall 1 is read after it (2/3): the nuScenes interpolation
    assert ap_good == pytest.approx(1.0 - (1.0 - (2 / 3 - 0.1) / 0.9) / 90)
    bad = copy.deepcopy(good)
    bad[2]["detection_score"] = 0.95  # the false positive ranks first
    ap_bad = average_precision(bad, gt)["mAP"]
    assert 0.0 < ap_bad < ap_good
    # precision 1/2 at recall 0.5 and 2/3 at recall 1 -> interpolated, minus min_precision, normalised
    rec = np.linspace(0, 1, 101)
    prec = np.interp(rec, [0.0, 0.5, 1.0], [0.0, 0.5, 2 / 3])[11:]
    assert ap_bad == pytest.approx(float(np.clip(prec - 0.1, 0, None).mean() / 0.9))


def test_results_json(tmp_path):
    pred = {"a": [{"translation": [1, 2, 3], "detection_name": "car", "detection_score": 0.5}], "z": []}
    data = build_results_json(pred, sample_tokens=["a", "b"])
    assert set(data["results"]) == {"a", "b"} and data["results"]["b"] == []
    box = data["results"]["a"][0]
    assert box["sample_token"] == "a" and box["velocity"] == [0.0, 0.0] and box["rotation"] == [1.0, 0.0, 0.0, 0.0]
    assert data["meta"]["use_camera"] is True
    assert json.loads(json.dumps(build_results_json(pred)))["results"]["a"][0]["detection_score"] == 0.5
    with pytest.raises(ValueError, match="detection_score"):
        build_results_json({"a": [{"translation": [0, 0, 0], "detection_name": "car"}]})


# ---------------------------------------------------------------------------------------------------- devkit
def _has_devkit():
    try:
        import nuscenes.eval.detection.evaluate  # noqa: F401
    except ImportError:
        return False
    return True


HAS_DEVKIT = _has_devkit()
needs_devkit = pytest.mark.skipif(not HAS_DEVKIT, reason="nuscenes-devkit not installed")

EGO = {"s1": [100.0, 200.0, 0.0], "s2": [100.0, 200.0, 0.0], "s3": [100.0, 200.0, 0.0]}


@needs_devkit
def test_devkit_perfect_and_restricted(tmp_path):
    gt = _gt_set(("s1", "s2", "s3"))
    pred = _perfect({k: gt[k] for k in ("s1", "s2")})
    # s3 has ground truth but is not scored: it must not count as missed
    r = evaluate_detection(pred, ["s1", "s2"], gt=gt, ego_translation=EGO, output_dir=str(tmp_path))
    assert r.mAP == pytest.approx(1.0) and r.NDS == pytest.approx(1.0)
    assert r.num_samples == 2 and r.num_gt == 20 and r.num_pred == 20
    assert all(v == pytest.approx(1.0) for v in r.class_ap.values())
    summary = json.load(open(tmp_path / "metrics_summary.json"))
    assert summary["mean_ap"] == pytest.approx(1.0)


@needs_devkit
def test_devkit_shifted_lowers_ap_and_matches_pure_ap():
    gt = _gt_set()
    pred = _shift(_perfect(gt), 0.7)
    r = evaluate_detection(pred, gt=gt, ego_translation=EGO)
    assert r.mAP == pytest.approx(0.75)
    assert r.NDS < 1.0 and r.tp_errors["trans_err"] == pytest.approx(0.7, abs=1e-6)
    # a messier set: the devkit and the pure AP agree when no box is range-filtered
    g = np.random.default_rng(0)
    noisy = copy.deepcopy(pred)
    for boxes in noisy.values():
        for b in boxes:
            b["translation"] = [b["translation"][0] + g.normal(0, 1.0), b["translation"][1] + g.normal(0, 1.0),
                                b["translation"][2]]
            b["detection_score"] = float(g.uniform(0.05, 1.0))
        boxes.append({"translation": [105.0, 205.0, 1.0], "detection_name": "car", "detection_score": 0.99,
                      "size": [2, 4, 1.5]})
    r = evaluate_detection(noisy, gt=gt, ego_translation=EGO)
    pure = average_precision(noisy, gt)
    for name in NUSCENES_DETECTION_CLASSES:
        assert r.class_ap[name] == pytest.approx(pure["class_ap"][name], abs=1e-9), name
    assert r.mAP == pytest.approx(pure["mAP"], abs=1e-9)


@needs_devkit
def test_devkit_empty_predictions_and_range_filter():
    gt = _gt_set()
    r = evaluate_detection({"s1": [], "s2": []}, gt=gt, ego_translation=EGO)
    assert r.mAP == 0.0 and r.num_pred == 0
    r = evaluate_detection({}, ["s1", "s2"], gt=gt, ego_translation=EGO)  # no sample in the predictions at all
    assert r.mAP == 0.0
    # a GT pedestrian 45 m away is beyond the pedestrian range (40 m): dropped by the devkit's filter, not missed
    far = copy.deepcopy(gt)
    far["s1"].append({"translation": [145.0, 200.0, 1.0], "size": [0.7, 0.7, 1.8], "detection_name": "pedestrian",
                      "attribute_name": "pedestrian.standing", "num_pts": 5})
    r = evaluate_detection(_perfect(gt), gt=far, ego_translation=EGO)
    assert r.mAP == pytest.approx(1.0)
    res = mean_detection([r, evaluate_detection({"s1": [], "s2": []}, gt=gt, ego_translation=EGO)])
    assert res["mAP"] == pytest.approx(0.5) and len(res["per_generation"]) == 2
    with pytest.raises(ValueError, match="ground truth"):
        evaluate_detection({"s1": []})


def test_devkit_missing_is_explained(monkeypatch):
    import sys

    from coredit_video.evaluation.metrics_det import DevkitMissing

    monkeypatch.setitem(sys.modules, "nuscenes.eval.common.config", None)
    with pytest.raises(DevkitMissing, match="pip install"):
        evaluate_detection({"s1": []}, gt={})
