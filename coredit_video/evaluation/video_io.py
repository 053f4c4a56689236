"""Reading and writing clips, and parsing the MagicDrive-V2 test layout.

Layout (MagicDrive-V2 ``scripts/test_magicdrive.py``, ``save_mode="single-view"``)::

    gen_video/{token}_gen{k}/{token}_{CAM}.mp4     generated, k = 0, 1, ...
    gt_video/{token}/{token}_{CAM}.mp4              ground truth

Readers, first one importable wins: ``decord`` (what the protocol names), ``imageio`` (v3 API), PyAV, OpenCV.
Frames are returned as uint8 RGB ``[T, H, W, 3]``. Writers: PyAV (H.264), ``imageio``, OpenCV (``mp4v``).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

READERS = ("decord", "imageio", "av", "cv2")
WRITERS = ("av", "imageio", "cv2")

_CAM_RE = re.compile(r"(CAM_[A-Z_]+)$")
_GEN_DIR_RE = re.compile(r"^(?P<token>.+)_gen(?P<k>\d+)$")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")


class VideoBackendError(RuntimeError):
    """No usable video library is installed (the message says what to install)."""


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:  # ImportError, or a broken binary wheel
        return False


def _usable(name: str) -> bool:
    if name == "imageio":  # imageio reads / writes mp4 only through its pyav or ffmpeg plugin
        return _importable("imageio") and (_importable("av") or _importable("imageio_ffmpeg"))
    return _importable(name)


def _imageio_plugin() -> str:
    return "pyav" if _importable("av") else "FFMPEG"


def available_readers() -> List[str]:
    return [b for b in READERS if _usable(b)]


def available_writers() -> List[str]:
    return [b for b in WRITERS if _usable(b)]


def _pick(backend: Optional[str], allowed: Sequence[str], what: str) -> str:
    if backend is not None:
        if backend not in allowed:
            raise ValueError(f"unknown video {what} backend {backend!r}; choose from {tuple(allowed)}")
        if not _usable(backend):
            raise VideoBackendError(f"video {what} backend {backend!r} is not installed")
        return backend
    for b in allowed:
        if _usable(b):
            return b
    raise VideoBackendError(
        f"no video {what} is installed: install one of {tuple(allowed)} "
        f"(e.g. `pip install decord` to read, `pip install av` to write; both are in coredit-video[eval])")


def _select(frames: np.ndarray, indices: Optional[Sequence[int]], path: str) -> np.ndarray:
    if indices is None:
        return frames
    idx = list(indices)
    bad = [i for i in idx if not 0 <= i < len(frames)]
    if bad:
        raise IndexError(f"{path}: frame(s) {bad} out of range for a clip of {len(frames)} frames")
    return frames[idx]


def read_video(path: str, indices: Optional[Sequence[int]] = None, backend: Optional[str] = None) -> np.ndarray:
    """Decode ``path`` into uint8 RGB ``[T, H, W, 3]``; ``indices`` picks frames (all when ``None``).

    With ``backend=None`` the first installed reader of :data:`READERS` is used, and if it fails to decode the
    file (decord does on some tiny frame sizes) the next one is tried.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no video at {path}")
    if backend is not None:
        return _read_with(_pick(backend, READERS, "reader"), path, indices)
    readers = available_readers()
    if not readers:
        _pick(None, READERS, "reader")  # raises with the install hint
    errors = []
    for b in readers:
        try:
            return _read_with(b, path, indices)
        except IndexError:
            raise
        except Exception as e:  # a decoder error of this backend: try the next one
            errors.append(f"{b}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise OSError(f"could not decode {path} ({'; '.join(errors)})")


def _read_with(b: str, path: str, indices: Optional[Sequence[int]]) -> np.ndarray:
    if b == "decord":
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        n = len(vr)
        if indices is None:
            idx = list(range(n))
        else:
            idx = list(indices)
            bad = [i for i in idx if not 0 <= i < n]
            if bad:
                raise IndexError(f"{path}: frame(s) {bad} out of range for a clip of {n} frames")
        if not idx:
            return np.zeros((0, vr[0].shape[0], vr[0].shape[1], 3), np.uint8)
        return np.ascontiguousarray(vr.get_batch(idx).asnumpy(), dtype=np.uint8)
    if b == "imageio":
        import imageio.v3 as iio

        frames = np.stack(list(iio.imiter(path, plugin=_imageio_plugin())))[..., :3]
    elif b == "av":
        import av

        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    else:
        import cv2

        cap = cv2.VideoCapture(path)
        out = []
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if not out:
            raise OSError(f"OpenCV decoded no frame from {path}")
        frames = np.stack(out)
    return np.ascontiguousarray(_select(frames.astype(np.uint8, copy=False), indices, path))


def write_video(path: str, frames, fps: float = 12.0, backend: Optional[str] = None, quality: str = "high") -> str:
    """Write uint8 RGB ``[T, H, W, 3]`` (numpy or torch) to ``path`` (mp4). Returns the path.

    ``quality="high"`` asks for a high bitrate (MagicDrive-V2 saves at 4 Mbit/s); OpenCV's ``mp4v`` ignores it.
    """
    arr = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    if len(arr) == 0:
        raise ValueError("cannot write a video with no frames")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    b = _pick(backend, WRITERS, "writer")
    T, H, W, _ = arr.shape
    if b == "av":
        import av

        with av.open(path, mode="w") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)))
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            if quality == "high":
                stream.options = {"crf": "10"}
            for frame in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    elif b == "imageio":
        import imageio.v3 as iio

        if _imageio_plugin() == "pyav":
            iio.imwrite(path, arr, plugin="pyav", codec="libx264", fps=fps)
        else:
            iio.imwrite(path, arr, plugin="FFMPEG", fps=fps)
    else:
        import cv2

        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
        if not writer.isOpened():
            raise OSError(f"OpenCV could not open a writer for {path}")
        try:
            for frame in arr:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    return path


