"""Procedural scenes: a straight road with lane dividers, a zebra crossing and sidewalks, an ego car
driving along it and a few moving or static objects, all at constant velocity.

Frames: the *road frame* has ``s`` along the road and ``l`` to its left (metres); the road spans
``|s| <= length / 2`` and is placed in the global frame by ``origin`` and ``heading``. Scene ``i``
lives in its own 200 m x 200 m tile of the global frame (tiles follow a Z-order curve from the
origin), so the scenes of one dataset never overlap and can share one map.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .classes import CLASS_NAMES, CLASS_SIZES, DEFAULT_CLASS_PROBS
from .geometry import make_transform, wrap_angle, yaw_matrix

TILE_SIZE = 200.0  # metres of global frame per scene
EGO_LENGTH, EGO_WIDTH, EGO_REAR_OVERHANG = 4.8, 2.0, 1.1  # ego footprint around the rear axle (ego origin)

# Ground label codes painted on the ground plane (see ``Road.ground_labels``).
GRASS, SIDEWALK, ROAD, DIVIDER, CROSSING = 0, 1, 2, 3, 4


def tile_of(index: int) -> Tuple[int, int]:
    """Z-order (Morton) tile ``(ix, iy)`` of scene ``index``: bits alternate between x and y."""
    ix = iy = 0
    for bit in range(32):
        ix |= ((index >> (2 * bit)) & 1) << bit
        iy |= ((index >> (2 * bit + 1)) & 1) << bit
    return ix, iy


@dataclass
class Road:
    """A straight two-way road. Right-hand traffic: lanes with ``l < 0`` drive towards ``+s``."""
    origin: np.ndarray  # global (x, y) of road-frame (s, l) = (0, 0)
    heading: float  # global yaw of +s, radians
    length: float = 180.0
    lane_width: float = 3.5
    lanes_per_direction: int = 2
    crossing_s: float = 20.0  # the crossing covers crossing_s <= s <= crossing_s + crossing_depth
    crossing_depth: float = 4.0
    line_width: float = 0.3  # painted divider width (wider than real ones so they survive low resolutions)
    stripe_width: float = 0.5  # zebra stripes and gaps
    dash_length: float = 3.0  # lane-divider dashes and gaps
    sidewalk_width: float = 3.0

    @property
    def half_width(self) -> float:
        return self.lane_width * self.lanes_per_direction

    def to_global(self, s, l) -> np.ndarray:
        """Road coordinates -> global ``(x, y)`` ``[..., 2]``."""
        c, sn = np.cos(self.heading), np.sin(self.heading)
        s, l = np.asarray(s, float), np.asarray(l, float)
        return np.stack([self.origin[0] + c * s - sn * l, self.origin[1] + sn * s + c * l], axis=-1)

    def to_road(self, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Global ``(x, y)`` ``[..., 2]`` -> road coordinates ``(s, l)``."""
        c, sn = np.cos(self.heading), np.sin(self.heading)
        dx, dy = xy[..., 0] - self.origin[0], xy[..., 1] - self.origin[1]
        return c * dx + sn * dy, -sn * dx + c * dy

    def ground_labels(self, s: np.ndarray, l: np.ndarray) -> np.ndarray:
        """Painted ground label (GRASS, SIDEWALK, ROAD, DIVIDER or CROSSING) at road coordinates, int8."""
        hw, al = self.half_width, np.abs(l)
        along = np.abs(s) <= self.length / 2
        lab = np.full(np.shape(s), GRASS, dtype=np.int8)
        lab[along & (al <= hw + self.sidewalk_width)] = SIDEWALK
        road = along & (al <= hw)
        lab[road] = ROAD
        in_cross = road & (s >= self.crossing_s) & (s <= self.crossing_s + self.crossing_depth)
        half = self.line_width / 2
        lines = road & ~in_cross & (al <= half)  # solid centre line
        dash_on = np.mod(s + self.length / 2, 2 * self.dash_length) < self.dash_length
        for k in range(1, self.lanes_per_direction):
            lines |= road & ~in_cross & dash_on & (np.abs(al - k * self.lane_width) <= half)
        lab[lines] = DIVIDER
        stripes = np.mod(l + hw, 2 * self.stripe_width) < self.stripe_width
        lab[in_cross & stripes] = CROSSING
        return lab

    def map_elements(self) -> Dict[str, list]:
        """Vector map in global (x, y), split by kind (all arrays ``[P, 2]``, metres):

        ``road_dividers`` / ``lane_dividers`` (polylines, interrupted by the crossing), ``ped_crossings``,
        ``lanes``, ``walkways`` and ``road`` (polygons, counter-clockwise, not closed) and ``boundaries``
        (closed polylines: the road outline).
        """
        L, hw, cs, cd = self.length / 2, self.half_width, self.crossing_s, self.crossing_depth
        pieces = [(-L, cs), (cs + cd, L)]

        def line(l):
            return [self.to_global(np.array([a, b]), np.array([l, l])) for a, b in pieces if b > a]

        def rect(s0, s1, l0, l1):
            return self.to_global(np.array([s0, s1, s1, s0]), np.array([l0, l0, l1, l1]))

        lane_dividers = []
        for k in range(1, self.lanes_per_direction):
            lane_dividers += line(k * self.lane_width) + line(-k * self.lane_width)
        lanes = []
        for k in range(self.lanes_per_direction):
            lanes.append(rect(-L, L, -(k + 1) * self.lane_width, -k * self.lane_width))
            lanes.append(rect(-L, L, k * self.lane_width, (k + 1) * self.lane_width))
        outline = rect(-L, L, -hw, hw)
        return {
            "road_dividers": line(0.0),
            "lane_dividers": lane_dividers,
            "ped_crossings": [rect(cs, cs + cd, -hw, hw)],
            "lanes": lanes,
            "walkways": [rect(-L, L, hw, hw + self.sidewalk_width), rect(-L, L, -hw - self.sidewalk_width, -hw)],
            "road": [outline],
            "boundaries": [np.concatenate([outline, outline[:1]])],
        }


