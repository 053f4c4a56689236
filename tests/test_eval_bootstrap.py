"""The paired bootstrap behind the report's Δ intervals: against a hand-rolled numpy loop, known answers (identical
rows, a constant shift), one scene, and the pooled statistics against the headline metrics they recompute."""
import math

import numpy as np
import pytest

from coredit_video.evaluation.bootstrap import (FrameMean, PooledDetection, PooledIoU, delta_intervals,
                                                distinct_resamples, paired_bootstrap, resample_counts)
from coredit_video.evaluation.metrics_bev import BEVIoU
from coredit_video.evaluation.metrics_video import mean_finite


def _frame_mean(per_scene, finite_only=False):
    """A FrameMean with one generation and ``per_scene[token]`` frame values."""
    s = FrameMean(finite_only=finite_only)
    for tok, vals in per_scene.items():
        s.add(0, tok, vals)
    return s


def test_matches_a_hand_rolled_numpy_loop():
    rng = np.random.default_rng(7)
    scenes = [f"s{i}" for i in range(6)]
    a = {t: rng.normal(30.0, 2.0, size=4) for t in scenes}  # 4 frames a scene: the mean of scene means
    b = {t: a[t] + rng.normal(0.3, 1.0, size=4) for t in scenes}
    got = paired_bootstrap(_frame_mean(b), _frame_mean(a), scenes, resamples=500, seed=3)

    A = np.stack([a[t] for t in scenes])
    Bv = np.stack([b[t] for t in scenes])
    ref_rng = np.random.default_rng(3)
    diffs = []
    for _ in range(500):
        idx = ref_rng.integers(0, len(scenes), size=len(scenes))
        diffs.append(Bv[idx].mean() - A[idx].mean())
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert got["low"] == pytest.approx(low, abs=1e-12) and got["high"] == pytest.approx(high, abs=1e-12)
    assert got["delta"] == pytest.approx(Bv.mean() - A.mean(), abs=1e-12)
    assert got["noise"] == (low <= 0 <= high)
    assert (got["scenes"], got["resamples"], got["seed"], got["level"], got["dropped"]) == (6, 500, 3, 0.95, 0)
    assert paired_bootstrap(_frame_mean(b), _frame_mean(a), scenes, resamples=500, seed=3) == got  # fixed seed


def test_known_answers_identical_rows_and_a_constant_shift():
    scenes = ["a", "b", "c", "d"]
    x = {"a": [1.0, 2.0], "b": [4.0, 8.0], "c": [0.5, 0.25], "d": [3.0, 3.0]}
    same = paired_bootstrap(_frame_mean(x), _frame_mean(x), scenes, resamples=200)
    assert (same["low"], same["high"], same["delta"]) == (0.0, 0.0, 0.0) and same["noise"]
    d = 0.25  # dyadic values: every sum and mean is exact, so the interval is exactly [d, d]
    shifted = {t: [v + d for v in vals] for t, vals in x.items()}
    iv = paired_bootstrap(_frame_mean(shifted), _frame_mean(x), scenes, resamples=200)
    assert (iv["low"], iv["high"], iv["delta"]) == (d, d, d) and not iv["noise"]
    down = paired_bootstrap(_frame_mean(x), _frame_mean(shifted), scenes, resamples=200)
    assert (down["low"], down["high"]) == (-d, -d) and not down["noise"]


def test_one_scene_has_no_interval_and_counts_are_multisets():
    one = paired_bootstrap(_frame_mean({"a": [1.0]}), _frame_mean({"a": [2.0]}), ["a"])
    assert set(one) == {"reason"} and "1 scene" in one["reason"] and "at least 2" in one["reason"]
    c = resample_counts(5, 300, seed=1)
    assert c.shape == (300, 5) and (c.sum(axis=1) == 5).all()
    idx = np.random.default_rng(1).integers(0, 5, size=(300, 5))
    assert (c == np.stack([np.bincount(r, minlength=5) for r in idx])).all()
    assert [distinct_resamples(n) for n in (1, 2, 3, 4)] == [1, 3, 10, 35]
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(_frame_mean({"a": [1.0]}), _frame_mean({"a": [1.0]}), ["a", "b"], resamples=0)


def test_frame_mean_leaves_inf_psnr_out_like_mean_finite():
    vals = {"a": [30.0, float("inf")], "b": [20.0, 40.0], "c": [float("inf")]}
    s = _frame_mean(vals, finite_only=True)
    assert s({"a": 1, "b": 1, "c": 1}) == pytest.approx(mean_finite([v for vs in vals.values() for v in vs]))
    assert s({"a": 2, "b": 1}) == pytest.approx(mean_finite(vals["a"] * 2 + vals["b"]))
    assert s({"c": 3}) == math.inf  # all inf -> inf, as mean_finite


