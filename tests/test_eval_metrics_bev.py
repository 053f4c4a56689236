"""BEV IoU on hand-made rasters and the map-polyline rasteriser (grid orientation, clipping, overlap filter)."""
import numpy as np
import pytest

from coredit_video.evaluation import w_coda
from coredit_video.evaluation.metrics_bev import (
    BEVIoU,
    bev_iou,
    labels_to_masks,
    logits_to_labels,
    masks_to_labels,
    rasterize_polylines,
    world_to_grid,
)


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


def test_iou_multilabel_and_conversions():
    gt = np.zeros((3, 5, 5), bool)
    gt[0, 0, :] = True
    gt[2, :, 4] = True
    pred = gt.copy()
    pred[2, 0, 4] = False
    r = bev_iou(pred[None], gt[None], mode="multilabel")
    assert r["divider"] == 1.0 and r["boundary"] == pytest.approx(4 / 5) and r["ped_crossing"] == 0.0
    labels = masks_to_labels(gt)
    assert labels[0, 4] == 3  # overlap: the highest class wins
    assert labels[0, 0] == 1 and labels[2, 2] == 0
    back = labels_to_masks(labels, 3)
    assert back.shape == gt.shape and back[0, 0, 0] and not back[0, 0, 4]
    logits = np.zeros((4, 2, 2))
    logits[2, 1, 1] = 5.0
    assert logits_to_labels(logits).tolist() == [[0, 0], [0, 2]]
    with pytest.raises(TypeError):
        BEVIoU().update(gt.astype(float), gt.astype(float))
    with pytest.raises(ValueError):
        BEVIoU().update(np.full((2, 2), 7), np.zeros((2, 2), int))


def test_grid_orientation():
    p = w_coda()
    cr = world_to_grid(np.array([[-30.0, -15.0], [0.0, 0.0], [20.0, 10.0]]), p)
    assert np.allclose(cr, [[0, 0], [200, 100], [1000 / 3, 500 / 3]])  # (col, row): x -> col, y -> row


def _rows_cols(mask):
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    return rows, cols


@pytest.mark.parametrize("backend", ["numpy", "cv2"])
def test_rasterize_line_clipped_and_thick(backend):
    if backend == "cv2":
        pytest.importorskip("cv2")
    p = w_coda()
    # a divider along x at y = 0, longer than the grid: clipped to x in [-30, 30]; OpenCV's thickness 5 covers 7 rows
    masks = rasterize_polylines([[np.array([[-40.0, 0.0], [40.0, 0.0]])], [], []], p, backend=backend)
    assert masks.shape == (3, 200, 400) and masks.dtype == bool
    rows, cols = _rows_cols(masks[0])
    assert rows.tolist() == [97, 98, 99, 100, 101, 102, 103]
    assert cols[0] == 0 and cols[-1] == 399
    assert not masks[1:].any()
    # a ped-crossing segment ahead-left: x 15..20 m, y = 10 m -> cols 300..333, row 166
    masks = rasterize_polylines([[], [np.array([[15.0, 10.0], [20.0, 10.0]])], []], p, backend=backend)
    rows, cols = _rows_cols(masks[1])
    assert rows.tolist() == [163, 164, 165, 166, 167, 168, 169]
    assert cols[0] == 297 and cols[-1] == 336  # cols 300..333 plus the round caps


def test_rasterize_overlap_filter_and_vector_dicts():
    p = w_coda()
    vectors = [
        {"pts": np.array([[-10.0, 0.0, 0.0], [10.0, 0.0, 0.0]]), "pts_num": 2, "type": 0},  # divider along x
        {"pts": np.array([[0.0, -10.0, 0.0], [0.0, 10.0, 0.0]]), "pts_num": 2, "type": 2},  # boundary along y
        {"pts": np.array([[5.0, 5.0], [6.0, 5.0]]), "pts_num": 2, "type": -1},  # "others": dropped
    ]
    masks = rasterize_polylines(vectors, p, backend="numpy")
    assert masks[2, 100, 200] and not masks[0, 100, 200]  # the boundary wins the crossing
    # the divider is cleared within the boundary's line drawn with thickness 5 + 4 (5 cells each side)
    assert not masks[0, 100, 195:206].any()
    assert masks[0, 100, 194] and masks[0, 100, 206]
    assert not (masks.sum(axis=0) > 1).any()  # channels exclusive
    loose = rasterize_polylines(vectors, p, backend="numpy", overlap_filter=False)
    assert loose[0, 100, 200] and loose[2, 100, 200]
    with pytest.raises(ValueError):
        rasterize_polylines([[], []], p)


def test_mean_iou_summaries():
    from coredit_video.evaluation.metrics_bev import mean_iou_summaries

    r = mean_iou_summaries([{"divider": 0.2, "mIoU": 0.3}, {"divider": 0.4, "mIoU": 0.5, "extra": 1.0}])
    assert r == pytest.approx({"divider": 0.3, "mIoU": 0.4})


def test_layout_conversion():
    from coredit_video.evaluation.metrics_bev import forward_up_to_wcoda, wcoda_to_forward_up

    p = w_coda()
    m = np.zeros((3, 200, 400), bool)
    col, row = world_to_grid(np.array([[20.0, 10.0]]), p)[0].astype(int)  # 20 m ahead, 10 m left
    m[1, row, col] = True
    f = wcoda_to_forward_up(m)
    assert f.shape == (3, 400, 200)
    r, c = np.argwhere(f[1])[0]
    assert (r, c) == (int((30 - 20) / 0.15), int((15 - 10) / 0.15))  # row 0 ahead, col 0 on the left
    assert np.array_equal(forward_up_to_wcoda(f), m)
