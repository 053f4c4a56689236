"""The embedded default end to end on a tiny case: generate (dense and pruned) in MagicDrive-V2's test layout
with tools/generate.py, then score both with tools/eval_bev.py and check the Table-4-shaped report."""
import json
import os
import subprocess
import sys
import warnings

import pytest

from tests.dist.common import REPO

TINY = ["data.frames=2", "data.image_hw=(32,56)", "work_dir='{work}'"]


def run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.skipif(not any(__import__("importlib").util.find_spec(m) for m in ("av", "imageio", "cv2")),
                    reason="no video writer (pip install av)")
def test_generate_dense_and_pruned_then_evaluate(tmp_path):
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is needed for mAP/NDS (pip install '.[eval]')")
    opts = [o.format(work=tmp_path / "w") for o in TINY]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"ratios": [0.3, 0.3, 0.3]}))
    for mode, extra in (("dense", ["--dense"]), ("pruned", ["--plan", str(plan)])):
        run(["tools/generate.py", "configs/tiny_cpu.py", "--cfg-options", *opts, "--ckpt", "none", *extra,
             "--out", str(tmp_path / mode), "--num-samples", "1", "--steps", "2"])
    gen = json.loads((tmp_path / "pruned" / "generation.json").read_text())
    assert gen["pruned"] and gen["mean_ratio"] == pytest.approx(0.3) and gen["videos"] == 6
    token_dirs = os.listdir(tmp_path / "pruned" / "gen_video")
    assert len(token_dirs) == 1 and token_dirs[0].endswith("_gen0")
    token = token_dirs[0][:-5]
    assert sorted(os.listdir(tmp_path / "pruned" / "gen_video" / token_dirs[0]))[0] == f"{token}_CAM_BACK.mp4"
    assert os.path.isdir(tmp_path / "dense" / "gt_video" / token)

    out = tmp_path / "eval"
    proc = run(["tools/eval_bev.py", str(tmp_path / "dense"), str(tmp_path / "pruned"), "--config",
                "configs/eval_tiny_cpu.py", "--cfg-options", "data.num_samples=1",
                "protocol.target_hw=(32,56)", "protocol.generation_hw=(32,56)", "protocol.key_frames=(0,1)",
                "protocol.fvd_resize_hw=(32,56)", "protocol.fvd_crop_hw=(32,56)",
                "data.train_config=" + str(_tiny_config(tmp_path, opts)), f"data.nuscenes_dir={tmp_path / 'nusc'}",
                "--names", "dense", "CoReDiT", "--ratios", "0", "auto", "--out", str(out)])
    assert (tmp_path / "nusc" / "v1.0-synthetic" / "sample_annotation.json").is_file()  # devkit ground truth
    report = json.loads((out / "eval.json").read_text())
    rows = {r["method"]: r for r in report["results"]}
    assert set(rows) == {"dense", "CoReDiT"} and rows["CoReDiT"]["ratio"] == pytest.approx(0.3)
    for r in rows.values():
        for col in ("mAP", "NDS", "mIoU", "PSNR", "SSIM"):
            assert r["metrics"][col] is not None, (r["method"], col)
        assert "I3D" in r["skipped"]["FVD"] and "LPIPS" in r["skipped"]["LPIPS"]
    assert "| dense" in proc.stdout and "CoReDiT" in proc.stdout  # the Markdown table
    # one scene: the Δ row says there is no interval instead of failing
    assert "no interval: 1 scene: a bootstrap over scenes needs at least 2" in (out / "eval.md").read_text()
    assert rows["CoReDiT"]["delta_intervals"]["mAP"] == {"reason": "1 scene: a bootstrap over scenes needs at least 2"}
    from PIL import Image

    with Image.open(out / "eval_frames.png") as im:  # ground truth, dense, CoReDiT strips of the one scene
        assert im.format == "PNG" and 0.15 < im.height / im.width < 0.6, im.size

    # FVD end to end with a TorchScript stand-in for I3D (same contract: [B, 3, T, R, R] in [-1, 1] -> [B, D])
    i3d = str(tmp_path / "i3d.pt")
    _stand_in_i3d(i3d)
    run(["tools/eval_bev.py", str(tmp_path / "dense"), "--config", "configs/eval_tiny_cpu.py", "--cfg-options",
         "data.num_samples=1", "protocol.target_hw=(32,56)", "protocol.generation_hw=(32,56)",
         "protocol.key_frames=(0,1)", "protocol.fvd_resize_hw=(32,56)", "protocol.fvd_crop_hw=(32,56)",
         "protocol.fvd_i3d_resolution=16", "data.train_config=" + str(_tiny_config(tmp_path, opts)),
         "--names", "dense", "--ratios", "0", "--out", str(tmp_path / "eval_fvd"), "--i3d-weights", i3d])
    row = json.loads((tmp_path / "eval_fvd" / "eval.json").read_text())["results"][0]
    assert "FVD" not in row["skipped"]
    assert row["metrics"]["FVD"] > 0 and row["metrics"]["FVD"] < float("inf")  # generated clips are not the gt
    bad = subprocess.run([sys.executable, "tools/eval_bev.py", str(tmp_path / "dense"), "--config",
                          "configs/eval_tiny_cpu.py", "--i3d-weights", str(tmp_path / "missing.pt")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "--i3d-weights" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "tools/eval_bev.py", str(tmp_path / "dense"), "--config",
                          "configs/eval_tiny_cpu.py", "--bootstrap", "-1"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "--bootstrap -1: give a number of resamples >= 0" in bad.stderr


@pytest.mark.skipif(not any(__import__("importlib").util.find_spec(m) for m in ("av", "imageio", "cv2")),
                    reason="no video writer (pip install av)")
def test_two_scenes_give_every_delta_a_bootstrap_interval(tmp_path):
    """Two scenes: every Δ with per-scene values gets an interval whose full-set value is the headline (the
    recomputation over scenes is checked against it; a mismatch would leave a reason instead)."""
    pytest.importorskip("nuscenes", reason="nuscenes-devkit is needed for mAP/NDS (pip install '.[eval]')")
    opts = [o.format(work=tmp_path / "w") for o in TINY]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"ratios": [0.5, 0.5, 0.5]}))
    for mode, extra in (("dense", ["--dense"]), ("pruned", ["--plan", str(plan)])):
        run(["tools/generate.py", "configs/tiny_cpu.py", "--cfg-options", *opts, "--ckpt", "none", *extra,
             "--out", str(tmp_path / mode), "--num-samples", "2", "--steps", "2"])
    out = tmp_path / "eval"
    run(["tools/eval_bev.py", str(tmp_path / "dense"), str(tmp_path / "pruned"), "--config",
         "configs/eval_tiny_cpu.py", "--cfg-options", "data.num_samples=2",
         "protocol.target_hw=(32,56)", "protocol.generation_hw=(32,56)", "protocol.key_frames=(0,1)",
         "protocol.fvd_resize_hw=(32,56)", "protocol.fvd_crop_hw=(32,56)",
         "data.train_config=" + str(_tiny_config(tmp_path, opts)), f"data.nuscenes_dir={tmp_path / 'nusc'}",
         "--names", "dense", "CoReDiT", "--ratios", "0", "auto", "--out", str(out), "--bootstrap", "200"])
    rows = {r["method"]: r for r in json.loads((out / "eval.json").read_text())["results"]}
    ivs = rows["CoReDiT"]["delta_intervals"]
    assert set(ivs) == {"mAP", "NDS", "mIoU", "PSNR", "SSIM"} and rows["dense"]["delta_intervals"] == {}
    for col, iv in ivs.items():
        assert "reason" not in iv, (col, iv)
        assert (iv["scenes"], iv["resamples"], iv["seed"]) == (2, 200, 0)
        delta = rows["CoReDiT"]["metrics"][col] - rows["dense"]["metrics"][col]
        assert iv["delta"] == pytest.approx(delta, rel=1e-6, abs=1e-9)
        assert iv["low"] <= iv["high"] and iv["noise"] == (iv["low"] <= 0 <= iv["high"])
    md = (out / "eval.md").read_text()
    assert "paired bootstrap (2 scenes, 200 resamples, seed 0)" in md and "only 3 distinct resamples" in md


def _stand_in_i3d(path):
    import torch

    class TinyI3D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, padding=1)
            self.head = torch.nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
            return self.head(h)

    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the I3D contract is a TorchScript file
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyI3D()).save(path)


def _tiny_config(tmp_path, opts):
    """A config file equal to configs/tiny_cpu.py with the tiny overrides (eval reads the data from it)."""
    path = tmp_path / "tiny.py"
    lines = [f"_base_ = [{os.path.join(REPO, 'configs', 'tiny_cpu.py')!r}]",
             "data = dict(frames=2, image_hw=(32, 56))", f"work_dir = {str(tmp_path / 'w')!r}"]
    path.write_text("\n".join(lines) + "\n")
    return path
