"""Per-scene appearance that the conditions do not give (the ``"varied"`` world): textures, lighting, weather,
paint, a skyline, sensor exposure and noise.

The plain world's scenes are fully set by their conditions (boxes, road map, cameras) and painted in flat
colours, so a generator's flow to them is nearly straight. An ``Appearance`` adds what a street adds and the
conditions leave open, drawn per scene from ``(seed, index)`` on a stream of its own (the scene's geometry,
boxes and road are those of the plain world):

- **textures** of asphalt, sidewalk and grass: value noise in global ground coordinates (so they stay put across
  frames and cameras), at 0.35 m, 1.4 m and 5 m, with per-scene amplitudes and tints; **lane-marking wear**: paint
  faded towards the asphalt under a noise mask;
- a **skyline** of facades (window grids) and tree crowns behind the road, at infinity, by global azimuth;
- **lighting and time of day** (day, overcast, dusk): sun direction (the boxes' shading), sky colours, a
  colour-temperature tint; **weather**: clear, fog (distance haze), wet (darker, lower-contrast ground);
- **paint**: per-object brightness (the class's chromaticity is kept, so the built-in perception still reads
  the class);
- **sensor**: exposure gain and Gaussian read noise per pixel.

Colours stay in the ranges the built-in perception accepts (ground within its colour radius on most pixels, box
chromaticity within its tolerance), so detection and BEV metrics still score the layout.
"""
from dataclasses import dataclass
import numpy as np

from .classes import CROSSING_COLOR, DIVIDER_COLOR, GRASS_COLOR, ROAD_COLOR, SIDEWALK_COLOR
from .scene import CROSSING, DIVIDER, GRASS, ROAD, SIDEWALK

APPEARANCES = ("plain", "varied")
_STREAM = 0xA11  # the appearance's own random stream beside the scene's
_LIGHTING = ("day", "overcast", "dusk")
_WEATHER = ("clear", "fog", "wet")
_SKY = {  # (top, horizon) RGB 0..255 per lighting
    "day": ((118, 160, 212), (196, 212, 228)),
    "overcast": ((150, 156, 166), (190, 192, 196)),
    "dusk": ((92, 100, 150), (226, 166, 122)),
}


