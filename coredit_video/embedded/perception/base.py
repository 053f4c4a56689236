"""The perception interface used to score generated (or real) multi-view frames.

A model sees one time step: ``frames`` maps camera names to uint8 ``[H, W, 3]`` RGB images and
``calib`` gives every camera's calibration. It returns

- ``boxes``: a list of nuScenes-style detection dicts in the **ego frame** of that time step:
  ``translation`` [x, y, z] (box centre, m), ``size`` [w, l, h] (m), ``rotation`` [w, x, y, z]
  (quaternion), ``velocity`` [vx, vy] (m/s), ``detection_name`` (a nuScenes detection class),
  ``detection_score`` (higher is more confident), ``attribute_name`` ('' if none).
  ``boxes_to_global`` moves them to the global frame (for a nuScenes results file).
- ``bev_seg``: bool ``[3, Hb, Wb]`` road layout (divider, ped_crossing, boundary) on the model's
  ``bev_grid`` (the conventions of ``coredit_video.embedded.world.bev``).
"""
import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..world.bev import BevGrid
from ..world.geometry import matrix_to_quaternion, quaternion_to_matrix


@dataclass
class Calibration:
    """Per-camera calibration: ``intrinsics [NC, 3, 3]``, ``cam2ego [NC, 4, 4]`` in ``camera_names`` order,
    optionally the ``ego2global [4, 4]`` pose of the time step."""
    camera_names: Sequence[str]
    intrinsics: np.ndarray
    cam2ego: np.ndarray
    ego2global: Optional[np.ndarray] = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any], frame: int = 0) -> "Calibration":
        """Calibration of ``frame`` of a ``SyntheticDrivingDataset`` item."""
        return cls(list(item["camera_names"]), np.asarray(item["intrinsics"], np.float64),
                   np.asarray(item["cam2ego"], np.float64), np.asarray(item["ego2global"][frame], np.float64))

    def camera(self, name: str):
        """``(intrinsics [3, 3], cam2ego [4, 4])`` of camera ``name``."""
        i = list(self.camera_names).index(name)
        return self.intrinsics[i], self.cam2ego[i]


class PerceptionModel(abc.ABC):
    """3D detection + BEV road-layout segmentation from one time step of multi-view images."""

    bev_grid: BevGrid = BevGrid()

    @abc.abstractmethod
    def predict(self, frames: Mapping[str, np.ndarray], calib: Calibration) -> Dict[str, Any]:
        """``frames``: camera name -> uint8 ``[H, W, 3]``. Returns ``{"boxes": [dict, ...], "bev_seg": bool
        [3, Hb, Wb]}`` (see the module docstring)."""


def frames_from_video(video, frame: int, camera_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Images of time step ``frame`` of a video ``[NC, 3, T, H, W]`` in [-1, 1] (tensor or array) as
    ``{name: uint8 [H, W, 3]}``."""
    v = video.detach().cpu().numpy() if hasattr(video, "detach") else np.asarray(video)
    imgs = np.clip(np.rint((v[:, :, frame] + 1.0) * 127.5), 0, 255).astype(np.uint8)  # [NC, 3, H, W]
    return {name: np.ascontiguousarray(imgs[i].transpose(1, 2, 0)) for i, name in enumerate(camera_names)}


def boxes_to_global(boxes: List[Dict[str, Any]], ego2global: np.ndarray) -> List[Dict[str, Any]]:
    """Copies of ego-frame detection dicts moved to the global frame by ``ego2global [4, 4]``."""
    r, t = ego2global[:3, :3], ego2global[:3, 3]
    out = []
    for b in boxes:
        g = dict(b)
        g["translation"] = (r @ np.asarray(b["translation"], float) + t).tolist()
        g["rotation"] = matrix_to_quaternion(r @ quaternion_to_matrix(b["rotation"])).tolist()
        g["velocity"] = (r[:2, :2] @ np.asarray(b["velocity"], float)).tolist()
        out.append(g)
    return out
