"""Perception models that score multi-view frames: 3D boxes + BEV road layout (``base.py``), the built-in
``SyntheticPerception`` for the synthetic world, its ground truth, scoring (``evaluate.py``, on the metrics of
:mod:`coredit_video.evaluation`, which never imports this package) and corruptions."""
from .base import Calibration, PerceptionModel, boxes_to_global, frames_from_video
from .corruptions import gaussian_blur, gaussian_noise, shift
from .evaluate import ground_truth_boxes
from .synthetic import SyntheticPerception

__all__ = ["Calibration", "PerceptionModel", "SyntheticPerception", "boxes_to_global", "frames_from_video",
           "gaussian_blur", "gaussian_noise", "ground_truth_boxes", "shift"]
