"""Rigid transforms and quaternions (numpy, float64).

Conventions (nuScenes): right-handed frames, quaternions ``[w, x, y, z]``, a 4x4 ``a2b`` matrix maps
homogeneous points of frame ``a`` into frame ``b`` (``p_b = a2b @ p_a``). The ego frame has x forward,
y left, z up, origin on the ground; a camera frame has x right, y down, z along the optical axis.
"""
from typing import Sequence

import numpy as np


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation ``[3, 3]`` by ``yaw`` radians about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_transform(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """``[4, 4]`` homogeneous transform from a ``[3, 3]`` rotation and a translation ``[3]``."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def invert_transform(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``[4, 4]`` transform."""
    r, t = m[:3, :3], m[:3, 3]
    return make_transform(r.T, -r.T @ t)


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``[4, 4]`` transform ``m`` to points ``[..., 3]``."""
    return points @ m[:3, :3].T + m[:3, 3]


def yaw_to_quaternion(yaw: float) -> np.ndarray:
    """Quaternion ``[w, x, y, z]`` of a rotation by ``yaw`` radians about +z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quaternion_to_yaw(q: Sequence[float]) -> float:
    """Heading (rotation about +z, radians) of quaternion ``[w, x, y, z]``."""
    r = quaternion_to_matrix(q)
    return float(np.arctan2(r[1, 0], r[0, 0]))


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """``[3, 3]`` rotation matrix of a (not necessarily unit) quaternion ``[w, x, y, z]``."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[w, x, y, z]`` (``w >= 0``) of a ``[3, 3]`` rotation matrix."""
    r = np.asarray(r, dtype=np.float64)
    tr = np.trace(r)
    # Pick the numerically largest of the four candidate components (standard branch-by-max).
    diag = [tr, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(diag))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif k == 2:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def wrap_angle(a):
    """Wrap radians to ``[-pi, pi)``."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def box_corners(center: np.ndarray, size: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Corners ``[..., 8, 3]`` of boxes with centre ``[..., 3]``, size ``(w, l, h)`` ``[..., 3]``, yaw ``[...]``.

    ``l`` runs along the heading, ``w`` across it. Corner order: bottom face (z - h/2) counter-clockwise from
    front-left, then the top face in the same order.
    """
    center, size, yaw = np.asarray(center, float), np.asarray(size, float), np.asarray(yaw, float)
    w, l, h = size[..., 0], size[..., 1], size[..., 2]
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=float)
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=float)
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=float)
    lx = sx * (l[..., None] / 2)
    ly = sy * (w[..., None] / 2)
    lz = sz * (h[..., None] / 2)
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    x = center[..., 0:1] + c * lx - s * ly
    y = center[..., 1:2] + s * lx + c * ly
    z = center[..., 2:3] + lz
    return np.stack([x, y, z], axis=-1)


# Faces of ``box_corners`` as corner indices (each a closed loop around the face; outward normals are best
# taken as face centre minus box centre).
BOX_FACES = np.array([
    [0, 3, 7, 4],  # front (+l)
    [2, 1, 5, 6],  # back
    [1, 0, 4, 5],  # left (+w)
    [3, 2, 6, 7],  # right
    [4, 7, 6, 5],  # top
    [0, 1, 2, 3],  # bottom
])
