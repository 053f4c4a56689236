"""Info files in the layout BEVFormer / W-CODA read (mmdet3d 0.x ``create_data`` style, pickled).

``{"infos": [info, ...], "metadata": {"version": ...}}``, one ``info`` per key frame, scenes in order::

    token, prev, next (sample tokens, '' at the ends), scene_token, frame_idx, timestamp (us)
    lidar_path '' and sweeps [] (no lidar: the lidar frame is the ego frame, lidar2ego = identity)
    lidar2ego_translation / _rotation, ego2global_translation / _rotation ([w, x, y, z] quaternions)
    can_bus float64 [18]: ego position (3), orientation quaternion (4), acceleration (3), angular rate
        (3), velocity in the ego frame (3), then two zeros (BEVFormer writes the patch angle there)
    cams {CAM: data_path, type, sample_data_token, sensor2ego_translation / _rotation,
          ego2global_translation / _rotation, timestamp, sensor2lidar_rotation [3, 3] /
          _translation [3], cam_intrinsic [3, 3]}
    gt_boxes float64 [N, 7]: x, y, z (box centre, lidar = ego frame), w, l, h, -yaw - pi/2 (the
        mmdet3d 0.x LiDAR yaw convention BEVFormer's converter writes), gt_names [N] (detection
        classes), gt_velocity [N, 2] (global velocity rotated into the ego frame), num_lidar_pts [N]
        (visible camera pixels, a stand-in), num_radar_pts [N] (0), valid_flag [N] (any pixel visible)

Camera ``data_path`` s are ``<data_root>/samples/CAM_*/...jpg``; evaluation can point them at
generated frames (``coredit_video.evaluation.perception_runner.rewrite_infos``).
"""
import os
import pickle
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from .classes import CLASS_NAMES
from .geometry import matrix_to_quaternion
from .scene import Scene


def can_bus(scene: Scene, t: int) -> np.ndarray:
    """``[18]`` CAN-bus vector of frame ``t`` (constant-velocity ego: no acceleration, no turning)."""
    e2g = scene.ego2global(t)
    out = np.zeros(18)
    out[:3] = e2g[:3, 3]
    out[3:7] = matrix_to_quaternion(e2g[:3, :3])
    out[13] = scene.ego_speed
    return out


def build_infos(dataset, items: Sequence[Dict[str, Any]], scenes: Sequence[Scene], data_root: str,
                filename: Callable[[int, str, int], str], sample_data_token: Callable[[int, int, str], str]
                ) -> List[Dict[str, Any]]:
    """Infos of the frames of ``items`` (dataset items) and their ``scenes``; ``filename(index, cam, timestamp)``
    and ``sample_data_token(index, frame, cam)`` name the camera records as the table writer does."""
    infos = []
    for item, scene in zip(items, scenes):
        i = int(item["index"])
        T = dataset.frames
        toks, stamps = item["frame_tokens"], item["timestamps"].tolist()
        for t in range(T):
            e2g = scene.ego2global(t)
            e2g_t, e2g_q = e2g[:3, 3].tolist(), matrix_to_quaternion(e2g[:3, :3]).tolist()
            cams = {}
            for c, cam in enumerate(dataset.camera_names):
                ext = dataset.cam2ego[c]
                cams[cam] = {
                    "data_path": os.path.join(data_root, filename(i, cam, stamps[t])), "type": cam,
                    "sample_data_token": sample_data_token(i, t, cam),
                    "sensor2ego_translation": ext[:3, 3].tolist(),
                    "sensor2ego_rotation": matrix_to_quaternion(ext[:3, :3]).tolist(),
                    "ego2global_translation": e2g_t, "ego2global_rotation": e2g_q, "timestamp": stamps[t],
                    "sensor2lidar_rotation": ext[:3, :3].copy(), "sensor2lidar_translation": ext[:3, 3].copy(),
                    "cam_intrinsic": dataset.intrinsics[c].copy()}
            keep = item["box_mask"][t].numpy()
            boxes = item["boxes"][t].numpy().astype(np.float64)[keep]
            labels = item["labels"][t].numpy()[keep]
            pixels = item["box_pixels"][t].numpy()[keep]
            gt = np.concatenate([boxes[:, :6], -boxes[:, 6:7] - np.pi / 2], axis=1) if len(boxes) else np.zeros((0, 7))
            infos.append({
                "token": toks[t], "prev": toks[t - 1] if t else "", "next": toks[t + 1] if t + 1 < T else "",
                "scene_token": item["scene_token"], "frame_idx": t, "timestamp": stamps[t],
                "lidar_path": "", "sweeps": [], "lidar2ego_translation": [0.0, 0.0, 0.0],
                "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0], "ego2global_translation": e2g_t,
                "ego2global_rotation": e2g_q, "can_bus": can_bus(scene, t), "cams": cams,
                "gt_boxes": gt, "gt_names": np.array([CLASS_NAMES[k] for k in labels]),
                "gt_velocity": boxes[:, 7:9].copy(), "num_lidar_pts": pixels.astype(np.int64),
                "num_radar_pts": np.zeros(len(boxes), dtype=np.int64), "valid_flag": pixels > 0})
    return infos


def write_infos(infos: List[Dict[str, Any]], path: str, version: str) -> str:
    """Pickle ``{"infos": infos, "metadata": {"version": version}}`` to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"infos": infos, "metadata": {"version": version}}, f)
    return path


def load_infos(path: str) -> Dict[str, Any]:
    """Read an info file written by ``write_infos``."""
    with open(path, "rb") as f:
        return pickle.load(f)
