"""Export ``SyntheticDrivingDataset`` samples as a small nuScenes-format data set (``nuscenes-devkit`` loads it).

Layout under ``out_dir``::

    <version>/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,sample_annotation,
               sample_data,scene,sensor,visibility}.json
    samples/CAM_*/<logfile>__<CAM>__<timestamp>.jpg
    maps/<map token>.png                 semantic prior (roads + sidewalks), 0.1 m / px
    maps/expansion/<location>.json       map expansion (see ``map_export.py``)
    nuscenes_infos_<split>.pkl           BEVFormer / W-CODA style infos (see ``infos.py``)

Each dataset sample is one scene (and one log); each of its frames is a key-frame ``sample`` with one
camera ``sample_data`` (and ``ego_pose``) per camera. Each box track is an ``instance`` with one
``sample_annotation`` per frame in the global frame (centre, size ``[w, l, h]``, yaw quaternion);
``prev`` / ``next`` link frames, camera records and annotations. There is no lidar or radar:
``num_lidar_pts`` holds the number of camera pixels showing the box (a stand-in, so that the
devkit's filter of boxes with no points drops the invisible ones) and ``num_radar_pts`` is 0.
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from .classes import CATEGORY_NAMES, CLASS_NAMES, attribute_name
from .geometry import matrix_to_quaternion, yaw_to_quaternion
from .infos import build_infos, write_infos
from .map_export import build_expansion, write_expansions, write_mask
from .synthetic import SyntheticDrivingDataset, make_token

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY_LEVELS = (("1", "v0-40", 0.4), ("2", "v40-60", 0.6), ("3", "v60-80", 0.8), ("4", "v80-100", 1.01))


def visibility_token(fraction: float) -> str:
    """nuScenes visibility token ('1'..'4') of a visible fraction in [0, 1]."""
    for tok, _, upper in VISIBILITY_LEVELS:
        if fraction < upper:
            return tok
    return "4"


def camera_filename(logfile: str, camera: str, timestamp: int) -> str:
    """Relative path of a camera image, as nuScenes names them."""
    return f"samples/{camera}/{logfile}__{camera}__{int(timestamp)}.jpg"


def logfile_name(dataset: SyntheticDrivingDataset, index: int) -> str:
    return f"synthetic-s{dataset.seed}-{index:06d}"


def write_nuscenes(dataset: SyntheticDrivingDataset, out_dir: str, version: str = "v1.0-synthetic",
                   indices: Optional[Sequence[int]] = None, location: str = "boston-seaport",
                   jpeg_quality: int = 95, write_map_mask: bool = True, infos_split: str = "synthetic",
                   data_root: Optional[str] = None) -> Dict[str, str]:
    """Write samples ``indices`` (default: all) of ``dataset`` under ``out_dir``.

    ``location``: the logs' location and map-expansion name (``NuScenesMap`` accepts only the real four).
    ``write_map_mask``: also write the semantic-prior PNG (its size grows with the area the scenes span:
    about 2000 x 2000 px per 200 m tile; beyond about 64 scenes it refuses, pass ``False`` to write a 1 x 1
    placeholder instead). ``data_root``: prefix of the image paths in the info file
    (default ``out_dir``). Returns ``{"dataroot", "version", "infos", "expansion"}`` paths.
    """
    from PIL import Image

    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    seed = dataset.seed

    def tok(*parts):
        return make_token(seed, "nuscenes", *parts)

    tables: Dict[str, List[dict]] = {t: [] for t in TABLES}
    sensor_tok = {c: tok("sensor", c) for c in dataset.camera_names}
    tables["sensor"] = [{"token": sensor_tok[c], "channel": c, "modality": "camera"} for c in dataset.camera_names]
    cat_tok = {n: tok("category", n) for n in CLASS_NAMES}
    tables["category"] = [{"token": cat_tok[n], "name": CATEGORY_NAMES[n], "description": f"synthetic {n}",
                           "index": k} for k, n in enumerate(CLASS_NAMES)]
    attr_tok = {a: tok("attribute", a) for a in ATTRIBUTES}
    tables["attribute"] = [{"token": attr_tok[a], "name": a, "description": a} for a in ATTRIBUTES]
    tables["visibility"] = [{"token": t, "level": lvl, "description": f"visibility of whole object is {lvl}"}
                            for t, lvl, _ in VISIBILITY_LEVELS]
    map_token = tok("map", location)

    scenes, items = [], []
    for i in indices:
        item = dataset[i]
        scene = dataset.scene(i)
        scenes.append(scene)
        items.append(item)
        logfile = logfile_name(dataset, i)
        log_token = tok("log", i)
        tables["log"].append({"token": log_token, "logfile": logfile, "vehicle": "synthetic-ego",
                              "date_captured": "2026-01-01", "location": location})
        T = dataset.frames
        frame_tokens = item["frame_tokens"]
        tables["scene"].append({"token": item["scene_token"], "log_token": log_token, "nbr_samples": T,
                                "first_sample_token": frame_tokens[0], "last_sample_token": frame_tokens[-1],
                                "name": f"scene-s{seed}-{i:06d}", "description": "synthetic clip"})
        calib_tok = {}
        for c, cam in enumerate(dataset.camera_names):
            calib_tok[cam] = tok("calibrated_sensor", i, cam)
            tables["calibrated_sensor"].append({
                "token": calib_tok[cam], "sensor_token": sensor_tok[cam],
                "translation": dataset.cam2ego[c, :3, 3].tolist(),
                "rotation": matrix_to_quaternion(dataset.cam2ego[c, :3, :3]).tolist(),
                "camera_intrinsic": dataset.intrinsics[c].tolist()})
        stamps = item["timestamps"].tolist()
        images = np.clip(np.rint((item["video"].numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)  # [NC,3,T,H,W]
        h, w = dataset.image_hw
        for t in range(T):
            e2g = scene.ego2global(t)
            tables["sample"].append({"token": frame_tokens[t], "timestamp": stamps[t],
                                     "scene_token": item["scene_token"], "prev": frame_tokens[t - 1] if t else "",
                                     "next": frame_tokens[t + 1] if t + 1 < T else ""})
            for c, cam in enumerate(dataset.camera_names):
                pose_tok = tok("ego_pose", i, t, cam)
                tables["ego_pose"].append({"token": pose_tok, "timestamp": stamps[t],
                                           "translation": e2g[:3, 3].tolist(),
                                           "rotation": matrix_to_quaternion(e2g[:3, :3]).tolist()})
                fname = camera_filename(logfile, cam, stamps[t])
                tables["sample_data"].append({
                    "token": tok("sample_data", i, t, cam), "sample_token": frame_tokens[t],
                    "ego_pose_token": pose_tok, "calibrated_sensor_token": calib_tok[cam], "timestamp": stamps[t],
                    "fileformat": "jpg", "is_key_frame": True, "height": h, "width": w, "filename": fname,
                    "prev": tok("sample_data", i, t - 1, cam) if t else "",
                    "next": tok("sample_data", i, t + 1, cam) if t + 1 < T else ""})
                path = os.path.join(out_dir, fname)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(np.ascontiguousarray(images[c, :, t].transpose(1, 2, 0))).save(
                    path, quality=jpeg_quality)
        mask = item["box_mask"].numpy()
        glob = [scene.boxes_global(t) for t in range(T)]
        for m, tr in enumerate(scene.tracks):
            name = CLASS_NAMES[tr.label]
            ann = [tok("sample_annotation", i, t, m) for t in range(T)]
            frames = [t for t in range(T) if mask[t, m]]
            for j, t in enumerate(frames):
                g = glob[t]
                vis = float(item["box_visibility"][t, m])
                attr = attribute_name(name, tr.speed)
                tables["sample_annotation"].append({
                    "token": ann[t], "sample_token": frame_tokens[t], "instance_token": item["instance_tokens"][m],
                    "visibility_token": visibility_token(vis), "attribute_tokens": [attr_tok[attr]] if attr else [],
                    "translation": g["center"][m].tolist(), "size": g["size"][m].tolist(),
                    "rotation": yaw_to_quaternion(g["yaw"][m]).tolist(),
                    "prev": ann[frames[j - 1]] if j else "", "next": ann[frames[j + 1]] if j + 1 < len(frames) else "",
                    "num_lidar_pts": int(item["box_pixels"][t, m]), "num_radar_pts": 0})
            if frames:
                tables["instance"].append({"token": item["instance_tokens"][m], "category_token": cat_tok[name],
                                           "nbr_annotations": len(frames), "first_annotation_token": ann[frames[0]],
                                           "last_annotation_token": ann[frames[-1]]})
    tables["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in tables["log"]],
                      "category": "semantic_prior", "filename": f"maps/{map_token}.png"}]

    table_root = os.path.join(out_dir, version)
    os.makedirs(table_root, exist_ok=True)
    for name, rows in tables.items():
        with open(os.path.join(table_root, f"{name}.json"), "w") as f:
            json.dump(rows, f, indent=0)
    expansion = build_expansion(scenes, lambda *p: tok("map_expansion", *p))
    write_expansions(out_dir, location, expansion)
    mask_path = os.path.join(out_dir, "maps", f"{map_token}.png")
    if write_map_mask:
        write_mask(mask_path, scenes)
    elif not os.path.exists(mask_path):  # the devkit needs the file to exist; a 1x1 empty mask
        os.makedirs(os.path.dirname(mask_path), exist_ok=True)
        Image.new("L", (1, 1), 0).save(mask_path)
    infos = build_infos(dataset, items, scenes, data_root=out_dir if data_root is None else data_root,
                        filename=lambda i, cam, ts: camera_filename(logfile_name(dataset, i), cam, ts),
                        sample_data_token=lambda i, t, cam: tok("sample_data", i, t, cam))
    info_path = write_infos(infos, os.path.join(out_dir, f"nuscenes_infos_{infos_split}.pkl"), version)
    return {"dataroot": out_dir, "version": version, "infos": info_path,
            "expansion": os.path.join(out_dir, "maps", "expansion", f"{location}.json")}
