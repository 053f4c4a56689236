"""The embedded default data: a procedural multi-view driving world (``SyntheticDrivingDataset``), a toy
latent codec (``ToyCodec``) and a nuScenes-format exporter (``write_nuscenes``)."""
from .bev import BEV_CHANNELS, BevGrid, rasterize_map
from .cameras import CAMERA_NAMES
from .classes import CLASS_NAMES
from .codec import ToyCodec
from .condition import camera_features, encode_condition
from .nuscenes_export import write_nuscenes
from .synthetic import SyntheticDrivingDataset, collate, make_token

__all__ = ["BEV_CHANNELS", "CAMERA_NAMES", "CLASS_NAMES", "BevGrid", "SyntheticDrivingDataset", "ToyCodec",
           "camera_features", "collate", "encode_condition", "make_token", "rasterize_map", "write_nuscenes"]
