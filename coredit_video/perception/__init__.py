"""Perception models that score multi-view frames: 3D boxes + BEV road layout (``base.py``), the built-in
``SyntheticPerception`` for the synthetic world, metrics, evaluation and corruptions."""
from .base import Calibration, PerceptionModel, boxes_to_global, frames_from_video
from .corruptions import gaussian_blur, gaussian_noise, shift
from .evaluate import evaluate_perception, ground_truth_boxes
from .metrics import DIST_THRESHOLDS, bev_iou, center_distance_ap
from .synthetic import SyntheticPerception

__all__ = ["DIST_THRESHOLDS", "Calibration", "PerceptionModel", "SyntheticPerception", "bev_iou", "boxes_to_global",
           "center_distance_ap", "evaluate_perception", "frames_from_video", "gaussian_blur", "gaussian_noise",
           "ground_truth_boxes", "shift"]
