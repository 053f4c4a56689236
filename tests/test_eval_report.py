"""Report: the Table 4 Markdown layout, skipped-metric footnotes, JSON and PNG plots."""
import json

import pytest

from coredit_video.evaluation import w_coda
from coredit_video.evaluation.report import MethodResult, markdown_table, write_report


def _rows():
    dense = MethodResult("MagicDrive-V2", 0.0,
                         metrics={"mAP": 0.2040, "NDS": 0.3100, "mIoU": 0.3971, "PSNR": float("inf"), "SSIM": 1.0,
                                  "FVD": 94.84},
                         skipped={"LPIPS": "no LPIPS weights given"},
                         per_class_ap={"car": 0.40, "pedestrian": 0.20}, per_camera_psnr={"CAM_FRONT": 30.0})
    pruned = MethodResult("MagicDrive-V2", 0.26,
                          metrics={"mAP": 0.1990, "NDS": 0.3050, "mIoU": 0.3900, "PSNR": 31.25, "SSIM": 0.9312,
                                   "FVD": 96.10},
                          skipped={"LPIPS": "no LPIPS weights given"},
                          per_class_ap={"car": 0.39, "pedestrian": 0.19},
                          per_camera_psnr={"CAM_FRONT": 31.0, "CAM_BACK": 31.5})
    return dense, pruned


def test_markdown_table_layout():
    dense, pruned = _rows()
    md = markdown_table([pruned, dense])
    lines = md.splitlines()
    assert lines[0] == ("| method | ratio | mAP (%) | NDS (%) | mIoU (%) | PSNR | SSIM | LPIPS | FVD | fidelity_PSNR "
                        "| fidelity_SSIM |")
    assert lines[3].startswith("| MagicDrive-V2 | 0 (dense) | 20.40 | 31.00 | 39.71 | inf | 1.0000 | -[^1] | 94.84 |")
    assert lines[4].startswith("| MagicDrive-V2 | 0.26 | 19.90 | 30.50 | 39.00 | 31.25 | 0.9312 | -[^1] | 96.10 |")
    assert lines[5].startswith("| Δ vs MagicDrive-V2 dense | | -0.50 | -0.50 | -0.71 |  | -0.0688 |  | +1.26 |")
    assert "[^1]: LPIPS: no LPIPS weights given" in md
    assert md.count("[^1]:") == 1  # one footnote for the same reason
    only = markdown_table([MethodResult("X", 0.5, metrics={"mAP": 0.1})])
    assert "Δ" not in only and "[^1]: NDS: not computed" in only
    with pytest.raises(ValueError, match="unknown metric"):
        MethodResult("X", metrics={"BLEU": 1.0})


