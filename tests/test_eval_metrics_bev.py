"""BEV IoU on hand-made rasters."""
import numpy as np
import pytest

from coredit_video.evaluation.metrics_bev import BEVIoU, bev_iou


def test_iou_known_label_maps():
    gt = np.array([[1, 1, 0, 0],
                   [1, 1, 0, 2],
                   [0, 0, 0, 2],
                   [0, 0, 0, 0]])
    pred = np.array([[1, 0, 0, 0],
                     [1, 0, 1, 2],
                     [0, 0, 1, 2],
                     [0, 0, 0, 0]])
    r = bev_iou(pred, gt)
    # divider: TP 2, FP 2, FN 2 -> 1/3; ped_crossing: perfect; boundary: absent in both -> 0 (W-CODA absent_score)
    assert r["divider"] == pytest.approx(1 / 3)
    assert r["ped_crossing"] == 1.0
    assert r["boundary"] == 0.0
    assert r["mIoU"] == pytest.approx((1 / 3 + 1.0 + 0.0) / 3)
    assert bev_iou(pred, gt, absent_score=float("nan"))["boundary"] != bev_iou(pred, gt)["boundary"]


def test_iou_accumulates_over_samples():
    m = BEVIoU()
    a_gt = np.zeros((4, 4), int)
    a_gt[0, 0] = 1
    m.update(a_gt, a_gt)  # sample IoU 1 for divider
    b_pred = np.zeros((4, 4), int)
    b_pred[1:, 0] = 1
    m.update(b_pred, np.zeros((4, 4), int))  # sample IoU 0 (3 false positives)
    r = m.compute()
    assert r["divider"] == pytest.approx(1 / 4)  # sums: TP 1 / (TP 1 + FP 3), not the mean 0.5 of per-sample IoUs
    assert m.samples == 2
    m.reset()
    assert m.tp.sum() == 0


def test_iou_multilabel_and_bad_inputs():
    gt = np.zeros((3, 5, 5), bool)
    gt[0, 0, :] = True
    gt[2, :, 4] = True
    pred = gt.copy()
    pred[2, 0, 4] = False
    r = bev_iou(pred[None], gt[None], mode="multilabel")
    assert r["divider"] == 1.0 and r["boundary"] == pytest.approx(4 / 5) and r["ped_crossing"] == 0.0
    with pytest.raises(TypeError):
        BEVIoU().update(gt.astype(float), gt.astype(float))
    with pytest.raises(ValueError):
        BEVIoU().update(np.full((2, 2), 7), np.zeros((2, 2), int))


def test_mean_iou_summaries():
    from coredit_video.evaluation.metrics_bev import mean_iou_summaries

    r = mean_iou_summaries([{"divider": 0.2, "mIoU": 0.3}, {"divider": 0.4, "mIoU": 0.5, "extra": 1.0}])
    assert r == pytest.approx({"divider": 0.3, "mIoU": 0.4})
