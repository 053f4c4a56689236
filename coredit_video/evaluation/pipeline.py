"""Score a folder of generated videos: perception (mAP / NDS, BEV mIoU) and video metrics.

Two perception paths share everything else:

- ``synthetic`` (embedded default): the built-in :class:`~coredit_video.perception.SyntheticPerception`
  runs in-process on the decoded key frames; calibration, ego poses and ground truth come from the
  synthetic dataset the videos were generated from (matched by sample token).
- ``bevformer``: key frames are exported with a rewritten info file and the user's BEVFormer runs in
  its own environment (:class:`~.perception_runner.BEVFormerRunner`); ground truth from nuScenes.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np

from .metrics_det import evaluate_detection, mean_detection
from .metrics_video import MetricSkipped, compare_video_sets
from .protocol import EvalProtocol
from .report import MethodResult
from .video_io import find_clips, read_video

log = logging.getLogger("coredit.eval")


def _summary(r) -> Dict[str, Any]:
    return dict(mAP=float(r.mAP), NDS=float(r.NDS), class_ap=dict(r.class_ap))


def _gt_dir(videos_dir: str) -> str:
    return os.path.join(videos_dir, "gt_video")


def video_metrics(videos_dir: str, protocol: EvalProtocol, lpips_weights: Optional[str] = None,
                  reference_dir: Optional[str] = None) -> Dict[str, Any]:
    """PSNR / SSIM (/ LPIPS) of every generation against ``gt_video`` (or another run's ``gen_video``)."""
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    ref_root = reference_dir or _gt_dir(videos_dir)
    ref = {tok: g[-1] for tok, g in find_clips(ref_root, protocol.cameras).items() if -1 in g}
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


def synthetic_perception_metrics(videos_dir: str, dataset, protocol: EvalProtocol, progress: bool = True,
                                 perception=None, nusc=None) -> Dict[str, Any]:
    """mAP / NDS (nuScenes DetectionEval) and BEV mIoU of the built-in perception on every generation.

    Ground truth for detection: the nuScenes-format export of ``dataset`` read back by the devkit when
    ``nusc`` is given (``NuScenes(version="v1.0-synthetic", dataroot=...)``), else the dataset's boxes."""
    from tqdm import tqdm

    from ..data import BEV_CHANNELS
    from ..perception import SyntheticPerception, bev_iou
    from ..perception.base import Calibration, boxes_to_global
    from ..perception.evaluate import ground_truth_boxes

    model = perception or SyntheticPerception()
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    by_token = {}
    for i in range(len(dataset)):
        item = dataset[i]
        by_token[item["token"]] = item
    missing = sorted(set(gens) - set(by_token))
    if missing:
        raise KeyError(f"{len(missing)} generated tokens are not in the dataset (e.g. {missing[:2]}); generate and "
                       "evaluate with the same data config and seed offset")
    ks = sorted({k for g in gens.values() for k in g if k >= 0})
    det_results, bev_pred, bev_gt = [], [], []
    for k in ks:
        preds, gts, ego = {}, {}, {}
        for tok in tqdm(sorted(gens), desc=f"perception gen{k}", disable=not progress, file=sys.stderr):
            if k not in gens[tok]:
                continue
            item = by_token[tok]
            clips = {cam: read_video(path) for cam, path in gens[tok][k].items()}
            T = min(c.shape[0] for c in clips.values())
            for f in [f for f in protocol.key_frames if f < T]:
                frames = {cam: clips[cam][f] for cam in item["camera_names"]}
                calib = Calibration.from_item(item, f)
                out = model.predict(frames, calib)
                stok = item["frame_tokens"][f]
                pose = np.asarray(item["ego2global"][f], np.float64)
                preds[stok] = boxes_to_global(out["boxes"], pose)
                gts[stok] = boxes_to_global(ground_truth_boxes(item, f, min_pixels=16), pose)
                ego[stok] = pose[:3, 3].tolist()
                if f == 0:  # the dataset's BEV map is around the frame-0 ego
                    bev_gt.append(np.asarray(item["bev_map"]) > 0.5)
                    bev_pred.append(np.asarray(out["bev_seg"], bool))
        if nusc is not None:
            det_results.append(evaluate_detection(preds, sorted(preds), nusc=nusc, ego_translation=ego,
                                                  config=protocol.det_config))
        else:
            det_results.append(evaluate_detection(preds, sorted(preds), gt=gts, ego_translation=ego,
                                                  config=protocol.det_config))
    det = mean_detection(det_results) if len(det_results) > 1 else _summary(det_results[0])
    # intersections and unions summed over all scored maps; a class empty in both scores 0 (as W-CODA)
    per_channel = bev_iou(np.stack(bev_pred), np.stack(bev_gt))
    iou = {n: float(np.nan_to_num(v)) for n, v in zip(BEV_CHANNELS, per_channel)}
    return dict(mAP=det["mAP"], NDS=det["NDS"], class_ap=det.get("class_ap", {}), iou=iou,
                mIoU=float(np.mean(list(iou.values()))), generations=len(ks))


def evaluate_run(name: str, ratio: float, videos_dir: str, protocol: EvalProtocol, dataset=None,
                 perception: str = "synthetic", lpips_weights: Optional[str] = None, runner=None,
                 nusc=None, info_path: Optional[str] = None, work_dir: Optional[str] = None,
                 fidelity_to: Optional[str] = None, reference: bool = False) -> MethodResult:
    """All metrics of one videos folder as a report row; ``fidelity_to``: the dense run's videos folder
    (fidelity columns); ``reference``: a reference row (ground truth through the codec, the pre-trained host)."""
    skipped: Dict[str, str] = {}
    metrics: Dict[str, Optional[float]] = {}
    vm = video_metrics(videos_dir, protocol, lpips_weights)
    metrics.update(PSNR=vm["psnr"], SSIM=vm["ssim"], LPIPS=vm.get("lpips"))
    skipped.update(vm["skipped"])
    skipped["FVD"] = "no I3D weights given (--i3d-weights)"
    if fidelity_to is not None and not reference and os.path.abspath(fidelity_to) != os.path.abspath(videos_dir):
        metrics.update(fidelity_metrics(videos_dir, fidelity_to, protocol))
    else:
        why = ("a reference row" if reference else "the dense run itself") if fidelity_to is not None else \
            "no dense run to compare with"
        skipped.update(fidelity_PSNR=why, fidelity_SSIM=why)
    per_class_ap: Dict[str, float] = {}
    per_class_iou: Dict[str, float] = {}
    if perception == "synthetic":
        pm = synthetic_perception_metrics(videos_dir, dataset, protocol, nusc=nusc)
        metrics.update(mAP=pm["mAP"], NDS=pm["NDS"], mIoU=pm["mIoU"])
        per_class_ap, per_class_iou = pm["class_ap"], pm["iou"]
    elif perception == "bevformer":
        from .perception_runner import prepare_generations

        if runner is None or info_path is None:
            raise ValueError("the bevformer path needs a runner and the nuScenes info file (perception.info)")
        work = work_dir or os.path.join(videos_dir, "eval_work")
        results = []
        for gen in prepare_generations(videos_dir, info_path, work, protocol):
            out = runner.run(gen.info_path, os.path.join(work, f"gen{gen.gen_index}"), f"gen{gen.gen_index}")
            results.append(evaluate_detection(out.boxes, sorted(out.boxes), nusc=nusc, config=protocol.det_config))
            if out.seg_summary:
                metrics["mIoU"] = float(np.mean([out.seg_summary[c] for c in protocol.miou_classes
                                                 if c in out.seg_summary]))
        det = mean_detection(results) if len(results) > 1 else _summary(results[0])
        metrics.update(mAP=det["mAP"], NDS=det["NDS"])
        per_class_ap = det.get("class_ap", {})
        if "mIoU" not in metrics:
            skipped["mIoU"] = "the BEVFormer run wrote no segmentation output"
    else:
        raise ValueError(f"perception must be 'synthetic' or 'bevformer', got {perception!r}")
    return MethodResult(method=name, ratio=ratio, metrics=metrics, skipped=skipped, per_class_ap=per_class_ap,
                        per_camera_psnr=vm["per_camera_psnr"], per_class_iou=per_class_iou, reference=reference)
