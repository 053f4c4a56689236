"""A small rasteriser for ``Scene``s: ray-cast ground and sky, boxes drawn with the painter's algorithm.

Every pixel centre's ray is intersected with the ground plane z = 0 (flat world) and coloured by the
road paint there; rays above the horizon get a sky gradient. Boxes are sorted far to near from the
camera and their camera-facing faces filled as convex polygons (clipped at a near plane), each face
the class colour times a fixed Lambertian shading factor in [0.55, 1] (chromaticity is kept).
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .appearance import Appearance
from .cameras import pixel_rays
from .classes import (CLASS_COLORS, CLASS_NAMES, CROSSING_COLOR, DIVIDER_COLOR, GRASS_COLOR, ROAD_COLOR,
                      SIDEWALK_COLOR, SKY_HORIZON_COLOR, SKY_TOP_COLOR)
from .geometry import BOX_FACES, box_corners
from .scene import CROSSING, DIVIDER, GRASS, ROAD, SIDEWALK, Scene

NEAR = 0.05  # near clipping plane, metres
SUN = np.array([0.35, 0.25, 0.90]) / np.linalg.norm([0.35, 0.25, 0.90])  # global light direction
MIN_SHADE = 0.55

_GROUND_COLORS = np.zeros((5, 3), dtype=np.float32)
for _code, _col in ((GRASS, GRASS_COLOR), (SIDEWALK, SIDEWALK_COLOR), (ROAD, ROAD_COLOR), (DIVIDER, DIVIDER_COLOR),
                    (CROSSING, CROSSING_COLOR)):
    _GROUND_COLORS[_code] = _col
CLASS_COLOR_ARRAY = np.array([CLASS_COLORS[n] for n in CLASS_NAMES], dtype=np.float32)


def fill_convex(poly: np.ndarray, hw: Tuple[int, int]):
    """Pixels whose centres lie inside convex polygon ``poly [k, 2]`` (u, v pixel coords; pixel centres at
    integers). Returns ``(v0, u0, mask [h', w'])`` for the clipped bounding box, or ``None`` if empty."""
    h, w = hw
    u0, u1 = max(0, int(np.ceil(poly[:, 0].min()))), min(w - 1, int(np.floor(poly[:, 0].max())))
    v0, v1 = max(0, int(np.ceil(poly[:, 1].min()))), min(h - 1, int(np.floor(poly[:, 1].max())))
    if u0 > u1 or v0 > v1:
        return None
    x = poly[:, 0]
    y = poly[:, 1]
    area = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    if abs(area) < 1e-9:
        return None
    if area < 0:
        poly = poly[::-1]
    a, b = poly, np.roll(poly, -1, axis=0)
    uu = np.arange(u0, u1 + 1, dtype=np.float64)
    vv = np.arange(v0, v1 + 1, dtype=np.float64)
    # With positive shoelace area, p is inside iff cross(b - a, p - a) >= 0 for every edge.
    ex, ey = (b - a)[:, 0], (b - a)[:, 1]
    cu = ex[:, None, None] * (vv[None, :, None] - a[:, 1, None, None])
    cv = ey[:, None, None] * (uu[None, None, :] - a[:, 0, None, None])
    mask = np.all(cu - cv >= -1e-9, axis=0)
    return v0, u0, mask


def clip_near(points: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Clip a polygon ``[k, 3]`` in camera coordinates to ``z >= near`` (Sutherland-Hodgman, one plane)."""
    out = []
    k = len(points)
    for i in range(k):
        p, q = points[i], points[(i + 1) % k]
        pin, qin = p[2] >= near, q[2] >= near
        if pin:
            out.append(p)
        if pin != qin:
            a = (near - p[2]) / (q[2] - p[2])
            out.append(p + a * (q - p))
    return np.array(out) if out else np.zeros((0, 3))


