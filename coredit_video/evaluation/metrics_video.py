"""Pixel and distribution metrics for videos: PSNR, SSIM, LPIPS, Frechet distance and FVD (vectorised torch).

Images are ``[..., H, W, C]`` (channels last, as decoded) or, with ``channels_last=False``, ``[..., C, H, W]``;
every metric returns one value per image (the leading dims), so callers average however they need.

The learned metrics take user-supplied weights and never download anything:

* FVD: an I3D feature extractor saved as TorchScript (``torch.jit.save``; or a ``torch.export`` ``.pt2``),
  taking ``[B, 3, T, 224, 224]`` float in [-1, 1] and returning ``[B, D]`` (W-CODA uses the 400 Kinetics logits of
  the VideoGPT I3D).
* LPIPS: a TorchScript module ``f(x, y) -> [N]`` with x, y ``[N, 3, H, W]`` in [-1, 1], or a state-dict file of the
  AlexNet LPIPS (``lpips.LPIPS(net="alex").state_dict()`` key layout) loaded into :class:`LPIPSAlex`.

When a weight file is missing, :class:`MetricSkipped` is raised with the reason; reports show '-' and the reason.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .protocol import EvalProtocol, w_coda

Array = Union[np.ndarray, torch.Tensor]


class MetricSkipped(RuntimeError):
    """A metric cannot be computed here (missing weights / optional dependency); ``str(e)`` is the reason."""


def _as_float(x: Array) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    return t.to(torch.float64)


def _nchw(x: torch.Tensor, channels_last: bool) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    if x.ndim < 3:
        raise ValueError(f"images must be [..., H, W, C] or [..., C, H, W], got {tuple(x.shape)}")
    if channels_last:
        x = x.movedim(-1, -3)
    lead = tuple(x.shape[:-3])
    return x.reshape(-1, *x.shape[-3:]), lead


# ---------------------------------------------------------------------------------------------------- PSNR / SSIM
def _image_pair(a: Array, b: Array, data_range: float, channels_last: bool):
    """Checked float ``[N, C, H, W]`` views of two same-shaped image batches, and their leading shape."""
    if data_range is None or data_range <= 0:
        raise ValueError(f"data_range must be given and > 0, got {data_range!r}")
    x, y = _as_float(a), _as_float(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    x, lead = _nchw(x, channels_last)
    y, _ = _nchw(y, channels_last)
    return x, y, lead


def psnr(a: Array, b: Array, data_range: float, channels_last: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / MSE)`` over H, W, C; ``inf`` for identical images."""
    x, y, lead = _image_pair(a, b, data_range, channels_last)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    out = 10.0 * torch.log10(float(data_range) ** 2 / mse)  # mse == 0 -> inf
    return out.reshape(lead)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(r ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def ssim(a: Array, b: Array, data_range: float, window: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, channels_last: bool = True, return_map: bool = False) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): Gaussian window ``window`` / ``sigma``, population statistics, computed per
    channel over the 'valid' region (no padding) and averaged over pixels and then channels.

    Equals ``skimage.metrics.structural_similarity(a, b, data_range=..., channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``, which also averages only pixels at least ``window // 2`` from the
    border.
    """
    x, y, lead = _image_pair(a, b, data_range, channels_last)
    N, C, H, W = x.shape
    if H < window or W < window:
        raise ValueError(f"images of {H}x{W} are smaller than the {window}x{window} SSIM window")
    g = gaussian_window(window, sigma).to(x.device)
    kh, kw = g.view(1, 1, window, 1), g.view(1, 1, 1, window)

    def filt(z):  # separable, 'valid'; channels folded into the batch (faster than a grouped conv on CPU)
        out = F.conv2d(F.conv2d(z.reshape(N * C, 1, H, W), kh), kw)
        return out.reshape(N, C, *out.shape[-2:])

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x ** 2
    syy = filt(y * y) - mu_y ** 2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    if return_map:
        return smap.reshape(*lead, *smap.shape[1:])
    return smap.mean(dim=(2, 3)).mean(dim=1).reshape(lead)


# ---------------------------------------------------------------------------------------------------- Frechet
def feature_stats(features: Array) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased, N - 1) covariance of ``[N, D]`` features, in float64."""
    f = _as_float(features)
    if f.ndim != 2:
        f = f.reshape(f.shape[0], -1)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(dim=0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array, method: str = "eigh") -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

    ``eigh`` (default): ``tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2)``, a symmetric PSD matrix, so both
    roots come from symmetric eigendecompositions (exact for covariances, no complex parts). ``scipy``:
    ``scipy.linalg.sqrtm`` of ``S1 S2`` (the pytorch-fid way), real part of the trace.
    """
    m1, m2 = _as_float(mu1).reshape(-1), _as_float(mu2).reshape(-1)
    s1, s2 = _as_float(sigma1), _as_float(sigma2)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.numel(), m1.numel()):
        raise ValueError(f"shape mismatch: mu {tuple(m1.shape)} / {tuple(m2.shape)}, "
                         f"sigma {tuple(s1.shape)} / {tuple(s2.shape)}")
    diff = (m1 - m2).pow(2).sum()
    if method == "eigh":
        r1 = _sqrtm_psd(s1)
        ev = torch.linalg.eigvalsh((r1 @ s2 @ r1 + (r1 @ s2 @ r1).T) / 2)
        tr_covmean = ev.clamp(min=0).sqrt().sum()
    elif method == "scipy":
        try:
            from scipy import linalg
        except ImportError:
            raise MetricSkipped("frechet_distance(method='scipy') needs scipy (pip install scipy)") from None
        covmean = linalg.sqrtm(s1.cpu().numpy() @ s2.cpu().numpy())
        tr_covmean = torch.tensor(float(np.real(np.trace(covmean))), dtype=torch.float64)
    else:
        raise ValueError(f"method must be 'eigh' or 'scipy', got {method!r}")
    fd = diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return float(max(fd.item(), 0.0))


def frechet_distance_from_features(f1: Array, f2: Array, method: str = "eigh") -> float:
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    return frechet_distance(mu1, s1, mu2, s2, method=method)


# ---------------------------------------------------------------------------------------------------- FVD
def _load_torchscript(path: Optional[str], what: str, device) -> Callable:
    """A TorchScript file (``torch.jit.save``) or, for a ``.pt2`` name, a ``torch.export`` archive."""
    if not path:
        raise MetricSkipped(f"{what}: no weight file given")
    if not os.path.isfile(path):
        raise MetricSkipped(f"{what}: weight file {path} not found")
    try:
        if path.endswith(".pt2"):  # torch.export archive
            return torch.export.load(path).module()
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the user chose the format
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(path, map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        raise MetricSkipped(f"{what}: {path} is not a TorchScript file ({str(e).splitlines()[0]})") from e


def fvd_preprocess(videos: Array, protocol: Optional[EvalProtocol] = None) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> I3D input ``[B, 3, T, R, R]`` in [-1, 1].

    0. clips not at ``target_hw`` are brought there with :func:`.geometry.undo_generation_crop`,
    1. bicubic resize to ``fvd_resize_hw`` (225x400), 2. crop ``fvd_crop_hw`` (``bottom``: keep the bottom rows,
    centred horizontally: W-CODA's ``top_center_crop``), 3. VideoGPT I3D preprocessing: bilinear resize of the short
    side to ``R = fvd_i3d_resolution`` (long side ``ceil``), centre crop ``R x R``, scale to [-1, 1].

    With the default crop of 212 rows no padded row is kept, but the first kept row still mixes a few padded source
    rows through the bicubic kernel (support +-8 source rows at the 4x downscale); real clips padded the same way
    (MagicDrive-V2's ``gt_video``) get the same mix.
    """
    from .geometry import resize_frames, undo_generation_crop

    p = protocol or w_coda()
    v = torch.from_numpy(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos
    if v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"videos must be [B, T, H, W, 3], got {tuple(v.shape)}")
    B, T = v.shape[:2]
    if tuple(v.shape[2:4]) != tuple(p.target_hw):  # generation-size clips: back to target_hw first
        v = undo_generation_crop(v.reshape(B * T, *v.shape[2:]), p)
        v = v.reshape(B, T, *v.shape[1:])
    if p.fvd_num_frames is not None:
        if T < p.fvd_num_frames:
            raise ValueError(f"clips have {T} frames, fvd_num_frames wants {p.fvd_num_frames}")
        v, T = v[:, :p.fvd_num_frames], p.fvd_num_frames
    flat = v.reshape(B * T, *v.shape[2:])
    x = resize_frames(flat, p.fvd_resize_hw, "bicubic")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32)
    else:
        x = x.to(torch.float32).clamp(0, 255)
    rh, rw = p.fvd_resize_hw
    ch, cw = p.fvd_crop_hw
    r0 = {"bottom": rh - ch, "top": 0, "center": (rh - ch) // 2}[p.fvd_crop_mode]
    c0 = (rw - cw) // 2
    x = x[:, r0:r0 + ch, c0:c0 + cw, :].permute(0, 3, 1, 2) / 255.0  # [BT, 3, ch, cw]
    R = p.fvd_i3d_resolution
    scale = R / min(ch, cw)
    size = (R, math.ceil(cw * scale)) if ch < cw else (math.ceil(ch * scale), R)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h0, w0 = (x.shape[2] - R) // 2, (x.shape[3] - R) // 2
    x = x[:, :, h0:h0 + R, w0:w0 + R]
    x = (x - 0.5) * 2.0
    return x.reshape(B, T, 3, R, R).permute(0, 2, 1, 3, 4).contiguous()


class FVDFeatureExtractor:
    """Runs a TorchScript I3D over clips. ``extractor = FVDFeatureExtractor("i3d.torchscript.pt")``."""

    def __init__(self, weights: Optional[str], protocol: Optional[EvalProtocol] = None, device: str = "cpu",
                 batch_size: int = 8):
        self.protocol = protocol or w_coda()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = _load_torchscript(weights, "FVD (I3D TorchScript)", self.device)

    @torch.no_grad()
    def __call__(self, videos: Array) -> torch.Tensor:
        x = fvd_preprocess(videos, self.protocol)
        feats = []
        for i in range(0, x.shape[0], self.batch_size):
            out = self.model(x[i:i + self.batch_size].to(self.device))
            if isinstance(out, (tuple, list)):
                out = out[0]
            feats.append(out.reshape(out.shape[0], -1).double().cpu())
        return torch.cat(feats, dim=0)


def fvd(features_real: Array, features_gen: Array, method: str = "eigh") -> float:
    """FVD from I3D features of real and generated clips (``[N, D]`` each)."""
    return frechet_distance_from_features(features_real, features_gen, method=method)


# ---------------------------------------------------------------------------------------------------- LPIPS
class _Slice(nn.Sequential):
    pass


class LPIPSAlex(nn.Module):
    """LPIPS with an AlexNet trunk (Zhang et al. 2018), named so that a state dict saved from
    ``lpips.LPIPS(net="alex")`` loads as is: ``scaling_layer.{shift,scale}``, ``net.slice{1..5}.{i}.{weight,bias}``,
    ``lin{0..4}.model.1.weight``. Input: ``[N, 3, H, W]`` in [-1, 1]; output ``[N]``."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.net = nn.Module()
        self.net.slice1 = _Slice(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU())
        self.net.slice2 = _Slice()
        self.net.slice2.add_module("2", nn.MaxPool2d(3, 2))
        self.net.slice2.add_module("3", nn.Conv2d(64, 192, 5, padding=2))
        self.net.slice2.add_module("4", nn.ReLU())
        self.net.slice3 = _Slice()
        self.net.slice3.add_module("5", nn.MaxPool2d(3, 2))
        self.net.slice3.add_module("6", nn.Conv2d(192, 384, 3, padding=1))
        self.net.slice3.add_module("7", nn.ReLU())
        self.net.slice4 = _Slice()
        self.net.slice4.add_module("8", nn.Conv2d(384, 256, 3, padding=1))
        self.net.slice4.add_module("9", nn.ReLU())
        self.net.slice5 = _Slice()
        self.net.slice5.add_module("10", nn.Conv2d(256, 256, 3, padding=1))
        self.net.slice5.add_module("11", nn.ReLU())
        for i, c in enumerate(self.CHANNELS):
            lin = nn.Module()
            lin.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(c, 1, 1, bias=False))
            setattr(self, f"lin{i}", lin)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.scaling_layer
        hx, hy = (x - s.shift) / s.scale, (y - s.shift) / s.scale
        total = x.new_zeros(x.shape[0])
        for i in range(5):
            sl = getattr(self.net, f"slice{i + 1}")
            hx, hy = sl(hx), sl(hy)
            nx = hx / (hx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = hy / (hy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            d = getattr(self, f"lin{i}").model((nx - ny).pow(2))
            total = total + d.mean(dim=(1, 2, 3))
        return total


class LPIPSMetric:
    """LPIPS from user weights: a TorchScript file (``f(x, y) -> [N]``) or an AlexNet LPIPS state dict."""

    def __init__(self, weights: Optional[str], device: str = "cpu", batch_size: int = 8):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if not weights:
            raise MetricSkipped("LPIPS: no weight file given")
        if not os.path.isfile(weights):
            raise MetricSkipped(f"LPIPS: weight file {weights} not found")
        self.model: Callable
        try:
            self.model = _load_torchscript(weights, "LPIPS", self.device)
            return
        except MetricSkipped:
            pass  # not TorchScript: try a state dict
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MetricSkipped(f"LPIPS: {weights} is neither TorchScript nor a state dict ({e})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise MetricSkipped(f"LPIPS: {weights} holds a {type(state).__name__}, not a state dict")
        # lpips.LPIPS also registers the linear layers a second time as ``lins.{i}``: those keys are ignored
        state = {k: v for k, v in state.items() if not k.startswith("lins.")}
        net = LPIPSAlex()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise MetricSkipped(f"LPIPS: {weights} is not a full AlexNet LPIPS state dict, trunk included "
                                f"({str(e).splitlines()[0]})") from e
        self.model = net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, a: Array, b: Array, data_range: float = 255.0, channels_last: bool = True) -> torch.Tensor:
        """Per-image LPIPS of images in ``[0, data_range]`` (rescaled to [-1, 1])."""
        x, lead = _nchw(_as_float(a), channels_last)
        y, _ = _nchw(_as_float(b), channels_last)
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
        x = (x / data_range * 2 - 1).float()
        y = (y / data_range * 2 - 1).float()
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            d = self.model(x[i:i + self.batch_size].to(self.device), y[i:i + self.batch_size].to(self.device))
            out.append(d.reshape(d.shape[0], -1).mean(dim=1).double().cpu())
        return torch.cat(out).reshape(lead)


# ---------------------------------------------------------------------------------------------------- clip-level
def compare_clips(a: Array, b: Array, protocol: Optional[EvalProtocol] = None, lpips: Optional[LPIPSMetric] = None,
                  generation_hw: Optional[Tuple[int, int]] = None,
                  frames: Optional[Sequence[int]] = None, chunk: int = 4,
                  device: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Per-frame PSNR / SSIM (and LPIPS) of two uint8 clips ``[T, H, W, 3]`` of the same layout.

    For ``target_hw`` frames with ``pixel_exclude_padding`` the padded rows are left out. Frames are
    ``frames`` or ``protocol.pixel_frames`` or every frame both clips have. ``device`` (e.g. ``"cuda"``) runs the
    metrics there, ``chunk`` frames at a time (float64 SSIM of one 900x1600 frame takes seconds on a CPU).
    """
    from .geometry import content_slice

    p = protocol or w_coda()
    x = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    y = torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray) else b
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"clip frame shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    idx = list(frames if frames is not None else (p.pixel_frames or range(min(len(x), len(y)))))
    bad = [i for i in idx if i >= min(len(x), len(y))]
    if bad:
        raise IndexError(f"frame(s) {bad} out of range for clips of {len(x)} and {len(y)} frames")
    rows = content_slice(tuple(x.shape[1:3]), p, generation_hw) if p.pixel_exclude_padding else slice(None)
    parts: Dict[str, list] = {"psnr": [], "ssim": []}
    if lpips is not None:
        parts["lpips"] = []
    for i in range(0, len(idx), chunk):  # a few frames at a time: float64 SSIM maps of 900x1600 frames are large
        xs, ys = x[idx[i:i + chunk]][:, rows], y[idx[i:i + chunk]][:, rows]
        if device is not None:
            xs, ys = xs.to(device), ys.to(device)
        parts["psnr"].append(psnr(xs, ys, p.pixel_data_range))
        parts["ssim"].append(ssim(xs, ys, p.pixel_data_range, p.ssim_window, p.ssim_sigma, p.ssim_k1, p.ssim_k2))
        if lpips is not None:
            parts["lpips"].append(lpips(xs, ys, data_range=p.pixel_data_range))
    return {k: torch.cat([t.cpu() for t in v]) if v else torch.zeros(0, dtype=torch.float64)
            for k, v in parts.items()}


