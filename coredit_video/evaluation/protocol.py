"""Every choice of the evaluation protocol, in one validated dataclass.

The default, :func:`w_coda`, follows the W-CODA 2024 Track 2 evaluation (``pixeli99/W-CODA2024-Track2``), which
MagicDrive-V2 used for its Table of controllability (mAP / mIoU with BEVFormer, FVD with the VideoGPT I3D), and
MagicDrive-V2's own test script for the geometry of the saved videos:

* Geometry (MagicDrive-V2 ``scripts/test_magicdrive.py`` + the ``configs/magicdrive/test/*848x1600*`` files):
  nuScenes frames are 900x1600; the generator sees the bottom 848 rows (the top 52 rows are cropped, mmdet3d
  "top crop"), and the test script undoes it with ``Resize([848, 1600], BICUBIC)`` then ``Pad([0, 52, 0, 0])``,
  i.e. 52 rows of padding at the TOP. The pad value is 0 in the model's [-1, 1] range, which is uint8 128 once
  saved (mid grey), hence ``pad_value=128``.
* Key frames (W-CODA ``decode_video.py``): frames 0, 6 and 12 of each 12 Hz clip are the three 2 Hz key frames
  scored by BEVFormer; cameras are matched by name (``{token}_{CAM}.mp4``).
* BEV map segmentation (W-CODA's BEVFormer fork, ``bevformer_base_seg_det_150x150.py``): ``map_grid_conf``
  x in [-30, 30] m, y in [-15, 15] m at 0.15 m, i.e. a 200 x 400 (rows x cols) raster in the ego frame; classes
  divider, ped_crossing, boundary; the IoU is accumulated over the whole set (see :mod:`.metrics_bev`).
* FVD (W-CODA ``get_fvd_features_*.py``): bicubic resize of the 900x1600 frame to 225x400, then a crop keeping
  the bottom rows ("top_center_crop") to 224x400, then the VideoGPT I3D preprocessing (short side to 224,
  bilinear; centre crop 224; [-1, 1]). For 848-high generations the 52 padded rows become 13 rows at 225x400,
  so :func:`w_coda` crops 212 rows instead of 224 to leave every padded row out.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

NUSCENES_CAMERAS: Tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
)
"""MagicDrive / W-CODA view order (used only to order outputs; cameras are always matched by name)."""

NUSCENES_DETECTION_CLASSES: Tuple[str, ...] = (
    "car", "truck", "bus", "trailer", "construction_vehicle",
    "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier",
)

RESIZE_MODES = ("fit_width", "stretch")
RESAMPLE_MODES = ("bicubic", "bilinear", "nearest")
PAD_SIDES = ("top", "bottom")
MIOU_MODES = ("argmax", "multilabel")
FVD_CROP_MODES = ("bottom", "center", "top")


class ProtocolError(ValueError):
    """An invalid protocol setting; the message starts with the offending key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"EvalProtocol.{key}: {message}")


def _pair(key: str, value: Any, kind=int, positive: bool = True) -> Tuple:
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ProtocolError(key, f"must be a pair, got {value!r}") from None
    out = []
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ProtocolError(key, f"must hold numbers, got {value!r}")
        if kind is int and int(v) != v:
            raise ProtocolError(key, f"must hold integers, got {value!r}")
        v = kind(v)
        if positive and v <= 0:
            raise ProtocolError(key, f"must be positive, got {value!r}")
        out.append(v)
    return tuple(out)