@dataclass
class Track:
    """One object moving at constant velocity along ``heading`` (road-relative yaw, radians)."""
    label: int
    size: np.ndarray  # (w, l, h) metres
    s0: float
    l0: float
    heading: float
    speed: float  # m/s

    def road_position(self, time: float) -> Tuple[float, float]:
        return (self.s0 + self.speed * np.cos(self.heading) * time,
                self.l0 + self.speed * np.sin(self.heading) * time)


@dataclass
class Scene:
    """One sample's world. ``frame_dt`` seconds between frames, ``num_frames`` frames."""
    index: int
    road: Road
    ego_s0: float
    ego_l: float
    ego_speed: float
    tracks: List[Track]
    num_frames: int
    frame_dt: float
    timestamp0: int  # microseconds of frame 0
    extra: Dict[str, float] = field(default_factory=dict)

    def times(self) -> np.ndarray:
        return np.arange(self.num_frames) * self.frame_dt

    def timestamps(self) -> np.ndarray:
        """``[T]`` int64 microseconds."""
        return self.timestamp0 + np.round(self.times() * 1e6).astype(np.int64)

    def ego_road(self, t: int) -> Tuple[float, float]:
        return self.ego_s0 + self.ego_speed * t * self.frame_dt, self.ego_l

    def ego2global(self, t: int) -> np.ndarray:
        """``[4, 4]`` ego->global pose of frame ``t`` (the ego heads along the road, on the ground)."""
        s, l = self.ego_road(t)
        xy = self.road.to_global(s, l)
        return make_transform(yaw_matrix(self.road.heading), [xy[0], xy[1], 0.0])

    def boxes_global(self, t: int) -> Dict[str, np.ndarray]:
        """Boxes of frame ``t`` in the global frame: ``center [M, 3]`` (z at half height), ``size [M, 3]``
        (w, l, h), ``yaw [M]``, ``velocity [M, 2]`` (m/s), ``labels [M]``."""
        time = t * self.frame_dt
        m = len(self.tracks)
        center = np.zeros((m, 3))
        size = np.zeros((m, 3))
        yaw = np.zeros(m)
        vel = np.zeros((m, 2))
        for i, tr in enumerate(self.tracks):
            s, l = tr.road_position(time)
            center[i, :2] = self.road.to_global(s, l)
            center[i, 2] = tr.size[2] / 2
            size[i] = tr.size
            yaw[i] = wrap_angle(self.road.heading + tr.heading)
            vel[i] = tr.speed * np.array([np.cos(yaw[i]), np.sin(yaw[i])])
        labels = np.array([tr.label for tr in self.tracks], dtype=np.int64)
        return {"center": center, "size": size, "yaw": yaw, "velocity": vel, "labels": labels}

    def boxes_ego(self, t: int) -> np.ndarray:
        """``[M, 9]`` boxes of frame ``t`` in its ego frame: x, y, z (centre), w, l, h, yaw, vx, vy.

        Velocities are the global velocities rotated into the ego frame (not relative to the ego).
        """
        g = self.boxes_global(t)
        e2g = self.ego2global(t)
        r, o = e2g[:3, :3], e2g[:3, 3]
        center = (g["center"] - o) @ r
        ego_yaw = np.arctan2(r[1, 0], r[0, 0])
        yaw = wrap_angle(g["yaw"] - ego_yaw)
        vel = g["velocity"] @ r[:2, :2]
        return np.concatenate([center, g["size"], yaw[:, None], vel], axis=1)


