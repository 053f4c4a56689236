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