def test_pooled_iou_equals_bev_iou_over_the_drawn_scenes():
    rng = np.random.default_rng(0)
    maps = {t: (rng.random((3, 8, 8)) > 0.6, rng.random((3, 8, 8)) > 0.5) for t in ("a", "b", "c")}
    maps["c"] = (np.zeros((3, 8, 8), bool), maps["c"][1])  # a scene without any prediction
    stat = PooledIoU(absent_score=0.0)
    for t, (p, g) in maps.items():
        m = BEVIoU(("x", "y", "z"), mode="multilabel", absent_score=0.0)
        m.update(p, g)
        stat.add(0, t, m.tp.numpy(), m.fp.numpy(), m.fn.numpy())
    for w in ({"a": 1, "b": 1, "c": 1}, {"a": 2, "c": 1}, {"b": 3}):
        ref = BEVIoU(("x", "y", "z"), mode="multilabel", absent_score=0.0)
        for t, c in w.items():
            for _ in range(c):
                ref.update(*maps[t])
        assert stat(w) == pytest.approx(ref.compute()["mIoU"], abs=1e-12)
    empty = PooledIoU(absent_score=0.0)
    empty.add(0, "a", [0, 0], [0, 0], [0, 0])
    assert empty({"a": 1}) == 0.0  # absent from both: absent_score


def test_pooled_detection_full_set_is_the_devkit_headline():
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is needed for mAP/NDS")
    from coredit_video.evaluation.metrics_det import evaluate_detection

    rng = np.random.default_rng(1)

    def box(x, y, name="car", score=None):
        b = {"translation": [x, y, 0.8], "size": [1.9, 4.5, 1.6], "rotation": [1, 0, 0, 0],
             "velocity": [0.0, 0.0], "detection_name": name}
        if score is not None:
            b["detection_score"] = score
        return b

    stat = PooledDetection()
    preds, gts, ego = {}, {}, {}
    for s in range(3):
        for f in range(2):
            stok = f"scene{s}_f{f}"
            g = [box(*rng.uniform(-20, 20, 2)) for _ in range(3)]
            p = [box(b["translation"][0] + rng.normal(0, 0.5 + s), b["translation"][1], score=float(rng.random()))
                 for b in g[:2 + (s == 0)]]
            stat.add(0, f"scene{s}", stok, p, g, [0.0, 0.0, 0.0])
            preds[stok], gts[stok], ego[stok] = p, g, [0.0, 0.0, 0.0]
    head = evaluate_detection(preds, sorted(preds), gt=gts, ego_translation=ego)
    full = {f"scene{s}": 1 for s in range(3)}
    assert stat.metric("mAP")(full) == pytest.approx(head.mAP) and stat.metric("NDS")(full) == pytest.approx(head.NDS)
    one = {k: v for k, v in preds.items() if k.startswith("scene1")}
    alone = evaluate_detection(one, sorted(one), gt={k: gts[k] for k in one}, ego_translation=ego)
    assert stat.metric("mAP")({"scene1": 1}) == pytest.approx(alone.mAP)
    twice = stat.metric("mAP")({"scene1": 2})  # scored twice: samples renamed, not merged
    assert 0.0 <= twice <= 1.0 and len(stat._cache) == 3


def test_delta_intervals_check_the_headline_and_say_why_not():
    scenes = ["a", "b"]
    x = _frame_mean({"a": [1.0], "b": [3.0]})
    y = _frame_mean({"a": [2.0], "b": [5.0]})
    row, ref = {"PSNR": (y, scenes)}, {"PSNR": (x, scenes)}
    out = delta_intervals(row, ref, {"PSNR": 3.5, "SSIM": 0.9, "FVD": 10.0}, {"PSNR": 2.0, "SSIM": 0.8, "FVD": None},
                          ["PSNR", "SSIM", "FVD"], resamples=100, missing={"SSIM": "not kept"})
    assert out["PSNR"]["low"] == 1.0 and out["PSNR"]["high"] == 2.0 and not out["PSNR"]["noise"]
    assert out["SSIM"] == {"reason": "not kept"} and "FVD" not in out  # no Δ without both values
    bad = delta_intervals(row, ref, {"PSNR": 3.0}, {"PSNR": 2.0}, ["PSNR"], resamples=10)
    assert "not the headline" in bad["PSNR"]["reason"]
    other = delta_intervals(row, {"PSNR": (x, ["a", "c"])}, {"PSNR": 3.5}, {"PSNR": 2.0}, ["PSNR"], resamples=10)
    assert "different scenes" in other["PSNR"]["reason"]
