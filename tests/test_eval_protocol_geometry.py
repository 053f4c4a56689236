"""EvalProtocol validation, the generation crop round trip, and clip I/O / layout parsing."""
import os

import numpy as np
import pytest
import torch

from coredit_video.evaluation import EvalProtocol, ProtocolError, w_coda
from coredit_video.evaluation.geometry import apply_generation_crop, content_slice, undo_generation_crop
from coredit_video.evaluation.video_io import (
    available_readers,
    available_writers,
    find_clips,
    find_gt_clips,
    parse_clip_name,
    read_video,
    write_video,
)

SMALL = dict(target_hw=(90, 160), generation_hw=(84, 160), fvd_allow_padding=True)


def _smooth_frames(T, H, W, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    out = []
    for t in range(T):
        a, b, c = g.uniform(0.5, 2.0, 3)
        img = np.stack([np.sin(a * np.pi * xx + t), np.cos(b * np.pi * yy), np.sin(c * np.pi * (xx + yy))], -1)
        out.append(((img + 1) * 0.5 * 200 + 20).astype(np.uint8))
    return np.stack(out)


def test_w_coda_defaults():
    p = w_coda()
    assert p.target_hw == (900, 1600) and p.key_frames == (0, 6, 12)
    assert p.padding_rows() == (0, 52)  # 848x1600 -> 52 padded rows at the top
    assert p.padding_rows((424, 800)) == (0, 52)
    assert p.padding_rows((900, 1600)) == (0, 0)
    assert p.fvd_padded_rows_in_crop() == 0
    assert p.cameras[1] == "CAM_FRONT"
    q = EvalProtocol.from_dict(p.to_dict())
    assert q == p
    assert p.replace(key_frames=[0, 4]).key_frames == (0, 4)


@pytest.mark.parametrize("key,value", [
    ("target_hw", (0, 10)), ("resize_mode", "crop"), ("pad_side", "left"), ("pad_value", 300),
    ("key_frames", (6, 0)), ("key_frames", ()), ("cameras", ("CAM_FRONT", "CAM_FRONT")), ("num_generations", 0),
    ("miou_classes", ("divider", "divider")), ("ssim_window", 10), ("fvd_crop_hw", (224, 400)),
    ("fvd_crop_hw", (300, 400)), ("generation_hw", (1000, 1600)),
])
def test_protocol_errors_name_the_key(key, value):
    with pytest.raises(ProtocolError) as e:
        w_coda(**{key: value})
    assert e.value.key == key
    assert f"EvalProtocol.{key}" in str(e.value)


def test_unknown_key():
    with pytest.raises(ProtocolError, match="unknown key"):
        EvalProtocol.from_dict({"frames": (0,)})


def test_round_trip_same_width_is_exact():
    p = w_coda(**SMALL)
    real = _smooth_frames(2, 90, 160)
    gen = apply_generation_crop(real, p)
    assert gen.shape == (2, 84, 160, 3)
    assert np.array_equal(gen, real[:, 6:])  # the top 6 rows are what the generator never sees
    back = undo_generation_crop(gen, p)
    assert back.shape == real.shape and back.dtype == np.uint8
    assert np.all(back[:, :6] == 128)  # padding rows [0, 6)
    assert np.array_equal(back[:, 6:], real[:, 6:])
    assert content_slice((90, 160), p) == slice(6, 90)
    assert content_slice((84, 160), p) == slice(0, 84)


def test_round_trip_half_resolution():
    p = w_coda(target_hw=(90, 160), generation_hw=(42, 80), fvd_allow_padding=True)
    real = _smooth_frames(2, 90, 160, seed=1)
    gen = apply_generation_crop(real, p)
    assert gen.shape == (2, 42, 80, 3)
    back = undo_generation_crop(gen, p)
    assert back.shape == (2, 90, 160, 3)
    assert np.all(back[:, :6] == 128)
    err = np.abs(back[:, 8:-2, 2:-2].astype(float) - real[:, 8:-2, 2:-2].astype(float)).mean()
    assert err < 4.0  # bicubic down + up of a smooth image
    # torch in, torch out
    tb = undo_generation_crop(torch.from_numpy(gen), p)
    assert isinstance(tb, torch.Tensor) and torch.equal(tb, torch.from_numpy(back))


def test_undo_848_and_stretch():
    p = w_coda()
    frame = np.full((1, 424, 800, 3), 200, np.uint8)
    out = undo_generation_crop(frame, p)
    assert out.shape == (1, 900, 1600, 3)
    assert np.all(out[0, :52] == 128) and np.all(out[0, 52:] == 200)
    same = np.zeros((1, 900, 1600, 3), np.uint8)
    assert undo_generation_crop(same, p) is same
    s = w_coda(resize_mode="stretch", target_hw=(90, 160), generation_hw=None)
    assert undo_generation_crop(np.zeros((1, 45, 60, 3), np.uint8), s).shape == (1, 90, 160, 3)
    with pytest.raises(ValueError, match="rows high"):
        undo_generation_crop(np.zeros((1, 100, 160, 3), np.uint8), w_coda(**SMALL))


def test_parse_clip_name():
    assert parse_clip_name("abc123_CAM_FRONT_LEFT.mp4") == "CAM_FRONT_LEFT"
    assert parse_clip_name("abc123_CAM_BACK.mp4", token="abc123") == "CAM_BACK"
    assert parse_clip_name("other_CAM_BACK.mp4", token="abc123") is None
    assert parse_clip_name("abc123_CAM_BACK.txt") is None


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_find_clips_layout(tmp_path):
    cams = ("CAM_FRONT", "CAM_BACK")
    for tok in ("t1", "t2"):
        for k in (0, 1):
            for cam in reversed(cams):
                _touch(str(tmp_path / "gen_video" / f"{tok}_gen{k}" / f"{tok}_{cam}.mp4"))
        for cam in cams:
            _touch(str(tmp_path / "gt_video" / tok / f"{tok}_{cam}.mp4"))
    _touch(str(tmp_path / "gen_video" / "t1_gen0" / "notes.txt"))
    clips = find_clips(str(tmp_path / "gen_video"), cams)
    assert sorted(clips) == ["t1", "t2"] and sorted(clips["t1"]) == [0, 1]
    assert list(clips["t2"][1]) == list(cams)  # protocol order, matched by name
    assert clips["t2"][1]["CAM_BACK"].endswith(os.path.join("t2_gen1", "t2_CAM_BACK.mp4"))
    gt = find_gt_clips(str(tmp_path / "gt_video"), cams)
    assert gt["t1"]["CAM_FRONT"].endswith(os.path.join("t1", "t1_CAM_FRONT.mp4"))
    with pytest.raises(FileNotFoundError, match="CAM_FRONT_LEFT"):
        find_clips(str(tmp_path / "gen_video"), cams + ("CAM_FRONT_LEFT",))


@pytest.mark.skipif(not available_writers() or not available_readers(), reason="no video reader/writer installed")
def test_write_read_video(tmp_path):
    frames = _smooth_frames(8, 48, 64)
    path = write_video(str(tmp_path / "clip.mp4"), frames, fps=12)
    for backend in available_readers():
        got = read_video(path, backend=backend)
        assert got.shape == frames.shape and got.dtype == np.uint8, backend
        assert np.abs(got.astype(float) - frames.astype(float)).mean() < 12, backend  # lossy codec
        sub = read_video(path, [0, 3, 6], backend=backend)
        assert np.array_equal(sub, got[[0, 3, 6]]), backend
        with pytest.raises(IndexError):
            read_video(path, [8], backend=backend)


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(str(tmp_path / "nope.mp4"))
