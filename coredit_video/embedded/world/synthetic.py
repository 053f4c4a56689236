"""The embedded default data set: procedurally generated multi-view driving clips (no files needed).

Sample ``i`` is a deterministic function of ``(seed, i)`` and the constructor arguments, so samples
can be made lazily, in any order and in any worker, and never depend on ``num_samples``.
"""
import hashlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .appearance import Appearance, check_appearance, draw_appearance
from .bev import BevGrid, rasterize_map
from .cameras import CAMERA_NAMES, rig
from .condition import camera_features, encode_condition, view_layout
from .render import Renderer
from .scene import Scene, generate_scene


def make_token(*parts: Any) -> str:
    """A 32-hex-digit token (nuScenes style) derived from ``parts``."""
    return hashlib.md5("/".join(str(p) for p in ("coredit-synthetic",) + parts).encode()).hexdigest()


class SyntheticDrivingDataset(Dataset):
    """Multi-view driving clips rendered from ``Scene``s.

    Args:
        num_samples: length of the data set.
        views: number of cameras (the first ``views`` of ``CAMERA_NAMES``), unless ``camera_names`` is given.
        frames: frames per clip ``T``, ``frame_dt`` seconds apart (each frame is a nuScenes keyframe).
        image_hw: ``(H, W)`` pixels.
        seed: world seed.
        max_boxes: box slots ``M`` per frame; each scene has ``min_boxes..max_boxes`` objects.
        cond_tokens: condition tokens ``L`` (default ``max_boxes + 1``: one scene token + one per box).
        cond_dim: width of a condition token (>= 22).
        map_hw: BEV raster size ``(Hm, Wm)`` over ``map_extent = (x_range, y_range)`` metres (see ``bev.py``).
        appearance: ``"plain"`` (flat class and ground colours: scenes fully set by their conditions) or
            ``"varied"`` (``appearance.py``: per-scene textures, lighting, weather, paint, skyline and sensor noise
            that the conditions do not give; geometry, boxes and road as in the plain world).

    Each item (tensors are CPU, no batch dimension):
        ``video`` float32 ``[NC, 3, T, H, W]`` in [-1, 1]; ``cams`` float32 ``[NC, 12]`` (``camera_features``);
        ``intrinsics`` ``[NC, 3, 3]``; ``cam2ego`` ``[NC, 4, 4]``; ``ego2global`` ``[T, 4, 4]`` (float32);
        ``boxes`` float32 ``[T, M, 9]`` (x, y, z, w, l, h, yaw, vx, vy in each frame's ego frame: metres,
        z at the box centre, yaw radians from +x towards +y, velocity m/s = global velocity rotated into
        the ego frame); ``labels`` int64 ``[T, M]`` (``CLASS_NAMES`` index, -1 padding); ``box_mask`` bool
        ``[T, M]``; ``box_pixels`` int64 ``[T, M]`` (pixels showing each box over all cameras);
        ``box_visibility`` float32 ``[T, M]`` (visible / unoccluded silhouette pixels, 0 if out of view);
        ``y`` float32 ``[L, cond_dim]`` (``encode_condition`` of frame 0); ``bev_map`` float32
        ``[3, Hm, Wm]`` in {0, 1} around the frame-0 ego (divider, ped_crossing, boundary); ``view_layout``
        float32 ``[NC, 15, T, H, W]`` in {0, 1} (``condition.view_layout``: ground and box classes per pixel);
        ``timestamps`` int64 ``[T]`` (microseconds); ``token``, ``scene_token`` (str), ``frame_tokens``
        (T str), ``instance_tokens`` (M str, '' for padding), ``camera_names`` (NC str), ``index`` (int).
    """

    def __init__(self, num_samples: int, views: int = 6, frames: int = 8, image_hw: Tuple[int, int] = (64, 112),
                 seed: int = 0, max_boxes: int = 8, cond_tokens: Optional[int] = None, cond_dim: int = 32,
                 map_hw: Tuple[int, int] = (64, 64), map_extent: Tuple[float, float] = (60.0, 30.0),
                 min_boxes: int = 3, frame_dt: float = 0.5, class_probs: Optional[Dict[str, float]] = None,
                 size_jitter: float = 0.05, camera_names: Optional[Sequence[str]] = None, appearance: str = "plain"):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if camera_names is None:
            if not 1 <= views <= len(CAMERA_NAMES):
                raise ValueError(f"views must be in 1..{len(CAMERA_NAMES)}, got {views}")
            camera_names = CAMERA_NAMES[:views]
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.num_samples = int(num_samples)
        self.frames = int(frames)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.seed = int(seed)
        self.max_boxes = int(max_boxes)
        self.min_boxes = min(int(min_boxes), self.max_boxes)
        self.cond_tokens = self.max_boxes + 1 if cond_tokens is None else int(cond_tokens)
        self.cond_dim = int(cond_dim)
        self.grid = BevGrid(tuple(map_hw), float(map_extent[0]), float(map_extent[1]))
        self.frame_dt = float(frame_dt)
        self.class_probs = class_probs
        self.size_jitter = float(size_jitter)
        self.appearance = check_appearance(appearance)
        self.camera_names, self.intrinsics, self.cam2ego = rig(self.image_hw, camera_names)
        self._renderer: Optional[Renderer] = None

    def __len__(self) -> int:
        return self.num_samples

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.intrinsics, self.cam2ego, self.image_hw)
        return self._renderer

    def scene(self, index: int) -> Scene:
        """The world of sample ``index``."""
        return generate_scene(self.seed, index, self.frames, self.frame_dt, self.min_boxes, self.max_boxes,
                              self.class_probs, self.size_jitter)

    def look(self, index: int) -> Optional[Appearance]:
        """The appearance of sample ``index`` (``None`` in the plain world)."""
        return draw_appearance(self.seed, index) if self.appearance == "varied" else None

    def render(self, index: int) -> Dict[str, np.ndarray]:
        """``Renderer.render`` output of sample ``index`` (images, box-id buffers, ground labels, pixel counts)."""
        return self.renderer.render(self.scene(index), look=self.look(index))

    def bev_map(self, index: int, frame: int = 0) -> np.ndarray:
        """``[3, Hm, Wm]`` bool road-layout raster around the ego of ``frame``."""
        scene = self.scene(index)
        return rasterize_map(scene.road.map_elements(), scene.ego2global(frame), self.grid, scene.road.line_width)

    def _check_index(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return index % self.num_samples if self.num_samples else index

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = self._check_index(int(index))
        scene = self.scene(index)
        r = self.renderer.render(scene, look=self.look(index))
        T, M = self.frames, self.max_boxes
        n = len(scene.tracks)
        boxes = np.zeros((T, M, 9), dtype=np.float32)
        labels = np.full((T, M), -1, dtype=np.int64)
        mask = np.zeros((T, M), dtype=bool)
        pixels = np.zeros((T, M), dtype=np.int64)
        vis = np.zeros((T, M), dtype=np.float32)
        for t in range(T):
            boxes[t, :n] = scene.boxes_ego(t)
        labels[:, :n] = [tr.label for tr in scene.tracks]
        mask[:, :n] = True
        pixels[:, :n] = r["visible"]
        vis[:, :n] = r["visible"] / np.maximum(r["silhouette"], 1)
        video = r["image"].astype(np.float32) / 127.5 - 1.0  # [NC, T, H, W, 3]
        e2g = np.stack([scene.ego2global(t) for t in range(T)]).astype(np.float32)
        bev = rasterize_map(scene.road.map_elements(), scene.ego2global(0), self.grid, scene.road.line_width)
        return {
            "video": torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))),
            "cams": torch.from_numpy(camera_features(self.intrinsics, self.cam2ego, self.image_hw)),
            "intrinsics": torch.from_numpy(self.intrinsics.astype(np.float32)),
            "cam2ego": torch.from_numpy(self.cam2ego.astype(np.float32)),
            "ego2global": torch.from_numpy(e2g),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "box_mask": torch.from_numpy(mask),
            "box_pixels": torch.from_numpy(pixels),
            "box_visibility": torch.from_numpy(vis),
            "y": encode_condition(boxes[0], labels[0], mask[0], self.cond_dim, self.cond_tokens),
            "bev_map": torch.from_numpy(bev.astype(np.float32)),
            "view_layout": torch.from_numpy(view_layout(r["ids"], r["ground"], [tr.label for tr in scene.tracks])),
            "timestamps": torch.from_numpy(scene.timestamps()),
            "token": make_token(self.seed, index),
            "scene_token": make_token(self.seed, index, "scene"),
            "frame_tokens": [make_token(self.seed, index, "frame", t) for t in range(T)],
            "instance_tokens": [make_token(self.seed, index, "instance", m) if m < n else "" for m in range(M)],
            "camera_names": list(self.camera_names),
            "index": index,
        }


def collate(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Batch items: tensors are stacked (new dim 0), ints become an int64 tensor, strings and lists of
    strings become lists (``batch["frame_tokens"][b][t]``)."""
    if not items:
        raise ValueError("cannot collate an empty list")
    out: Dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if torch.is_tensor(vals[0]):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], (bool, int)) and not isinstance(vals[0], str):
            out[key] = torch.tensor(vals, dtype=torch.int64)
        else:
            out[key] = list(vals)
    return out