def test_write_report(tmp_path):
    dense, pruned = _rows()
    paths = write_report([dense, pruned], str(tmp_path / "rep"), name="table4", protocol=w_coda())
    data = json.load(open(paths["json"]))
    assert [r["ratio"] for r in data["results"]] == [0.0, 0.26]
    assert data["results"][0]["metrics"]["PSNR"] == "inf" and data["results"][0]["metrics"]["LPIPS"] is None
    assert data["results"][1]["skipped"] == {"LPIPS": "no LPIPS weights given", "fidelity_PSNR": "not computed",
                                             "fidelity_SSIM": "not computed"}
    assert data["protocol"]["key_frames"] == [0, 6, 12]
    assert open(paths["markdown"]).read().startswith("| method |")
    assert MethodResult.from_dict(data["results"][1]).value("SSIM") == pytest.approx(0.9312)
    pytest.importorskip("matplotlib")
    for key in ("class_ap_png", "camera_psnr_png"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_reference_rows_come_first_without_delta_rows():
    dense, pruned = _rows()
    codec = MethodResult("gt_codec", 0.0, metrics={"mAP": 0.5, "PSNR": 38.0}, reference=True)
    pre = MethodResult("pretrained", 0.0, metrics={"mAP": 0.3, "PSNR": 12.0}, reference=True)
    pruned.metrics.update(fidelity_PSNR=30.5, fidelity_SSIM=0.95)
    lines = markdown_table([pruned, codec, dense, pre]).splitlines()  # references keep their given order
    body = [ln for ln in lines[3:] if ln.startswith("| ") and not ln.startswith("[^")]
    assert [ln.split(" | ")[0][2:] for ln in body][:4] == ["gt_codec", "pretrained", "MagicDrive-V2", "MagicDrive-V2"]
    assert body[0].split(" | ")[1] == "reference" and body[1].split(" | ")[1] == "reference"
    assert sum("Δ" in ln for ln in body) == 1  # only the pruned row gets one, against the dense row (not gt_codec)
    assert body[3].rstrip().endswith("| 30.50 | 0.9500 |")
    d = MethodResult.from_dict(codec.to_dict())
    assert d.reference and not d.is_dense


def test_delta_row_names_dense_once():
    dense = MethodResult("dense", 0.0, metrics={"mAP": 0.2})
    pruned = MethodResult("dense", 0.26, metrics={"mAP": 0.1})
    md = markdown_table([dense, pruned])
    assert "| Δ vs dense | |" in md and "dense dense" not in md


def test_class_ap_plot_says_all_zero_and_psnr_legend_is_outside_the_bars():
    pytest.importorskip("matplotlib")
    from coredit_video.evaluation.report import bars_figure

    zero = [MethodResult("m", 0.0, per_class_ap={"car": 0.0, "bus": 0.0}),
            MethodResult("m", 0.5, per_class_ap={"car": 0.0, "bus": 0.0})]
    fig = bars_figure(zero, "per_class_ap", "AP", "t", empty_note="every per-class AP is 0")
    ax = fig.axes[0]
    assert not ax.patches  # no bar drawn ...
    assert [t.get_text() for t in ax.texts] == ["every per-class AP is 0"]  # ... the reason instead
    dense, pruned = _rows()
    fig = bars_figure([dense, pruned], "per_camera_psnr", "PSNR (dB)", "t")
    ax = fig.axes[0]
    assert ax.patches
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: it cannot cover a bar


def test_delta_row_carries_bootstrap_intervals_and_marks_noise(tmp_path):
    from coredit_video.evaluation.bootstrap import no_interval

    dense, pruned = _rows()
    iv = dict(scenes=2, resamples=1000, seed=0, level=0.95, dropped=0)
    pruned.delta_intervals = {"mAP": dict(iv, delta=-0.005, low=-0.02, high=0.01, noise=True),
                              "NDS": dict(iv, delta=-0.005, low=-0.009, high=-0.001, noise=False),
                              "SSIM": dict(iv, delta=-0.0688, low=-0.07, high=-0.06, noise=False),
                              "FVD": no_interval("FVD is a distance between distributions")}
    md = markdown_table([dense, pruned])
    delta = next(ln for ln in md.splitlines() if ln.startswith("| Δ"))
    cells = [c.strip() for c in delta.split("|")]  # "", label, ratio, mAP, NDS, mIoU, PSNR, SSIM, LPIPS, FVD
    assert cells[3] == "-0.50 [-2.00, +1.00] (noise)"  # contains 0: noise (percent columns scaled)
    assert cells[4] == "-0.50 [-0.90, -0.10]" and cells[7] == "-0.0688 [-0.0700, -0.0600]"
    assert cells[5] == "-0.71"  # no interval computed: the plain difference, as before
    assert cells[9] == "+1.26[^4]" and "[^4]: Δ FVD: no interval: FVD is a distance between distributions" in md
    assert "paired bootstrap (2 scenes, 1000 resamples, seed 0)" in md and "(noise): the interval contains 0" in md
    assert "only 3 distinct resamples" in md and "does not establish a difference" in md
    assert "mAP / NDS: nuScenes devkit on the pooled detections" in md and "SSIM: mean over" in md
    paths = write_report([dense, pruned], str(tmp_path), plots=False)
    row = json.load(open(paths["json"]))["results"][1]
    assert row["delta_intervals"]["mAP"]["noise"] is True
    assert MethodResult.from_dict(row).delta_intervals["NDS"]["high"] == -0.001


def test_one_scene_says_no_interval_and_no_intervals_leave_the_table_as_it_was():
    dense, pruned = _rows()
    plain = markdown_table([dense, pruned])
    assert "bootstrap" not in plain
    pruned.delta_intervals = {c: {"reason": "1 scene: a bootstrap over scenes needs at least 2"}
                              for c in ("mAP", "NDS", "mIoU", "SSIM")}
    md = markdown_table([dense, pruned])
    assert md.count("no interval: 1 scene: a bootstrap over scenes needs at least 2") == 4  # one footnote a column
    assert "paired bootstrap (" not in md  # no interval, no note on them
