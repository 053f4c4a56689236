"""A six-camera rig laid out like nuScenes' (names, yaw layout, mounting positions, fields of view).

Cameras have no pitch or roll: the optical axis is horizontal, so the horizon is image row ``cy``.
Intrinsics scale with the image size like nuScenes' 1600x900 cameras do: ``fx = fy = 0.79 W``
(about 65 deg horizontal field of view), ``0.505 W`` for CAM_BACK (about 90 deg), ``cx = W / 2``,
``cy = H / 2``. Pixel centres are at integer coordinates (OpenCV convention).
"""
from typing import List, Sequence, Tuple

import numpy as np

from .geometry import make_transform

CAMERA_NAMES: Tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                                 "CAM_FRONT_LEFT")

# name -> (yaw of the optical axis in the ego frame [deg], mounting position (x, y, z) [m], fx / W)
_RIG = {
    "CAM_FRONT": (0.0, (1.70, 0.00, 1.51), 0.79),
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.50), 0.79),
    "CAM_BACK_RIGHT": (-110.0, (1.04, -0.48, 1.56), 0.79),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.57), 0.505),
    "CAM_BACK_LEFT": (110.0, (1.05, 0.48, 1.56), 0.79),
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51), 0.79),
}


def camera_intrinsics(name: str, image_hw: Tuple[int, int]) -> np.ndarray:
    """``[3, 3]`` pinhole intrinsics of camera ``name`` for images of ``image_hw = (H, W)`` pixels."""
    h, w = image_hw
    f = _RIG[name][2] * w
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def camera_to_ego(name: str) -> np.ndarray:
    """``[4, 4]`` camera->ego transform of camera ``name`` (camera x right, y down, z forward)."""
    yaw_deg, t, _ = _RIG[name]
    a = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(a), np.sin(a), 0.0])
    right = np.array([np.sin(a), -np.cos(a), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return make_transform(np.stack([right, down, forward], axis=1), t)


def rig(image_hw: Tuple[int, int], names: Sequence[str] = CAMERA_NAMES) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """``(names, intrinsics [NC, 3, 3], cam2ego [NC, 4, 4])`` for the given cameras."""
    names = list(names)
    unknown = [n for n in names if n not in _RIG]
    if unknown:
        raise ValueError(f"unknown cameras {unknown}; choose from {CAMERA_NAMES}")
    k = np.stack([camera_intrinsics(n, image_hw) for n in names])
    e = np.stack([camera_to_ego(n) for n in names])
    return names, k, e


def pixel_rays(intrinsics: np.ndarray, cam2ego: np.ndarray, image_hw: Tuple[int, int]) -> np.ndarray:
    """Unit ray directions ``[H, W, 3]`` in the ego frame through each pixel centre."""
    h, w = image_hw
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    d = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1],
                  np.ones_like(u)], axis=-1)
    d = d @ cam2ego[:3, :3].T
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def project(points_ego: np.ndarray, intrinsics: np.ndarray, cam2ego: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points ``[..., 3]`` -> ``(uv [..., 2] pixels, depth [...] metres along the axis)``.

    Points behind the camera get a non-positive depth (and meaningless ``uv``).
    """
    r, t = cam2ego[:3, :3], cam2ego[:3, 3]
    pc = (points_ego - t) @ r  # ego -> camera: R^T (p - t)
    z = pc[..., 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    u = intrinsics[0, 0] * pc[..., 0] / zs + intrinsics[0, 2]
    v = intrinsics[1, 1] * pc[..., 1] / zs + intrinsics[1, 2]
    return np.stack([u, v], axis=-1), z