def _footprint(s: float, l: float, size: np.ndarray, heading: float, margin: float) -> np.ndarray:
    """Axis-aligned road-frame rectangle (s0, s1, l0, l1) of a box whose heading is a multiple of 90 deg."""
    along = abs(np.cos(heading)) > 0.5
    ds, dl = (size[1], size[0]) if along else (size[0], size[1])
    return np.array([s - ds / 2 - margin, s + ds / 2 + margin, l - dl / 2 - margin, l + dl / 2 + margin])


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def generate_scene(seed: int, index: int, num_frames: int = 8, frame_dt: float = 0.5, min_boxes: int = 3,
                   max_boxes: int = 8, class_probs: Optional[Dict[str, float]] = None,
                   size_jitter: float = 0.05) -> Scene:
    """Scene ``index`` of the world seeded by ``seed``: a deterministic function of ``(seed, index)`` and the
    arguments only. Places between ``min_boxes`` and ``max_boxes`` objects that never touch each other or
    the ego during the clip."""
    if not 1 <= min_boxes <= max_boxes:
        raise ValueError(f"need 1 <= min_boxes <= max_boxes, got {min_boxes}, {max_boxes}")
    rng = np.random.default_rng([seed, index])
    probs = dict(DEFAULT_CLASS_PROBS if class_probs is None else class_probs)
    names = [n for n in CLASS_NAMES if probs.get(n, 0) > 0]
    p = np.array([probs[n] for n in names], dtype=float)
    p /= p.sum()

    ix, iy = tile_of(index)
    origin = np.array([(ix + 0.5) * TILE_SIZE, (iy + 0.5) * TILE_SIZE]) + rng.uniform(-5, 5, size=2)
    heading = float(wrap_angle(rng.integers(4) * np.pi / 2 + rng.uniform(-0.17, 0.17)))
    lanes = int(rng.integers(1, 3))
    lw = float(rng.uniform(3.2, 3.8))
    ego_s0 = float(rng.uniform(-25, -15))
    road = Road(origin=origin, heading=heading, lane_width=lw, lanes_per_direction=lanes,
                crossing_s=ego_s0 + float(rng.uniform(8, 30)))
    hw = road.half_width
    ego_l = -(int(rng.integers(lanes)) + 0.5) * lw
    ego_speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(2, 10))
    times = np.arange(num_frames) * frame_dt

    def ego_rect(time):
        s = ego_s0 + ego_speed * time + (EGO_LENGTH / 2 - EGO_REAR_OVERHANG)
        return _footprint(s, ego_l, np.array([EGO_WIDTH, EGO_LENGTH, 0]), 0.0, 0.5)

    target = int(rng.integers(min_boxes, max_boxes + 1))
    tracks: List[Track] = []
    for _ in range(60 * max_boxes):
        if len(tracks) == target:
            break
        name = names[int(rng.choice(len(names), p=p))]
        label = CLASS_NAMES.index(name)
        size = np.array(CLASS_SIZES[name]) * (1 + rng.uniform(-size_jitter, size_jitter, size=3))
        s0 = ego_s0 + float(rng.uniform(-30, 50))
        left = bool(rng.random() < 0.5)
        side = 1.0 if left else -1.0
        if name in ("car", "truck", "bus", "trailer", "construction_vehicle", "motorcycle"):
            l0 = side * (int(rng.integers(lanes)) + 0.5) * lw
            head = np.pi if left else 0.0
            vmax = {"car": 12, "motorcycle": 12, "truck": 10}.get(name, 8)
            speed = 0.0 if rng.random() < 0.25 else float(rng.uniform(1, vmax))
        elif name == "bicycle":
            l0 = side * (hw - 0.7)
            head = np.pi if left else 0.0
            speed = float(rng.uniform(0, 6))
        elif name == "pedestrian":
            if rng.random() < 0.5:  # crossing the road on the zebra
                s0 = road.crossing_s + float(rng.uniform(0.5, road.crossing_depth - 0.5))
                l0 = float(rng.uniform(-hw - 2, hw + 2))
                head = -np.pi / 2 if l0 > 0 else np.pi / 2
                speed = float(rng.uniform(0.8, 1.6))
            else:  # walking on a sidewalk
                l0 = side * float(rng.uniform(hw + 0.6, hw + road.sidewalk_width - 0.6))
                head = 0.0 if rng.random() < 0.5 else np.pi
                speed = float(rng.uniform(0, 1.5))
        elif name == "traffic_cone":
            l0 = side * float(rng.uniform(hw - 1.2, hw - 0.4))
            head, speed = 0.0, 0.0
        else:  # barrier: its long side (w) along the road edge
            l0 = side * float(rng.uniform(hw - 0.7, hw - 0.4))
            head, speed = np.pi / 2, 0.0
        s0 = float(np.clip(s0, -road.length / 2 + 8, road.length / 2 - 8))
        track = Track(label, size, s0, float(l0), float(head), float(speed))
        ok = True
        for time in times:
            rect = _footprint(*track.road_position(time), size, head, 0.3)
            if _overlap(rect, ego_rect(time)):
                ok = False
                break
            for other in tracks:
                if _overlap(rect, _footprint(*other.road_position(time), other.size, other.heading, 0.3)):
                    ok = False
                    break
            if not ok:
                break
        if ok:
            tracks.append(track)
    timestamp0 = 1_600_000_000_000_000 + index * 1_000_000_000
    return Scene(index=index, road=road, ego_s0=ego_s0, ego_l=float(ego_l), ego_speed=ego_speed, tracks=tracks,
                 num_frames=num_frames, frame_dt=frame_dt, timestamp0=timestamp0)