def value_noise(xy: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [-1, 1] at points ``xy [..., 2]`` (metres): bilinear interpolation of hashed values on a
    lattice of spacing ``scale`` metres."""
    p = xy / scale
    i = np.floor(p)
    f = p - i
    f = f * f * (3 - 2 * f)  # smoothstep
    i = i.astype(np.int64)

    def h(dx, dy):
        a = (i[..., 0] + dx) * 374761393 + (i[..., 1] + dy) * 668265263 + seed * 2147483647
        a = (a ^ (a >> 13)) * 1274126177
        a = a ^ (a >> 16)
        return (a & 0xFFFF).astype(np.float64) / 32767.5 - 1.0

    top = h(0, 0) * (1 - f[..., 0]) + h(1, 0) * f[..., 0]
    bot = h(0, 1) * (1 - f[..., 0]) + h(1, 1) * f[..., 0]
    return top * (1 - f[..., 1]) + bot * f[..., 1]


@dataclass
class Appearance:
    """One scene's look. Colours are RGB 0..255; ``gain`` and ``tint`` act on the final image."""
    lighting: str
    weather: str
    sun: np.ndarray  # [3] unit vector, global frame
    sky_top: np.ndarray  # [3]
    sky_horizon: np.ndarray  # [3]
    ground_colors: np.ndarray  # [5, 3] per ground label (GRASS..CROSSING)
    texture_amp: np.ndarray  # [5] texture amplitude per ground label, colour levels
    wear: float  # 0..1: how much of the paint is faded
    fog_distance: float  # metres (inf: no fog)
    fog_color: np.ndarray  # [3]
    box_gain: np.ndarray  # [64] per-box brightness (index = track number)
    skyline: np.ndarray  # [360] skyline elevation (rad) per global azimuth degree; <= 0: no building there
    facade: np.ndarray  # [360, 3] facade colour per azimuth degree
    tree: np.ndarray  # [360] bool: a tree crown (not a facade) at that azimuth
    gain: float  # exposure
    tint: np.ndarray  # [3] white-balance multipliers
    noise_sigma: float  # read noise, colour levels
    seed: int  # texture and noise seed

    # ------------------------------------------------------------------ ground and sky
    def ground(self, labels: np.ndarray, gxy: np.ndarray) -> np.ndarray:
        """Colours ``[P, 3]`` of ground points with ``labels [P]`` at global ``gxy [P, 2]`` metres."""
        base = self.ground_colors[labels].astype(np.float64)
        n = (0.5 * value_noise(gxy, 0.35, self.seed) + 0.3 * value_noise(gxy, 1.4, self.seed + 1)
             + 0.2 * value_noise(gxy, 5.0, self.seed + 2))
        col = base + (self.texture_amp[labels] * n)[:, None] * np.array([1.0, 1.0, 0.95])
        paint = (labels == DIVIDER) | (labels == CROSSING)
        if paint.any():
            w = np.clip(self.wear * (0.6 + value_noise(gxy[paint], 0.5, self.seed + 3)), 0, 0.7)[:, None]
            asphalt = self.ground_colors[ROAD] + self.texture_amp[ROAD] * n[paint][:, None]
            col[paint] = (1 - w) * col[paint] + w * asphalt
        return col

    def sky(self, rays_global: np.ndarray) -> np.ndarray:
        """Colours ``[P, 3]`` of rays ``[P, 3]`` (global frame, unit) above the horizon: sky and skyline."""
        elev = np.arcsin(np.clip(rays_global[:, 2], -1, 1))
        t = np.clip(elev / 0.35, 0, 1)[:, None]
        col = (1 - t) * self.sky_horizon + t * self.sky_top
        az = np.degrees(np.arctan2(rays_global[:, 1], rays_global[:, 0]))
        a = np.mod(np.floor(az).astype(np.int64), 360)
        hit = elev < self.skyline[a]
        if hit.any():
            az_h, el_h = az[hit], elev[hit]
            fac = self.facade[a[hit]].astype(np.float64)
            windows = (np.mod(az_h * 2.0, 1.0) < 0.45) & (np.mod(el_h * 90.0, 1.0) < 0.5)
            fac = np.where(windows[:, None], fac * 0.62, fac)
            leaves = value_noise(np.stack([az_h, el_h * 57.3], -1), 1.2, self.seed + 4)
            tree_col = np.array([58.0, 84.0, 52.0]) * (1 + 0.25 * leaves)[:, None]
            col[hit] = np.where(self.tree[a[hit]][:, None], tree_col, fac)
        return col

    # ------------------------------------------------------------------ image-wide effects
    def finish(self, img: np.ndarray, distance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Fog by ``distance [H, W]`` metres (inf: sky), exposure, tint and read noise on ``img [H, W, 3]``."""
        if np.isfinite(self.fog_distance):
            f = 1 - np.exp(-np.minimum(distance, 1e4) / self.fog_distance)
            f = np.where(np.isfinite(distance), f, 0.85)[..., None]
            img = (1 - f) * img + f * self.fog_color
        img = img * (self.gain * self.tint)
        return img + rng.normal(0.0, self.noise_sigma, img.shape)


def draw_appearance(seed: int, index: int) -> Appearance:
    """The appearance of scene ``index`` of the world seeded by ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index, _STREAM])
    lighting = _LIGHTING[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    weather = _WEATHER[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    sun_el = {"day": rng.uniform(0.5, 1.2), "overcast": rng.uniform(0.9, 1.4),
              "dusk": rng.uniform(0.12, 0.35)}[lighting]  # all three drawn: the stream does not depend on lighting
    sun_az = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    top, hor = (np.array(c, np.float64) for c in _SKY[lighting])
    top = top + rng.normal(0, 8, 3)
    hor = hor + rng.normal(0, 8, 3)
    ground = np.array([GRASS_COLOR, SIDEWALK_COLOR, ROAD_COLOR, DIVIDER_COLOR, CROSSING_COLOR], np.float64)
    ground[ROAD] += rng.uniform(-10, 10) + rng.normal(0, 2, 3)  # fresh or bleached asphalt
    ground[SIDEWALK] += rng.uniform(-14, 10) + rng.normal(0, 3, 3)
    ground[GRASS] += rng.normal(0, 6, 3) * np.array([1.0, 0.8, 1.0]) + np.array([rng.uniform(-6, 10), 0, 0])
    amp = np.array([rng.uniform(8, 22), rng.uniform(6, 16), rng.uniform(6, 18), 6.0, 6.0])
    if weather == "wet":
        ground[[ROAD, SIDEWALK]] *= rng.uniform(0.72, 0.85)
        amp[[ROAD, SIDEWALK]] *= 0.6
    fog = rng.uniform(70, 160) if weather == "fog" else np.inf
    fog_color = np.array([182.0, 186.0, 190.0]) + rng.normal(0, 5, 3)
    if lighting == "dusk":
        fog_color = fog_color * np.array([1.0, 0.92, 0.85])
    # Skyline: runs of buildings and trees along the global azimuth, gaps of open sky.
    skyline = np.zeros(360)
    facade = np.zeros((360, 3))
    tree = np.zeros(360, dtype=bool)
    density = rng.uniform(0.3, 0.9)
    a = int(rng.integers(360))
    for _ in range(200):
        w = int(rng.integers(4, 25))
        if rng.random() < density:
            idx = np.arange(a, a + w) % 360
            is_tree = rng.random() < 0.35
            skyline[idx] = rng.uniform(0.03, 0.10) if is_tree else rng.uniform(0.04, 0.22)
            grey = rng.uniform(110, 190)
            facade[idx] = grey * (1 + rng.normal(0, 0.06, 3))  # low saturation: never a box's chromaticity
            tree[idx] = is_tree
        a += w
        if a >= int(rng.integers(360)) + 720:
            break
    gain = {"day": rng.uniform(0.92, 1.1), "overcast": rng.uniform(0.85, 1.0), "dusk": rng.uniform(0.8, 0.92)}[lighting]
    tint = {"day": np.array([1.0, 1.0, 1.0]), "overcast": np.array([0.98, 1.0, 1.03]),
            "dusk": np.array([1.06, 0.99, 0.91])}[lighting] * (1 + rng.normal(0, 0.012, 3))
    return Appearance(lighting=lighting, weather=weather, sun=sun, sky_top=top, sky_horizon=hor, ground_colors=ground,
                      texture_amp=amp, wear=float(rng.uniform(0.0, 0.8)), fog_distance=float(fog), fog_color=fog_color,
                      box_gain=rng.uniform(0.8, 1.12, 64), skyline=skyline, facade=facade, tree=tree,
                      gain=float(gain), tint=tint, noise_sigma=float(rng.uniform(1.0, 4.0)),
                      seed=int(rng.integers(1 << 20)))


def check_appearance(name: str) -> str:
    if name not in APPEARANCES:
        raise ValueError(f"appearance must be one of {APPEARANCES}, got {name!r}")
    return name

