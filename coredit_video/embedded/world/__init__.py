"""The synthetic world: procedural multi-view driving clips (``SyntheticDrivingDataset``), their BEV maps and
conditions, and a nuScenes-format exporter (``write_nuscenes``)."""
from .bev import BEV_CHANNELS, BevGrid, rasterize_map
from .cameras import CAMERA_NAMES
from .classes import CLASS_NAMES
from .condition import VIEW_LAYOUT_CHANNELS, camera_features, encode_condition, view_layout
from .nuscenes_export import write_nuscenes
from .synthetic import SyntheticDrivingDataset, collate, make_token

__all__ = ["BEV_CHANNELS", "CAMERA_NAMES", "CLASS_NAMES", "VIEW_LAYOUT_CHANNELS", "BevGrid", "SyntheticDrivingDataset",
           "camera_features", "collate", "encode_condition", "make_token", "rasterize_map", "view_layout",
           "write_nuscenes"]
