"""The built-in perception model of the synthetic world, its metrics and the corruptions used to probe it."""
from collections import deque

import numpy as np
import pytest
import torch

from coredit_video.embedded.world import CLASS_NAMES, SyntheticDrivingDataset
from coredit_video.embedded.world.classes import CLASS_SIZES
from coredit_video.embedded.world.geometry import quaternion_to_matrix
from coredit_video.evaluation.metrics_bev import bev_iou
from coredit_video.evaluation.metrics_det import center_distance_ap
from coredit_video.embedded.perception.evaluate import evaluate_perception
from coredit_video.embedded.perception import (Calibration, SyntheticPerception, boxes_to_global, frames_from_video,
                                      gaussian_blur, gaussian_noise, ground_truth_boxes, shift)
from coredit_video.embedded.perception.fitting import fit_box, make_view
from coredit_video.embedded.perception.segmentation import classify_ground, classify_objects, connected_components


def _bfs_components(labels):
    h, w = labels.shape
    out = np.full((h, w), -1)
    for r in range(h):
        for c in range(w):
            if labels[r, c] < 0 or out[r, c] >= 0:
                continue
            out[r, c] = r * w + c
            q = deque([(r, c)])
            while q:
                y, x = q.popleft()
                for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= yy < h and 0 <= xx < w and out[yy, xx] < 0 and labels[yy, xx] == labels[y, x]:
                        out[yy, xx] = r * w + c
                        q.append((yy, xx))
    return out


def test_connected_components_match_a_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(-1, 3, size=(23, 31)).astype(np.int8)
        assert np.array_equal(connected_components(labels), _bfs_components(labels))
    spiral = np.full((15, 15), -1, np.int8)  # long winding component: needs many propagation steps
    spiral[1::4, 1:14] = 0
    spiral[3::8, 13] = 0
    spiral[7::8, 1] = 0
    assert np.array_equal(connected_components(spiral), _bfs_components(spiral))


def test_colour_segmentation_recovers_rendered_boxes_and_paint():
    ds = SyntheticDrivingDataset(3, frames=2, seed=2)
    for i in range(3):
        r, scene = ds.render(i), ds.scene(i)
        labels = np.array([tr.label for tr in scene.tracks])
        img = r["image"].reshape(-1, *r["image"].shape[2:])
        ids = r["ids"].reshape(-1, *r["ids"].shape[2:])
        for k in range(len(img)):
            cls = classify_objects(img[k])
            want = np.where(ids[k] >= 0, labels[np.maximum(ids[k], 0)], -1)
            assert (cls == want).mean() > 0.999
            ground = classify_ground(img[k])
            on_ground = (ids[k] < 0) & (r["ground"].reshape(-1, *ids.shape[1:])[k] >= 0)
            assert (ground[on_ground] == r["ground"].reshape(-1, *ids.shape[1:])[k][on_ground]).mean() > 0.999


def test_silhouette_fit_recovers_an_exact_size_box():
    ds = SyntheticDrivingDataset(4, frames=1, seed=5, size_jitter=0.0)
    errors = []
    for i in range(4):
        r, scene = ds.render(i), ds.scene(i)
        boxes = scene.boxes_ego(0)
        for c in range(6):
            ids = r["ids"][c, 0]
            for m, tr in enumerate(scene.tracks):
                name = CLASS_NAMES[tr.label]
                rng = np.hypot(*boxes[m, :2])
                target = ids == m
                if target.sum() < 40 or rng > 25 or name == "barrier" or abs(np.sin(boxes[m, 6])) > 0.1:
                    continue  # clearly visible, road-aligned boxes only
                rows, cols = np.nonzero(target)
                K, E = ds.intrinsics[c], ds.cam2ego[c]
                view = make_view(rows, cols, target, (ids >= 0) & ~target, K, E)
                start = boxes[m, :2] * 1.3  # 30 % too far
                xy, scale, wrong = fit_box([view], start, E[:3, 3], np.array(CLASS_SIZES[name]), 0.0)
                errors.append(np.linalg.norm(xy - boxes[m, :2]) / rng)
    assert len(errors) >= 5 and np.median(errors) < 0.02 and max(errors) < 0.08


