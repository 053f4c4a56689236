"""Fidelity to dense: each generation is compared with the dense run's generation of the same sample and index."""
import os

import numpy as np
import pytest

pytest.importorskip("av", reason="video IO needs PyAV (pip install '.[eval]')")

from coredit_video.evaluation.pipeline import fidelity_metrics  # noqa: E402
from coredit_video.evaluation.protocol import protocol_from_config  # noqa: E402
from coredit_video.evaluation.video_io import read_video, write_video  # noqa: E402
from tests.dist.common import REPO  # noqa: E402

TOKEN = "a" * 32


def _clip(seed, T=2, H=64, W=112):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([np.sin(xx / (7 + seed)) * 60 + 128, np.cos(yy / (5 + seed)) * 60 + 128,
                     (xx + yy) % 256 * 0.5 + 60], -1)
    return np.stack([np.clip(base + g.normal(0, 2, base.shape), 0, 255) for _ in range(T)]).astype(np.uint8)


def _write(root, k, clips, cams):
    for cam, clip in zip(cams, clips):
        write_video(os.path.join(root, "gen_video", f"{TOKEN}_gen{k}", f"{TOKEN}_{cam}.mp4"), clip)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_pairs_same_index_and_orders_by_closeness(tmp_path):
    protocol = protocol_from_config(os.path.join(REPO, "configs", "eval_tiny_cpu.py"))
    cams = protocol.cameras
    dense = [[_clip(10 * k + c) for c in range(len(cams))] for k in range(2)]
    for k in range(2):
        _write(tmp_path / "dense", k, dense[k], cams)
        noisy = [np.clip(c.astype(np.int16) + np.random.default_rng(k).integers(-8, 9, c.shape), 0, 255)
                 .astype(np.uint8) for c in dense[k]]
        _write(tmp_path / "close", k, noisy, cams)
        _write(tmp_path / "swapped", k, dense[1 - k], cams)  # another sample's content: must score low
    close = fidelity_metrics(str(tmp_path / "close"), str(tmp_path / "dense"), protocol)
    swapped = fidelity_metrics(str(tmp_path / "swapped"), str(tmp_path / "dense"), protocol)
    assert close["fidelity_PSNR"] > swapped["fidelity_PSNR"] + 10
    assert close["fidelity_SSIM"] > swapped["fidelity_SSIM"]
    # against PSNR over the decoded key frames computed here (the protocol averages per frame)
    ref = []
    for k in range(2):
        for cam in cams:
            a = read_video(str(tmp_path / "close" / "gen_video" / f"{TOKEN}_gen{k}" / f"{TOKEN}_{cam}.mp4"))
            b = read_video(str(tmp_path / "dense" / "gen_video" / f"{TOKEN}_gen{k}" / f"{TOKEN}_{cam}.mp4"))
            ref += [_psnr(a[f], b[f]) for f in protocol.key_frames if f < len(a)]
    assert close["fidelity_PSNR"] == pytest.approx(np.mean(ref), abs=0.5)


def test_missing_dense_counterpart_is_named(tmp_path):
    protocol = protocol_from_config(os.path.join(REPO, "configs", "eval_tiny_cpu.py"))
    _write(tmp_path / "pruned", 3, [_clip(c) for c in range(len(protocol.cameras))], protocol.cameras)
    _write(tmp_path / "dense", 0, [_clip(c) for c in range(len(protocol.cameras))], protocol.cameras)
    with pytest.raises(FileNotFoundError, match="no generation in .* has a dense counterpart"):
        fidelity_metrics(str(tmp_path / "pruned"), str(tmp_path / "dense"), protocol)