def mean_finite(values: Sequence[float]) -> float:
    """Mean that keeps ``inf`` (identical frames) out when finite values exist; ``inf`` if all are ``inf``."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.numel() == 0:
        return float("nan")
    fin = v[torch.isfinite(v)]
    return float(fin.mean()) if fin.numel() else float(v[0])


def _read(reader, path, indices=None):
    if reader is None:
        from .video_io import read_video

        return read_video(path, indices)
    return reader(path, indices)


def compare_video_sets(gen: Dict[str, Dict[str, str]], ref: Dict[str, Dict[str, str]],
                       protocol: Optional[EvalProtocol] = None, lpips: Optional[LPIPSMetric] = None,
                       reader: Optional[Callable] = None, device: Optional[str] = None) -> Dict[str, object]:
    """PSNR / SSIM (/ LPIPS) of generated clips against reference clips (ground truth or the dense run).

    ``gen`` / ``ref``: ``{token: {CAM: path}}`` (one generation; see :func:`.video_io.find_clips`); tokens and
    cameras are matched by name and each must exist in both. Frame values are averaged per camera and overall
    (PSNR with :func:`mean_finite`, so identical frames do not turn the mean into ``inf``).
    Returns ``{"psnr", "ssim", "lpips" (or None), "per_camera": {CAM: {...}}, "num_clips"}``.
    """
    p = protocol or w_coda()
    missing = sorted(set(gen) - set(ref))
    if missing:
        raise KeyError(f"no reference clip for token(s) {missing[:5]}")
    per_cam: Dict[str, Dict[str, list]] = {}
    n = 0
    for token in sorted(gen):
        for cam in p.cameras:
            for name, clips in (("generated", gen[token]), ("reference", ref[token])):
                if cam not in clips:
                    raise KeyError(f"token {token}: camera {cam} missing from the {name} clips")
            a = _read(reader, gen[token][cam])
            b = _read(reader, ref[token][cam])
            if a.shape[1:] != b.shape[1:]:
                b = _match_layout(b, a.shape[1:3], p)
            out = compare_clips(a, b, p, lpips=lpips, generation_hw=p.generation_hw, device=device)
            acc = per_cam.setdefault(cam, {"psnr": [], "ssim": [], "lpips": []})
            for k, v in out.items():
                acc[k] += [float(x) for x in v]
            n += 1
    result: Dict[str, object] = {"per_camera": {}, "num_clips": n}
    all_vals: Dict[str, list] = {"psnr": [], "ssim": [], "lpips": []}
    for cam, acc in per_cam.items():
        result["per_camera"][cam] = {"psnr": mean_finite(acc["psnr"]), "ssim": float(np.mean(acc["ssim"])),
                                     "lpips": float(np.mean(acc["lpips"])) if acc["lpips"] else None}
        for k in all_vals:
            all_vals[k] += acc[k]
    result["psnr"] = mean_finite(all_vals["psnr"])
    result["ssim"] = float(np.mean(all_vals["ssim"])) if all_vals["ssim"] else float("nan")
    result["lpips"] = float(np.mean(all_vals["lpips"])) if all_vals["lpips"] else None
    return result


def _match_layout(frames: np.ndarray, hw: Tuple[int, int], p: EvalProtocol) -> np.ndarray:
    """Bring reference frames to the generated clip's layout: ``target_hw`` via the undo, else the forward crop."""
    from .geometry import apply_generation_crop, undo_generation_crop

    if tuple(hw) == tuple(p.target_hw):
        return undo_generation_crop(frames, p)
    if tuple(frames.shape[1:3]) == tuple(p.target_hw):
        return apply_generation_crop(frames, p, generation_hw=tuple(hw))
    raise ValueError(f"cannot compare clips of {tuple(frames.shape[1:3])} and {tuple(hw)}")


def collect_fvd_features(extractor: FVDFeatureExtractor, paths: Sequence[str], batch_clips: int = 8,
                         reader: Optional[Callable] = None) -> torch.Tensor:
    """I3D features ``[N, D]`` of the clips at ``paths`` (read ``batch_clips`` at a time; every clip must have at
    least ``fvd_num_frames`` frames, and all clips of a batch the same length)."""
    feats = []
    for i in range(0, len(paths), batch_clips):
        clips = [_read(reader, path) for path in paths[i:i + batch_clips]]
        n = extractor.protocol.fvd_num_frames or min(len(c) for c in clips)
        if any(len(c) != n for c in clips) and extractor.protocol.fvd_num_frames is None:
            raise ValueError(f"clips of different lengths {sorted({len(c) for c in clips})}; set fvd_num_frames")
        feats.append(extractor(np.stack([c[:n] for c in clips])))
    if not feats:
        raise ValueError("no clip to extract FVD features from")
    return torch.cat(feats, dim=0)
