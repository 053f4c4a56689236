"""PSNR / SSIM against closed forms (and scikit-image when installed), Frechet distance, FVD and LPIPS wrappers."""
import math

import numpy as np
import pytest
import torch

from coredit_video.evaluation import w_coda
from coredit_video.evaluation.metrics_video import (
    FVDFeatureExtractor,
    LPIPSAlex,
    LPIPSMetric,
    MetricSkipped,
    compare_clips,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    fvd,
    fvd_preprocess,
    mean_finite,
    psnr,
    ssim,
)


def _img(seed, shape=(2, 32, 40, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_psnr_identical_and_offset():
    a = _img(0)
    assert torch.isinf(psnr(a, a, 255)).all()
    b = np.clip(a.astype(int) + 0, 0, 255)
    a2 = np.full((3, 16, 16, 3), 100, np.uint8)
    for d in (1, 5, 20):
        got = psnr(a2, a2 + np.uint8(d), data_range=255)
        assert got.shape == (3,)
        assert torch.allclose(got, torch.full((3,), 20 * math.log10(255 / d), dtype=torch.float64))
    # data range is explicit: the same offset on [0, 1] data
    got = psnr(a2 / 255.0, (a2 + 5) / 255.0, data_range=1.0)
    assert abs(float(got[0]) - 20 * math.log10(255 / 5)) < 1e-9
    assert b.shape == a.shape
    with pytest.raises(ValueError):
        psnr(a, a, data_range=None)


def test_ssim_identical_and_constant_closed_form():
    a = _img(1)
    assert torch.allclose(ssim(a, a, 255), torch.ones(2, dtype=torch.float64))
    # constant images: sigma = 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    x = np.full((1, 20, 20, 3), 80.0)
    y = np.full((1, 20, 20, 3), 120.0)
    c1 = (0.01 * 255) ** 2
    want = (2 * 80 * 120 + c1) / (80 ** 2 + 120 ** 2 + c1)
    assert abs(float(ssim(x, y, 255)[0]) - want) < 1e-12
    # channels_last=False layout
    chw = ssim(x.transpose(0, 3, 1, 2), y.transpose(0, 3, 1, 2), 255, channels_last=False)
    assert abs(float(chw[0]) - want) < 1e-12


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image not installed")
    a = _img(2, (1, 40, 48, 3))[0]
    noise = np.random.default_rng(3).normal(0, 25, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    ref = metrics.structural_similarity(a, b, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    got = float(ssim(a, b, 255))
    assert abs(got - ref) < 1e-9


def test_frechet_identical_and_shifted():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 6, generator=g, dtype=torch.float64)
    mu, s = feature_stats(f)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    assert frechet_distance_from_features(f, f) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert abs(frechet_distance(mu, s, mu + shift, s) - float(shift.pow(2).sum())) < 1e-8
    # diagonal covariances: ||d||^2 + sum (sqrt(a) - sqrt(b))^2
    a = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    m1 = torch.zeros(3, dtype=torch.float64)
    m2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    want = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert abs(frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) - want) < 1e-10
    with pytest.raises(ValueError):
        frechet_distance(m1, torch.diag(a), torch.zeros(4), torch.eye(4))


def test_frechet_eigh_matches_scipy():
    pytest.importorskip("scipy", reason="scipy not installed")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 5, generator=g, dtype=torch.float64)
    y = torch.randn(100, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    mu1, s1 = feature_stats(x)
    mu2, s2 = feature_stats(y + 1)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - frechet_distance(mu1, s1, mu2, s2, method="scipy")) < 1e-6


class _TinyI3D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4, 8)

    def forward(self, x):  # [B, 3, T, R, R] -> [B, 8]
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (1, 2, 2)).flatten(1)
        return torch.tanh(self.proj(pooled))


FVD_P = dict(target_hw=(90, 160), generation_hw=(84, 160), fvd_resize_hw=(30, 40), fvd_crop_hw=(28, 40),
             fvd_i3d_resolution=16, fvd_allow_padding=True)


def test_fvd_preprocess_layout_and_crop():
    p = w_coda(**FVD_P)
    v = np.zeros((2, 3, 90, 160, 3), np.uint8)
    v[:, :, 9:] = 255  # bright content below row 9 = resized rows >= 3 -> the kept bottom 28 rows are bright
    x = fvd_preprocess(v, p)
    assert x.shape == (2, 3, 3, 16, 16)
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    assert torch.allclose(x[:, :, :, 2:], torch.ones_like(x[:, :, :, 2:]), atol=1e-4)
    # the default protocol keeps 212 of 225 rows: the 13 rows that came from the 52 padded ones are dropped
    d = w_coda()
    frame = np.full((1, 1, 900, 1600, 3), 255, np.uint8)
    frame[..., :52, :, :] = 128
    y = fvd_preprocess(frame, d.replace(fvd_i3d_resolution=212))
    assert y.shape == (1, 3, 1, 212, 212)
    assert float(y[..., 2:, :].min()) > 0.999  # only the first kept row sees padding through the bicubic kernel


def test_fvd_with_torchscript_extractor(tmp_path):
    path = str(tmp_path / "i3d.pt")
    torch.jit.save(torch.jit.script(_TinyI3D()), path)
    p = w_coda(**FVD_P)
    ext = FVDFeatureExtractor(path, p, batch_size=3)
    g = np.random.default_rng(0)
    real = g.integers(0, 256, (6, 4, 90, 160, 3)).astype(np.uint8)
    gen = np.clip(real.astype(int) + 60, 0, 255).astype(np.uint8)
    fr, fg = ext(real), ext(gen)
    assert fr.shape == (6, 8)
    assert fvd(fr, fr) < 1e-8
    assert fvd(fr, fg) > 1e-3