class Renderer:
    """Renders ``Scene``s for a fixed rig. ``intrinsics [NC, 3, 3]``, ``cam2ego [NC, 4, 4]``, ``image_hw``."""

    def __init__(self, intrinsics: np.ndarray, cam2ego: np.ndarray, image_hw: Tuple[int, int]):
        self.K = np.asarray(intrinsics, dtype=np.float64)
        self.E = np.asarray(cam2ego, dtype=np.float64)
        self.hw = tuple(int(x) for x in image_hw)
        nc = len(self.K)
        h, w = self.hw
        self.rays = np.stack([pixel_rays(self.K[c], self.E[c], self.hw) for c in range(nc)])  # [NC, H, W, 3]
        dz = self.rays[..., 2]
        self.ground = dz < -1e-9
        cam_z = self.E[:, 2, 3][:, None, None]
        dist = np.where(self.ground, -cam_z / np.where(self.ground, dz, -1.0), 0.0)
        self.distance = np.where(self.ground, dist, np.inf)  # [NC, H, W] metres to the ground (inf: sky)
        self.ground_xy = self.E[:, None, None, :2, 3] + dist[..., None] * self.rays[..., :2]  # ego (x, y)
        elev = np.clip(np.arcsin(np.clip(dz, 0, 1)) / 0.35, 0, 1)[..., None]
        sky = (1 - elev) * np.array(SKY_HORIZON_COLOR, np.float32) + elev * np.array(SKY_TOP_COLOR, np.float32)
        self.sky = sky.astype(np.float32)  # [NC, H, W, 3]

    def background(self, scene: Scene, t: int, look: Optional[Appearance] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Ground + sky colours ``[NC, H, W, 3]`` (0..255; float32 plain, float64 with ``look``) and ground labels
        ``[NC, H, W]`` (-1: sky)."""
        e2g = scene.ego2global(t)
        xy = self.ground_xy[self.ground]
        gxy = xy @ e2g[:2, :2].T + e2g[:2, 3]
        s, l = scene.road.to_road(gxy)
        lab = np.full(self.ground.shape, -1, dtype=np.int8)
        lab[self.ground] = scene.road.ground_labels(s, l)
        if look is None:
            img = self.sky.copy()
            img[self.ground] = _GROUND_COLORS[lab[self.ground]]
            return img, lab
        img = np.zeros(self.sky.shape, np.float64)
        img[self.ground] = look.ground(lab[self.ground], gxy)
        img[~self.ground] = look.sky(self.rays[~self.ground] @ e2g[:3, :3].T)
        return img, lab

    def render(self, scene: Scene, frames: Sequence[int] = None, look: Optional[Appearance] = None
               ) -> Dict[str, np.ndarray]:
        """Render frames (default: all) of ``scene`` from every camera, in flat colours or with the appearance
        ``look`` (``appearance.py``: textures, lighting, weather, paint, sensor).

        Returns ``image`` uint8 ``[NC, T, H, W, 3]``, ``ids`` int16 ``[NC, T, H, W]`` (visible box index,
        -1 for ground/sky), ``ground`` int8 ``[NC, T, H, W]`` (ground label under each pixel, -1 for sky,
        whether or not a box covers it) and per-box pixel counts ``visible [T, M]`` (pixels showing the
        box in all cameras) and ``silhouette [T, M]`` (pixels it would cover with nothing in front).
        """
        frames = list(range(scene.num_frames)) if frames is None else list(frames)
        nc, (h, w), m = len(self.K), self.hw, len(scene.tracks)
        image = np.zeros((nc, len(frames), h, w, 3), dtype=np.uint8)
        ids = np.full((nc, len(frames), h, w), -1, dtype=np.int16)
        ground = np.zeros((nc, len(frames), h, w), dtype=np.int8)
        visible = np.zeros((len(frames), m), dtype=np.int64)
        silhouette = np.zeros((len(frames), m), dtype=np.int64)
        for j, t in enumerate(frames):
            bg, lab = self.background(scene, t, look)
            ground[:, j] = lab
            boxes = scene.boxes_ego(t)
            corners = box_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6])  # [M, 8, 3]
            centers = boxes[:, :3]
            # Face normals in the ego frame; shading uses the global light rotated into the ego frame.
            face_c = corners[:, BOX_FACES].mean(axis=2)  # [M, 6, 3]
            normals = face_c - centers[:, None]
            normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
            sun_ego = scene.ego2global(t)[:3, :3].T @ (SUN if look is None else look.sun)
            shade = MIN_SHADE + (1 - MIN_SHADE) * np.clip(normals @ sun_ego, 0, 1)  # [M, 6]
            labels = [tr.label for tr in scene.tracks]
            for c in range(nc):
                img, idb = bg[c], ids[c, j]
                dist = self.distance[c].copy() if look is not None else None  # for the look's fog
                r, tc = self.E[c, :3, :3], self.E[c, :3, 3]
                cam_corners = (corners - tc) @ r  # [M, 8, 3] camera frame
                cam_faces = (face_c - tc) @ r
                cam_normals = normals @ r
                order = np.argsort(-np.linalg.norm(centers - tc, axis=1), kind="stable")
                for k in order:
                    if np.all(cam_corners[k, :, 2] < NEAR):
                        continue
                    base = CLASS_COLOR_ARRAY[labels[k]] * (1.0 if look is None else look.box_gain[k % 64])
                    box_dist = float(np.linalg.norm(centers[k] - tc)) if dist is not None else None
                    for f in range(6):
                        if np.dot(cam_normals[k, f], cam_faces[k, f]) >= 0:  # back face
                            continue
                        poly = clip_near(cam_corners[k, BOX_FACES[f]])
                        if len(poly) < 3:
                            continue
                        uv = np.stack([self.K[c, 0, 0] * poly[:, 0] / poly[:, 2] + self.K[c, 0, 2],
                                       self.K[c, 1, 1] * poly[:, 1] / poly[:, 2] + self.K[c, 1, 2]], axis=1)
                        hit = fill_convex(uv, self.hw)
                        if hit is None:
                            continue
                        v0, u0, mask = hit
                        win = (slice(v0, v0 + mask.shape[0]), slice(u0, u0 + mask.shape[1]))
                        img[win][mask] = base * shade[k, f]
                        idb[win][mask] = k
                        if dist is not None:
                            dist[win][mask] = box_dist
                        silhouette[j, k] += int(mask.sum())
                if look is not None:
                    img = look.finish(img, dist, np.random.default_rng([look.seed, t, c]))
                image[c, j] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
                if m:
                    visible[j] += np.bincount(idb[idb >= 0].astype(np.int64), minlength=m)
        return {"image": image, "ids": ids, "ground": ground, "visible": visible, "silhouette": silhouette}
