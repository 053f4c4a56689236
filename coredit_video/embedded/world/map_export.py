"""nuScenes map files for exported synthetic scenes: the map-expansion JSON read by ``NuScenesMap`` and the
semantic-prior mask PNG referenced by the ``map`` table.

All scenes of a data set share one location (each sits in its own tile of the global frame, see
``scene.py``). ``NuScenesMap`` only accepts the four real location names, so the synthetic map is
written under one of them (default ``boston-seaport``: right-hand traffic, like the synthetic world).
Layers written: ``drivable_area``, ``road_segment``, ``lane`` (with edge lines), ``ped_crossing``,
``walkway``, ``road_divider``, ``lane_divider`` and their ``polygon`` / ``line`` / ``node`` geometry;
``stop_line``, ``carpark_area``, ``road_block``, ``traffic_light`` and ``lane_connector`` are empty and
there are no arclines or connectivity (no lane graph). Enough for road-layout rasters and vector maps
(dividers, crossings, road boundaries as the outline of ``road_segment`` / ``lane`` polygons).
"""
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .scene import Scene

NUSCENES_LOCATIONS = ("singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown", "boston-seaport")
MASK_RESOLUTION = 0.1  # metres per pixel of the semantic-prior mask (the devkit's native resolution)
MAX_MASK_PIXELS = 256_000_000  # about 64 scenes (8 x 8 tiles of 200 m)


class _MapBuilder:
    def __init__(self, token):
        self.token = token  # callable(*parts) -> token
        self.layers: Dict[str, list] = {k: [] for k in (
            "polygon", "line", "node", "drivable_area", "road_segment", "road_block", "lane", "ped_crossing",
            "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
            "lane_connector")}

    def nodes(self, key, points: np.ndarray) -> List[str]:
        toks = []
        for j, (x, y) in enumerate(np.asarray(points, float)):
            t = self.token(key, "node", j)
            self.layers["node"].append({"token": t, "x": float(x), "y": float(y)})
            toks.append(t)
        return toks

    def line(self, key, points) -> Tuple[str, List[str]]:
        t = self.token(key, "line")
        nodes = self.nodes(key, points)
        self.layers["line"].append({"token": t, "node_tokens": nodes})
        return t, nodes

    def polygon(self, key, points) -> str:
        t = self.token(key, "polygon")
        self.layers["polygon"].append({"token": t, "exterior_node_tokens": self.nodes(key, points), "holes": []})
        return t


def build_expansion(scenes: Sequence[Scene], token) -> Dict:
    """Map-expansion dict (format version 1.3) of ``scenes``; ``token(*parts)`` makes record tokens."""
    b = _MapBuilder(token)
    max_xy = np.zeros(2)
    for sc in scenes:
        el = sc.road.map_elements()
        key = ("scene", sc.index)
        road_poly = b.polygon(key + ("road",), el["road"][0])
        da = token(*key, "drivable_area")
        b.layers["drivable_area"].append({"token": da, "polygon_tokens": [road_poly]})
        seg = token(*key, "road_segment")
        b.layers["road_segment"].append({"token": seg, "polygon_token": road_poly, "is_intersection": False,
                                         "drivable_area_token": da})
        for j, lane in enumerate(el["lanes"]):
            k = key + ("lane", j)
            # Lane polygons are (s0, l0), (s1, l0), (s1, l1), (s0, l1): the edges across the lane are 3-0 and 1-2.
            start, _ = b.line(k + ("from",), lane[[3, 0]])
            end, _ = b.line(k + ("to",), lane[[1, 2]])
            b.layers["lane"].append({"token": token(*k), "polygon_token": b.polygon(k, lane), "lane_type": "CAR",
                                     "from_edge_line_token": start, "to_edge_line_token": end,
                                     "left_lane_divider_segments": [], "right_lane_divider_segments": []})
        for j, poly in enumerate(el["ped_crossings"]):
            k = key + ("ped_crossing", j)
            b.layers["ped_crossing"].append({"token": token(*k), "polygon_token": b.polygon(k, poly),
                                             "road_segment_token": seg})
        for j, poly in enumerate(el["walkways"]):
            k = key + ("walkway", j)
            b.layers["walkway"].append({"token": token(*k), "polygon_token": b.polygon(k, poly)})
        for j, line in enumerate(el["road_dividers"]):
            k = key + ("road_divider", j)
            lt, _ = b.line(k, line)
            b.layers["road_divider"].append({"token": token(*k), "line_token": lt, "road_segment_token": seg})
        for j, line in enumerate(el["lane_dividers"]):
            k = key + ("lane_divider", j)
            lt, nodes = b.line(k, line)
            b.layers["lane_divider"].append({"token": token(*k), "line_token": lt, "lane_divider_segments": [
                {"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"} for n in nodes]})
        for poly in el["road"] + el["walkways"]:
            max_xy = np.maximum(max_xy, np.asarray(poly).max(0))
    out = dict(b.layers)
    out.update(version="1.3", canvas_edge=[float(np.ceil(max_xy[0])), float(np.ceil(max_xy[1]))],
               arcline_path_3={}, connectivity={})
    return out


def empty_expansion() -> Dict:
    """A valid map expansion with no records (for locations no exported scene uses)."""
    d = _MapBuilder(lambda *a: "").layers
    d.update(version="1.3", canvas_edge=[1.0, 1.0], arcline_path_3={}, connectivity={})
    return d


def write_expansions(out_dir: str, location: str, expansion: Dict) -> List[str]:
    """Write ``maps/expansion/<location>.json`` and empty ones for the other nuScenes locations (tools that load
    all four maps then work); existing files of other locations are left alone."""
    folder = os.path.join(out_dir, "maps", "expansion")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for loc in NUSCENES_LOCATIONS + ((location,) if location not in NUSCENES_LOCATIONS else ()):
        path = os.path.join(folder, f"{loc}.json")
        if loc != location and os.path.exists(path):
            continue
        with open(path, "w") as f:
            json.dump(expansion if loc == location else empty_expansion(), f)
        paths.append(path)
    return paths


def write_mask(path: str, scenes: Sequence[Scene], resolution: float = MASK_RESOLUTION) -> Tuple[int, int]:
    """Semantic-prior mask PNG (255 on roads and sidewalks, else 0) covering global ``[0, max x] x [0, max y]``
    at ``resolution`` m/px, row 0 at the largest y (the devkit's ``MapMask`` convention). Returns ``(H, W)``."""
    from PIL import Image, ImageDraw

    polys = []
    for sc in scenes:
        el = sc.road.map_elements()
        polys += el["road"] + el["walkways"]
    max_xy = np.max([np.asarray(p).max(0) for p in polys], axis=0) if polys else np.ones(2)
    w, h = int(np.ceil(max_xy[0] / resolution)) + 1, int(np.ceil(max_xy[1] / resolution)) + 1
    if w * h > MAX_MASK_PIXELS:
        raise ValueError(f"the map mask would be {w} x {h} pixels; export fewer scenes per call or pass "
                         "write_map_mask=False")
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for p in polys:
        p = np.asarray(p, float)
        draw.polygon([(x / resolution, h - y / resolution) for x, y in p], fill=255)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, compress_level=1)
    return h, w