def test_fvd_and_lpips_skip_without_weights(tmp_path):
    with pytest.raises(MetricSkipped, match="no weight file"):
        FVDFeatureExtractor(None)
    with pytest.raises(MetricSkipped, match="not found"):
        FVDFeatureExtractor(str(tmp_path / "missing.pt"))
    with pytest.raises(MetricSkipped, match="not found"):
        LPIPSMetric(str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(1)}, str(bad))
    with pytest.raises(MetricSkipped, match="AlexNet LPIPS"):
        LPIPSMetric(str(bad))


def test_lpips_state_dict_and_torchscript(tmp_path):
    torch.manual_seed(0)
    net = LPIPSAlex()
    for i in range(5):  # LPIPS linear weights are non-negative
        getattr(net, f"lin{i}").model[1].weight.data.abs_()
    state = net.state_dict()
    state.update({f"lins.{i}.model.1.weight": state[f"lin{i}.model.1.weight"] for i in range(5)})  # lpips layout
    sd_path = str(tmp_path / "lpips_alex.pth")
    torch.save(state, sd_path)
    m = LPIPSMetric(sd_path)
    a, b = _img(4, (2, 64, 64, 3)), _img(5, (2, 64, 64, 3))
    same = m(a, a)
    diff = m(a, b)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2, dtype=torch.float64), atol=1e-7)
    assert (diff > 0).all()

    class MSE(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).pow(2).mean(dim=(1, 2, 3))

    ts_path = str(tmp_path / "lpips.ts")
    torch.jit.save(torch.jit.script(MSE()), ts_path)
    got = LPIPSMetric(ts_path)(a, b)
    want = ((a / 255.0 * 2 - 1) - (b / 255.0 * 2 - 1)) ** 2
    assert torch.allclose(got, torch.from_numpy(want.mean(axis=(1, 2, 3))), atol=1e-5)


def test_compare_clips_leaves_padding_out():
    p = w_coda(target_hw=(90, 160), generation_hw=(84, 160), fvd_allow_padding=True)
    a = _img(6, (3, 90, 160, 3))
    b = a.copy()
    b[:, :6] = 0  # differences only in the padded rows
    out = compare_clips(a, b, p)
    assert torch.isinf(out["psnr"]).all() and torch.allclose(out["ssim"], torch.ones(3, dtype=torch.float64))
    out = compare_clips(a, b, p.replace(pixel_exclude_padding=False), frames=[0, 2])
    assert out["psnr"].shape == (2,) and torch.isfinite(out["psnr"]).all()
    assert mean_finite([float("inf"), 30.0, 40.0]) == 35.0
    assert math.isinf(mean_finite([float("inf")]))


def test_compare_video_sets_and_fvd_features(tmp_path):
    from coredit_video.evaluation.metrics_video import collect_fvd_features, compare_video_sets

    p = w_coda(target_hw=(90, 160), generation_hw=(42, 80), cameras=("CAM_FRONT", "CAM_BACK"),
               fvd_resize_hw=(30, 40), fvd_crop_hw=(28, 40), fvd_i3d_resolution=16, fvd_allow_padding=True)
    rng = np.random.default_rng(7)
    store = {}
    for tok in ("t1", "t2"):
        for cam in p.cameras:
            ref = rng.integers(0, 256, (4, 90, 160, 3)).astype(np.uint8)  # target-size reference (gt_video)
            store[f"ref/{tok}/{cam}"] = ref
            gen = ref[:, 6:][:, ::2, ::2].copy()  # generation size 42x80
            if cam == "CAM_BACK":
                gen = np.clip(gen.astype(int) + 10, 0, 255).astype(np.uint8)
            store[f"gen/{tok}/{cam}"] = gen

    def reader(path, indices=None):
        return store[path] if indices is None else store[path][list(indices)]

    gen = {t: {c: f"gen/{t}/{c}" for c in p.cameras} for t in ("t1", "t2")}
    ref = {t: {c: f"ref/{t}/{c}" for c in p.cameras} for t in ("t1", "t2")}
    res = compare_video_sets(gen, ref, p, reader=reader)
    assert res["num_clips"] == 4 and res["lpips"] is None
    assert res["per_camera"]["CAM_BACK"]["psnr"] < res["per_camera"]["CAM_FRONT"]["psnr"]
    assert set(res["per_camera"]) == {"CAM_FRONT", "CAM_BACK"}
    with pytest.raises(KeyError, match="reference"):
        compare_video_sets(gen, {"t1": ref["t1"], "t2": {"CAM_FRONT": "ref/t2/CAM_FRONT"}}, p, reader=reader)

    path = str(tmp_path / "i3d.pt")
    torch.jit.save(torch.jit.script(_TinyI3D()), path)
    ext = FVDFeatureExtractor(path, p)
    f_ref = collect_fvd_features(ext, [ref[t][c] for t in ref for c in p.cameras], batch_clips=3, reader=reader)
    f_gen = collect_fvd_features(ext, [gen[t][c] for t in gen for c in p.cameras], reader=reader)
    assert f_ref.shape == (4, 8) and f_gen.shape == (4, 8)  # generation-size clips are undone first
    assert fvd(f_ref, f_gen) >= 0.0