def parse_clip_name(filename: str, token: Optional[str] = None) -> Optional[str]:
    """Camera name of ``{token}_{CAM}.mp4`` (``None`` if the name has no ``CAM_*`` suffix).

    With ``token`` given, the stem must be exactly ``{token}_{CAM}``.
    """
    stem, ext = os.path.splitext(os.path.basename(filename))
    if ext.lower() not in VIDEO_EXTS:
        return None
    if token is not None:
        if not stem.startswith(token + "_"):
            return None
        cam = stem[len(token) + 1:]
        return cam if _CAM_RE.fullmatch(cam) else None
    m = _CAM_RE.search(stem)
    if not m:
        return None
    # the camera is the longest CAM_* suffix that is preceded by "_" (tokens are hex, never contain "CAM_")
    i = stem.find("_CAM_")
    return stem[i + 1:] if i >= 0 else m.group(1)


def _cams_in(folder: str, token: str) -> Dict[str, str]:
    cams: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        cam = parse_clip_name(name, token)
        if cam is None:
            continue
        if cam in cams:
            raise ValueError(f"{folder}: two clips for camera {cam} ({os.path.basename(cams[cam])}, {name})")
        cams[cam] = os.path.join(folder, name)
    return cams


def find_clips(videos_dir: str, cameras: Optional[Sequence[str]] = None) -> Dict[str, Dict[int, Dict[str, str]]]:
    """Parse ``gen_video/`` into ``{token: {gen_k: {CAM: path}}}``.

    Folders named ``{token}_gen{k}`` are generations; a plain ``{token}`` folder (the ``gt_video/`` layout) is
    returned as generation ``-1``. The camera is parsed from each file name; with ``cameras`` given, every clip
    must have exactly those cameras (a missing one raises, naming token, generation and camera).
    """
    if not os.path.isdir(videos_dir):
        raise FileNotFoundError(f"no video folder at {videos_dir}")
    out: Dict[str, Dict[int, Dict[str, str]]] = {}
    for entry in sorted(os.listdir(videos_dir)):
        folder = os.path.join(videos_dir, entry)
        if not os.path.isdir(folder):
            continue
        m = _GEN_DIR_RE.match(entry)
        token, k = (m.group("token"), int(m.group("k"))) if m else (entry, -1)
        cams = _cams_in(folder, token)
        if not cams:
            continue
        if cameras is not None:
            missing = [c for c in cameras if c not in cams]
            if missing:
                raise FileNotFoundError(f"{folder}: token {token} generation {k} lacks camera(s) {missing}")
            cams = {c: cams[c] for c in cameras}
        out.setdefault(token, {})[k] = cams
    return out


def find_gt_clips(gt_dir: str, cameras: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, str]]:
    """Parse ``gt_video/`` into ``{token: {CAM: path}}``."""
    return {tok: gens[-1] for tok, gens in find_clips(gt_dir, cameras).items() if -1 in gens}
