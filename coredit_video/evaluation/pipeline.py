"""Score a folder of generated videos: perception (mAP / NDS, BEV mIoU) and video metrics.

Two perception paths share everything else:

- an in-process scorer ``score(videos_dir)`` (embedded default: the built-in perception,
  :func:`coredit_video.embedded.perception.evaluate.synthetic_scorer`, with calibration, ego poses and ground
  truth from the synthetic dataset the videos were generated from, matched by sample token);
- ``bevformer``: key frames are exported with a rewritten info file and the user's BEVFormer runs in
  its own environment (:class:`~.perception_runner.BEVFormerRunner`); ground truth from nuScenes.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from .metrics_bev import mean_iou_summaries
from .metrics_det import evaluate_detection, mean_detection
from .metrics_video import MetricSkipped, compare_video_sets
from .protocol import EvalProtocol
from .report import MethodResult
from .video_io import find_clips, find_gt_clips

log = logging.getLogger("coredit.eval")


def _gt_dir(videos_dir: str) -> str:
    return os.path.join(videos_dir, "gt_video")


def video_metrics(videos_dir: str, protocol: EvalProtocol, lpips_weights: Optional[str] = None,
                  reference_dir: Optional[str] = None, i3d_weights: Optional[str] = None) -> Dict[str, Any]:
    """PSNR / SSIM (/ LPIPS) of every generation against ``gt_video`` (or another run's ``gen_video``), and FVD
    (with I3D weights) of all generated clips against the reference clips of the same tokens."""
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    ref_root = reference_dir or _gt_dir(videos_dir)
    ref = find_gt_clips(ref_root, protocol.cameras)
    lpips, skipped = None, {}
    if lpips_weights:
        from .metrics_video import LPIPSMetric

        try:
            lpips = LPIPSMetric(lpips_weights)
        except MetricSkipped as e:
            skipped["LPIPS"] = str(e)
    else:
        skipped["LPIPS"] = "no LPIPS weights given (--lpips-weights)"
    ks = sorted({k for g in gens.values() for k in g if k >= 0})
    per_gen = []
    for k in ks:
        gen_k = {tok: g[k] for tok, g in gens.items() if k in g and tok in ref}
        per_gen.append(compare_video_sets(gen_k, {t: ref[t] for t in gen_k}, protocol, lpips=lpips))
    if not per_gen:
        raise FileNotFoundError(f"no generated clip in {videos_dir}/gen_video has a reference in {ref_root}")
    keys = ("psnr", "ssim") + (("lpips",) if lpips is not None else ())
    out = {key: float(np.mean([g[key] for g in per_gen])) for key in keys}
    cams: Dict[str, List[float]] = {}
    for g in per_gen:
        for cam, v in g["per_camera"].items():
            cams.setdefault(cam, []).append(v["psnr"])
    out["per_camera_psnr"] = {c: float(np.mean(v)) for c, v in cams.items()}
    out["fvd"] = None
    if i3d_weights:
        from .metrics_video import FVDFeatureExtractor, collect_fvd_features, fvd

        try:
            extractor = FVDFeatureExtractor(i3d_weights, protocol)
        except MetricSkipped as e:
            skipped["FVD"] = str(e)
        else:
            gen_paths = [p for tok in sorted(gens) if tok in ref for k in sorted(gens[tok]) if k >= 0
                         for p in gens[tok][k].values()]
            ref_paths = [p for tok in sorted(ref) if tok in gens for p in ref[tok].values()]
            out["fvd"] = fvd(collect_fvd_features(extractor, ref_paths), collect_fvd_features(extractor, gen_paths))
    else:
        skipped["FVD"] = "no I3D weights given (--i3d-weights)"
    out["skipped"] = skipped
    return out


def fidelity_metrics(videos_dir: str, dense_dir: str, protocol: EvalProtocol) -> Dict[str, float]:
    """PSNR / SSIM of each generation against the dense run's generation of the same sample and index
    (same noise and conditions): how closely a pruned model reproduces its dense counterpart."""
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    dense = find_clips(os.path.join(dense_dir, "gen_video"), protocol.cameras)
    ks = sorted({k for g in gens.values() for k in g if k >= 0})
    per_gen = []
    for k in ks:
        pairs = {tok: (g[k], dense[tok][k]) for tok, g in gens.items() if k in g and k in dense.get(tok, {})}
        if pairs:
            per_gen.append(compare_video_sets({t: a for t, (a, _) in pairs.items()},
                                              {t: b for t, (_, b) in pairs.items()}, protocol))
    if not per_gen:
        raise FileNotFoundError(f"no generation in {videos_dir}/gen_video has a dense counterpart in "
                                f"{dense_dir}/gen_video (same tokens and _gen index); generate both with the same "
                                "data and seed")
    return {"fidelity_PSNR": float(np.mean([g["psnr"] for g in per_gen])),
            "fidelity_SSIM": float(np.mean([g["ssim"] for g in per_gen]))}


def evaluate_run(name: str, ratio: float, videos_dir: str, protocol: EvalProtocol,
                 perception: Union[str, Callable[[str], Dict[str, Any]]] = "bevformer",
                 lpips_weights: Optional[str] = None, runner=None, nusc=None, info_path: Optional[str] = None,
                 work_dir: Optional[str] = None, fidelity_to: Optional[str] = None, reference: bool = False,
                 i3d_weights: Optional[str] = None) -> MethodResult:
    """All metrics of one videos folder as a report row; ``fidelity_to``: the dense run's videos folder
    (fidelity columns); ``reference``: a reference row (ground truth through the codec, the pre-trained host).

    ``perception``: ``"bevformer"`` (the user's BEVFormer through ``runner``) or an in-process scorer
    ``score(videos_dir) -> {mAP, NDS, mIoU, class_ap, iou}`` (the embedded default:
    :func:`coredit_video.embedded.perception.evaluate.synthetic_scorer`)."""
    skipped: Dict[str, str] = {}
    metrics: Dict[str, Optional[float]] = {}
    vm = video_metrics(videos_dir, protocol, lpips_weights, i3d_weights=i3d_weights)
    metrics.update(PSNR=vm["psnr"], SSIM=vm["ssim"], LPIPS=vm.get("lpips"), FVD=vm["fvd"])
    skipped.update(vm["skipped"])
    if fidelity_to is not None and not reference and os.path.abspath(fidelity_to) != os.path.abspath(videos_dir):
        metrics.update(fidelity_metrics(videos_dir, fidelity_to, protocol))
    else:
        why = ("a reference row" if reference else "the dense run itself") if fidelity_to is not None else \
            "no dense run to compare with"
        skipped.update(fidelity_PSNR=why, fidelity_SSIM=why)
    per_class_ap: Dict[str, float] = {}
    per_class_iou: Dict[str, float] = {}
    if callable(perception):
        pm = perception(videos_dir)
        metrics.update(mAP=pm["mAP"], NDS=pm["NDS"], mIoU=pm["mIoU"])
        per_class_ap, per_class_iou = pm["class_ap"], pm["iou"]
    elif perception == "bevformer":
        from .perception_runner import prepare_generations

        if runner is None or info_path is None:
            raise ValueError("the bevformer path needs a runner and the nuScenes info file (perception.info)")
        work = work_dir or os.path.join(videos_dir, "eval_work")
        results, seg = [], []
        for gen in prepare_generations(videos_dir, info_path, work, protocol):
            out = runner.run(gen.info_path, os.path.join(work, f"gen{gen.gen_index}"), f"gen{gen.gen_index}")
            results.append(evaluate_detection(out.boxes, sorted(out.boxes), nusc=nusc, config=protocol.det_config))
            if out.seg_summary:
                seg.append({c: out.seg_summary[c] for c in protocol.miou_classes if c in out.seg_summary})
        det = mean_detection(results)
        metrics.update(mAP=det["mAP"], NDS=det["NDS"])
        per_class_ap = det.get("class_ap", {})
        if seg:  # mIoU of each generation's classes, then the mean over generations (read_map_miou.py)
            metrics["mIoU"] = float(np.mean([np.mean(list(s.values())) for s in seg]))
            per_class_iou = mean_iou_summaries(seg)
        else:
            skipped["mIoU"] = "the BEVFormer run wrote no segmentation output"
    else:
        raise ValueError(f"perception must be 'bevformer' or a scorer callable, got {perception!r}")
    return MethodResult(method=name, ratio=ratio, metrics=metrics, skipped=skipped, per_class_ap=per_class_ap,
                        per_camera_psnr=vm["per_camera_psnr"], per_class_iou=per_class_iou, reference=reference)