def test_center_distance_ap_definition():
    gts = [[{"translation": [10.0, 0, 0], "detection_name": "car"}, {"translation": [20.0, 5, 0],
                                                                     "detection_name": "car"}],
           [{"translation": [5.0, 5, 0], "detection_name": "pedestrian"}]]

    def preds(dx, score=0.9):
        return [[dict(g, translation=[g["translation"][0] + dx, g["translation"][1], 0], detection_score=score)
                 for g in f] for f in gts]

    assert center_distance_ap(preds(0.0), gts)["mAP"] == pytest.approx(1.0)
    shifted = center_distance_ap(preds(1.5), gts)
    assert shifted["ap"]["car"] == {0.5: 0.0, 1.0: 0.0, 2.0: pytest.approx(1.0), 4.0: pytest.approx(1.0)}
    assert shifted["mAP"] == pytest.approx(0.5)
    assert center_distance_ap([[], []], gts)["mAP"] == 0.0
    # A confident false positive ranked first costs precision; ranked last it costs nothing at full recall.
    fp = {"translation": [40.0, 0, 0], "detection_name": "car"}
    worse = center_distance_ap([preds(0.0)[0] + [dict(fp, detection_score=1.0)], preds(0.0)[1]], gts)
    same = center_distance_ap([preds(0.0)[0] + [dict(fp, detection_score=0.1)], preds(0.0)[1]], gts)
    assert worse["mAP"] < 0.9 < 0.99 < same["mAP"]
    iou = bev_iou(np.ones((3, 4, 4), bool), np.eye(4, dtype=bool)[None].repeat(3, 0), mode="multilabel")
    assert np.allclose([iou[c] for c in ("divider", "ped_crossing", "boundary")], 0.25)


def test_predict_output_and_frame_conversions():
    ds = SyntheticDrivingDataset(1, frames=2, seed=1)
    it = ds[0]
    frames = frames_from_video(it["video"], 1, it["camera_names"])
    r = ds.render(0)
    assert all(np.array_equal(frames[n], r["image"][c, 1]) for c, n in enumerate(it["camera_names"]))
    model = SyntheticPerception()
    calib = Calibration.from_item(it, 1)
    out = model.predict(frames, calib)
    assert out["bev_seg"].dtype == bool and out["bev_seg"].shape == (3, 64, 64)
    assert out["boxes"] and all(b["detection_name"] in CLASS_NAMES and 0 <= b["detection_score"] <= 1 and
                                len(b["translation"]) == 3 and len(b["rotation"]) == 4 for b in out["boxes"])
    again = model.predict(frames, calib)
    assert [b["translation"] for b in again["boxes"]] == [b["translation"] for b in out["boxes"]]
    assert np.array_equal(again["bev_seg"], out["bev_seg"])
    e2g = calib.ego2global
    glob = boxes_to_global(out["boxes"], e2g)
    for b, g in zip(out["boxes"], glob):
        assert np.allclose(g["translation"], e2g[:3, :3] @ np.array(b["translation"]) + e2g[:3, 3])
        assert np.allclose(quaternion_to_matrix(g["rotation"]), e2g[:3, :3] @ quaternion_to_matrix(b["rotation"]))
    # Only some cameras: still works, with fewer boxes.
    part = model.predict({"CAM_FRONT": frames["CAM_FRONT"]}, calib)
    assert len(part["boxes"]) <= len(out["boxes"])


def test_high_ap_on_clean_frames_lower_on_corrupted_ones():
    ds = SyntheticDrivingDataset(6, frames=2, seed=1)
    model = SyntheticPerception()
    clean = evaluate_perception(model, ds, min_pixels=16)
    assert clean["num_frames"] == 12 and sum(clean["num_gt"].values()) >= 30
    assert clean["mAP"] > 0.8
    assert np.nanmean(clean["bev_iou"]) > 0.4
    videos = [ds[i]["video"] for i in range(len(ds))]
    for corrupt in (lambda v: gaussian_blur(v, 1.5), lambda v: gaussian_noise(v, 0.1, seed=1),
                    lambda v: shift(v, 3, 3)):
        bad = evaluate_perception(model, ds, videos=[corrupt(v) for v in videos], min_pixels=16)
        assert bad["mAP"] < clean["mAP"] - 0.3
        assert np.nanmean(bad["bev_iou"]) < np.nanmean(clean["bev_iou"])
    gt = ground_truth_boxes(ds[0], 0, min_pixels=16)
    assert all(b["detection_name"] in CLASS_NAMES for b in gt)


def test_corruptions_keep_shape_and_range():
    v = torch.rand(2, 3, 4, 16, 20) * 2 - 1
    for out in (gaussian_blur(v, 1.0), gaussian_noise(v, 0.2), shift(v, 2, -3)):
        assert out.shape == v.shape and out.min() >= -1 and out.max() <= 1
    assert torch.equal(shift(v, 0, 0), v)
    assert torch.equal(shift(v, 2, -3)[..., 2:, :-3], v[..., :-2, 3:])
    flat = torch.full((3, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    assert torch.equal(gaussian_noise(v, 0.2, seed=3), gaussian_noise(v, 0.2, seed=3))