@dataclass
class EvalProtocol:
    """How generated multi-view videos are scored. Build with :func:`w_coda` or ``EvalProtocol(...)``.

    Geometry
        target_hw: (H, W) frames are brought back to before perception (nuScenes 900x1600).
        generation_hw: (H, W) of the generated videos, or ``None`` to take it from each video as read. Only its
            aspect matters for padding: a 848x1600 or 424x800 video leaves 52 rows of padding at 900x1600.
        resize_mode: ``fit_width`` (resize to the target width keeping the aspect, then pad; MagicDrive-V2) or
            ``stretch`` (resize straight to target_hw; what W-CODA's ``decode_video.py`` does with PIL).
        resample: interpolation of that resize (``bicubic``; PIL-style, antialiased when downscaling).
        pad_side / pad_value: where the missing rows go (``top``) and their uint8 value (128).
    Frames and cameras
        key_frames: clip frame indices scored by perception (0, 6, 12).
        cameras: camera names every generation must have (matched by file name, never by index).
        num_generations: how many ``_gen{k}`` per token to score (``None``: every one found).
    BEV segmentation
        miou_classes: foreground classes in raster channel order (divider, ped_crossing, boundary).
        bev_x_range / bev_y_range: metres in the ego frame (x forward, y left), bev_resolution: metres / cell.
        miou_mode: ``argmax`` (exclusive labels with background, W-CODA) or ``multilabel`` (one boolean raster
            per class, BEVFusion style).
        map_thickness / map_filter_extra: rasterisation line width in cells and the extra width of the
            overlap filter that removes lower-priority classes near higher ones (HDMapNet / W-CODA: 5 and 4).
    Detection
        det_config: nuScenes detection config name (``detection_cvpr_2019``).
        det_classes: detection classes (the 10 nuScenes ones).
    Pixel metrics (PSNR / SSIM / LPIPS)
        pixel_data_range: data range for PSNR / SSIM (255 for uint8).
        pixel_exclude_padding: score only content rows of padded frames.
        pixel_frames: frame indices to compare (``None``: all frames both clips have).
        ssim_window / ssim_sigma / ssim_k1 / ssim_k2: Gaussian SSIM (Wang et al. 2004: 11, 1.5, 0.01, 0.03).
    FVD
        fvd_resize_hw: (H, W) of the bicubic resize of each target-size frame (225, 400).
        fvd_crop_hw: (H, W) kept after the resize; ``fvd_crop_mode`` ``bottom`` keeps the bottom rows.
        fvd_allow_padding: allow the crop to include padded rows (False: an error names the key).
        fvd_i3d_resolution: short side / crop of the I3D input (224).
        fvd_num_frames: frames per clip fed to I3D (``None``: all; W-CODA uses the whole 16-frame clip).
    Aggregation
        aggregate_generations: ``mean`` of each metric over generations (W-CODA ``read_map_miou.py``;
            :func:`.metrics_det.mean_detection`, :func:`.metrics_bev.mean_iou_summaries`) or ``pooled`` (one
            evaluation over all generations together; :func:`.metrics_det.pool_generations`, one ``BEVIoU``).
    """

    target_hw: Tuple[int, int] = (900, 1600)
    generation_hw: Optional[Tuple[int, int]] = (848, 1600)
    resize_mode: str = "fit_width"
    resample: str = "bicubic"
    pad_side: str = "top"
    pad_value: int = 128
    key_frames: Tuple[int, ...] = (0, 6, 12)
    cameras: Tuple[str, ...] = NUSCENES_CAMERAS
    num_generations: Optional[int] = None
    miou_classes: Tuple[str, ...] = ("divider", "ped_crossing", "boundary")
    bev_x_range: Tuple[float, float] = (-30.0, 30.0)
    bev_y_range: Tuple[float, float] = (-15.0, 15.0)
    bev_resolution: float = 0.15
    miou_mode: str = "argmax"
    map_thickness: int = 5
    map_filter_extra: int = 4
    det_config: str = "detection_cvpr_2019"
    det_classes: Tuple[str, ...] = NUSCENES_DETECTION_CLASSES
    pixel_data_range: float = 255.0
    pixel_exclude_padding: bool = True
    pixel_frames: Optional[Tuple[int, ...]] = None
    ssim_window: int = 11
    ssim_sigma: float = 1.5
    ssim_k1: float = 0.01
    ssim_k2: float = 0.03
    fvd_resize_hw: Tuple[int, int] = (225, 400)
    fvd_crop_hw: Tuple[int, int] = (212, 400)
    fvd_crop_mode: str = "bottom"
    fvd_allow_padding: bool = False
    fvd_i3d_resolution: int = 224
    fvd_num_frames: Optional[int] = None
    aggregate_generations: str = "mean"
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        self.target_hw = _pair("target_hw", self.target_hw)
        if self.generation_hw is not None:
            self.generation_hw = _pair("generation_hw", self.generation_hw)
        for key, allowed in (("resize_mode", RESIZE_MODES), ("resample", RESAMPLE_MODES), ("pad_side", PAD_SIDES),
                             ("miou_mode", MIOU_MODES), ("fvd_crop_mode", FVD_CROP_MODES),
                             ("aggregate_generations", ("mean", "pooled"))):
            if getattr(self, key) not in allowed:
                raise ProtocolError(key, f"must be one of {allowed}, got {getattr(self, key)!r}")
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise ProtocolError("pad_value", f"must be an int in [0, 255], got {self.pad_value!r}")
        self.key_frames = self._index_tuple("key_frames", self.key_frames, allow_empty=False)
        if self.pixel_frames is not None:
            self.pixel_frames = self._index_tuple("pixel_frames", self.pixel_frames, allow_empty=False)
        cams = tuple(self.cameras) if not isinstance(self.cameras, str) else None
        if not cams or not all(isinstance(c, str) and c for c in cams):
            raise ProtocolError("cameras", f"must be a non-empty sequence of names, got {self.cameras!r}")
        if len(set(cams)) != len(cams):
            raise ProtocolError("cameras", f"has duplicates: {cams}")
        self.cameras = cams
        if self.num_generations is not None and (not isinstance(self.num_generations, int)
                                                 or isinstance(self.num_generations, bool)
                                                 or self.num_generations < 1):
            raise ProtocolError("num_generations", f"must be None or an int >= 1, got {self.num_generations!r}")
        classes = tuple(self.miou_classes) if not isinstance(self.miou_classes, str) else ()
        if not classes or len(set(classes)) != len(classes):
            raise ProtocolError("miou_classes", f"must be distinct class names, got {self.miou_classes!r}")
        self.miou_classes = classes
        for key in ("bev_x_range", "bev_y_range"):
            lo, hi = _pair(key, getattr(self, key), kind=float, positive=False)
            if not hi > lo:
                raise ProtocolError(key, f"must be (low, high) with high > low, got {getattr(self, key)!r}")
            setattr(self, key, (lo, hi))
        if not isinstance(self.bev_resolution, (int, float)) or self.bev_resolution <= 0:
            raise ProtocolError("bev_resolution", f"must be > 0, got {self.bev_resolution!r}")
        for key in ("bev_x_range", "bev_y_range"):
            lo, hi = getattr(self, key)
            n = (hi - lo) / self.bev_resolution
            if abs(n - round(n)) > 1e-6:
                raise ProtocolError(key, f"span {hi - lo} m is not a whole number of {self.bev_resolution} m cells")
        for key in ("map_thickness", "map_filter_extra"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "map_thickness" else 0):
                raise ProtocolError(key, f"must be an int >= {1 if key == 'map_thickness' else 0}, got {v!r}")
        if not isinstance(self.det_config, str) or not self.det_config:
            raise ProtocolError("det_config", f"must be a config name, got {self.det_config!r}")
        dc = tuple(self.det_classes) if not isinstance(self.det_classes, str) else ()
        if not dc or len(set(dc)) != len(dc):
            raise ProtocolError("det_classes", f"must be distinct class names, got {self.det_classes!r}")
        self.det_classes = dc
        if not isinstance(self.pixel_data_range, (int, float)) or self.pixel_data_range <= 0:
            raise ProtocolError("pixel_data_range", f"must be > 0, got {self.pixel_data_range!r}")
        if isinstance(self.ssim_window, bool) or not isinstance(self.ssim_window, int) or self.ssim_window < 3 \
                or self.ssim_window % 2 == 0:
            raise ProtocolError("ssim_window", f"must be an odd int >= 3, got {self.ssim_window!r}")
        for key in ("ssim_sigma", "ssim_k1", "ssim_k2"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ProtocolError(key, f"must be > 0, got {v!r}")
        self.fvd_resize_hw = _pair("fvd_resize_hw", self.fvd_resize_hw)
        self.fvd_crop_hw = _pair("fvd_crop_hw", self.fvd_crop_hw)
        if self.fvd_crop_hw[0] > self.fvd_resize_hw[0] or self.fvd_crop_hw[1] > self.fvd_resize_hw[1]:
            raise ProtocolError("fvd_crop_hw", f"{self.fvd_crop_hw} does not fit in fvd_resize_hw {self.fvd_resize_hw}")
        if isinstance(self.fvd_i3d_resolution, bool) or not isinstance(self.fvd_i3d_resolution, int) \
                or self.fvd_i3d_resolution < 8:
            raise ProtocolError("fvd_i3d_resolution", f"must be an int >= 8, got {self.fvd_i3d_resolution!r}")
        if self.fvd_num_frames is not None and (isinstance(self.fvd_num_frames, bool)
                                                or not isinstance(self.fvd_num_frames, int) or self.fvd_num_frames < 1):
            raise ProtocolError("fvd_num_frames", f"must be None or an int >= 1, got {self.fvd_num_frames!r}")
        if self.generation_hw is not None:
            content = self.content_height(self.generation_hw)
            if self.resize_mode == "fit_width" and content > self.target_hw[0]:
                raise ProtocolError("generation_hw", f"{self.generation_hw} resized to width {self.target_hw[1]} is "
                                                     f"{content} rows high, more than target_hw {self.target_hw}")
            if not self.fvd_allow_padding:
                bad = self.fvd_padded_rows_in_crop()
                if bad:
                    raise ProtocolError("fvd_crop_hw", f"keeps {bad} padded row(s) of a {self.generation_hw} video "
                                                       f"(content is {content} of {self.target_hw[0]} rows); use a "
                                                       f"height of at most {self.fvd_crop_hw[0] - bad} or set "
                                                       f"fvd_allow_padding=True")
        if not isinstance(self.extra, dict):
            raise ProtocolError("extra", f"must be a dict, got {type(self.extra).__name__}")

    @staticmethod
    def _index_tuple(key: str, value: Any, allow_empty: bool) -> Tuple[int, ...]:
        try:
            out = tuple(value)
        except TypeError:
            raise ProtocolError(key, f"must be a sequence of frame indices, got {value!r}") from None
        if not out and not allow_empty:
            raise ProtocolError(key, "must not be empty")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in out):
            raise ProtocolError(key, f"must hold ints >= 0, got {value!r}")
        if len(set(out)) != len(out) or list(out) != sorted(out):
            raise ProtocolError(key, f"must be strictly increasing, got {value!r}")
        return out

    # ------------------------------------------------------------------ derived geometry
    def content_height(self, generation_hw: Optional[Tuple[int, int]] = None) -> int:
        """Rows of real content at ``target_hw`` for a video of ``generation_hw`` (the rest is padding)."""
        hw = generation_hw if generation_hw is not None else self.generation_hw
        if hw is None or self.resize_mode == "stretch":
            return self.target_hw[0]
        h, w = hw
        return int(round(h * self.target_hw[1] / w))

    def padding_rows(self, generation_hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
        """``(start, stop)`` row range of the padding at ``target_hw`` (empty range when there is none)."""
        pad = self.target_hw[0] - self.content_height(generation_hw)
        if pad <= 0:
            return (0, 0)
        if self.pad_side == "top":
            return (0, pad)
        return (self.target_hw[0] - pad, self.target_hw[0])

    def fvd_padded_rows_in_crop(self, generation_hw: Optional[Tuple[int, int]] = None) -> int:
        """How many rows of the FVD crop come from padding (0 means the crop sees content only)."""
        start, stop = self.padding_rows(generation_hw)
        if stop <= start:
            return 0
        scale = self.fvd_resize_hw[0] / self.target_hw[0]
        # padded rows in resized space (ceil: a resized row that mixes padding and content counts as padding)
        p0, p1 = start * scale, stop * scale
        rs, rh = self.fvd_resize_hw[0], self.fvd_crop_hw[0]
        c0 = {"bottom": rs - rh, "top": 0, "center": (rs - rh) // 2}[self.fvd_crop_mode]
        c1 = c0 + rh
        lo, hi = math.floor(p0 + 1e-9), math.ceil(p1 - 1e-9)
        return max(0, min(hi, c1) - max(lo, c0))

    @property
    def bev_shape(self) -> Tuple[int, int]:
        """(rows, cols) of the BEV raster: rows follow y, columns follow x (200 x 400 by default)."""
        ny = int(round((self.bev_y_range[1] - self.bev_y_range[0]) / self.bev_resolution))
        nx = int(round((self.bev_x_range[1] - self.bev_x_range[0]) / self.bev_resolution))
        return (ny, nx)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base: Optional[EvalProtocol] = None) -> EvalProtocol:
        """Build from a dict; keys missing from ``data`` come from ``base`` (default :func:`w_coda`)."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ProtocolError(unknown[0], f"unknown key(s) {unknown}; valid keys are {sorted(valid)}")
        merged = (base or w_coda()).to_dict()
        merged.update(data)
        return cls(**merged)

    def replace(self, **changes) -> EvalProtocol:
        return EvalProtocol.from_dict(changes, base=self)


def w_coda(**overrides) -> EvalProtocol:
    """The default protocol (W-CODA 2024 Track 2 on MagicDrive-V2's 848x1600 videos); keys can be overridden."""
    return EvalProtocol.from_dict(overrides, base=EvalProtocol()) if overrides else EvalProtocol()


def protocol_from_config(cfg) -> EvalProtocol:
    """The W-CODA protocol with an evaluation config's ``protocol`` overrides (an mmengine ``Config``, a dict,
    or a config file path)."""
    if isinstance(cfg, str):
        from mmengine.config import Config

        cfg = Config.fromfile(cfg)
    overrides = dict(cfg.get("protocol", None) or {})
    return w_coda(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})
