"""Evaluation library for generated multi-view driving videos (W-CODA 2024 Track 2 protocol, as MagicDrive-V2).

One job per module:

* :mod:`.protocol`: :class:`EvalProtocol` (every protocol choice, validated) and :func:`w_coda`.
* :mod:`.video_io`: read / write clips, parse ``gen_video/`` and ``gt_video/``.
* :mod:`.geometry`: undo / apply the generation crop (resize to 1600 wide, pad the top to 900x1600).
* :mod:`.metrics_video`: PSNR, SSIM, LPIPS, Frechet distance, FVD.
* :mod:`.metrics_bev`: BEV rasterisation and IoU / mIoU.
* :mod:`.metrics_det`: nuScenes mAP / NDS (nuscenes-devkit) and a pure-python center-distance AP.
* :mod:`.perception_runner`: rewritten infos + BEVFormer launched in its own environment.
* :mod:`.report`: JSON, Markdown (Table 4 layout) and PNG plots.

Heavy optional dependencies (decord, nuscenes-devkit, LPIPS / I3D weights, matplotlib) are imported only where used.
"""
from .protocol import NUSCENES_CAMERAS, EvalProtocol, ProtocolError, w_coda

__all__ = ["NUSCENES_CAMERAS", "EvalProtocol", "ProtocolError", "w_coda"]
