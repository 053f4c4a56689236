#!/usr/bin/env python
"""Score generated multi-view videos: nuScenes mAP/NDS and BEV mIoU through a perception model,
PSNR/SSIM (and LPIPS / FVD with their weights), as a Table-4-shaped report.

    python tools/eval_bev.py VIDEOS_DIR [VIDEOS_DIR ...] --config configs/eval_tiny_cpu.py \\
        --names dense pruned --ratios 0 auto --out work_dirs/tiny_cpu/eval

Each VIDEOS_DIR holds ``gen_video/`` and ``gt_video/`` in MagicDrive-V2's test layout
(``tools/generate.py`` writes it). ``--ratios auto`` reads the mean ratio from ``generation.json``.
Each Δ row (a method minus the dense row) carries a 95% paired-bootstrap interval over scenes (``--bootstrap N``
resamples, 1000 by default, 0 for none); a difference whose interval contains 0 is marked "(noise)".
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def synthetic_dataset(data_cfg: dict):
    """The held-out synthetic samples ``tools/generate.py`` generated from (same config, seed offset)."""
    from mmengine.config import Config

    from coredit_video.training.config import build_train_config
    from coredit_video.embedded.host.bundle import synthetic_dataset as build
    from coredit_video.training.hosts import held_out_data

    tcfg = build_train_config(Config.fromfile(data_cfg["train_config"]))
    data = held_out_data(tcfg.data, data_cfg.get("num_samples", 4), data_cfg.get("seed_offset", 1000))
    return build(data)[0]


def synthetic_scene_statistics(videos_dir: str, dataset, protocol, nusc=None):
    """Per-scene records of the built-in perception for the bootstrap: the predictions, ground truth and BEV
    TP / FP / FN that ``synthetic_perception_metrics`` pools, kept per scene (clip token). Returns the
    ``(PooledDetection, PooledIoU)`` statistics; on every scene together they give the headline mAP / NDS / mIoU."""
    import numpy as np

    from coredit_video.embedded.perception.base import Calibration, boxes_to_global
    from coredit_video.embedded.perception.evaluate import ground_truth_boxes
    from coredit_video.embedded.perception.synthetic import SyntheticPerception
    from coredit_video.embedded.world.bev import BEV_CHANNELS
    from coredit_video.evaluation.bootstrap import PooledDetection, PooledIoU
    from coredit_video.evaluation.metrics_bev import BEVIoU
    from coredit_video.evaluation.metrics_det import _load_gt_from_db
    from coredit_video.evaluation.video_io import find_clips, read_video

    model = SyntheticPerception()
    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    items = {}
    for i in range(len(dataset)):
        item = dataset[i]
        items[item["token"]] = item
    det, iou = PooledDetection(protocol.det_config), PooledIoU(absent_score=0.0)
    gt_db = None
    if nusc is not None:  # the devkit's ground truth of every key frame, as the headline reads it (one pass)
        stoks = [items[tok]["frame_tokens"][f] for tok in sorted(gens) for f in protocol.key_frames
                 if f < len(items[tok]["frame_tokens"])]
        gt_db = _load_gt_from_db(nusc, stoks, False)
    for k in sorted({k for g in gens.values() for k in g if k >= 0}):
        for tok in sorted(gens):
            if k not in gens[tok]:
                continue
            item = items[tok]
            clips = {cam: read_video(path) for cam, path in gens[tok][k].items()}
            T = min(c.shape[0] for c in clips.values())
            scene_iou = BEVIoU(BEV_CHANNELS, mode="multilabel", absent_score=0.0)
            for f in [f for f in protocol.key_frames if f < T]:
                frames = {cam: clips[cam][f] for cam in item["camera_names"]}
                out = model.predict(frames, Calibration.from_item(item, f))
                stok = item["frame_tokens"][f]
                pose = np.asarray(item["ego2global"][f], np.float64)
                if gt_db is not None:
                    gt = [b.serialize() for b in gt_db[stok]]
                else:
                    gt = boxes_to_global(ground_truth_boxes(item, f, min_pixels=16), pose)
                det.add(k, tok, stok, boxes_to_global(out["boxes"], pose), gt, pose[:3, 3])
                if f == 0:  # the dataset's BEV map is around the frame-0 ego
                    scene_iou.update(np.asarray(out["bev_seg"], bool), np.asarray(item["bev_map"]) > 0.5)
            iou.add(k, tok, scene_iou.tp.numpy(), scene_iou.fp.numpy(), scene_iou.fn.numpy())
    return det, iou


def add_intervals(results, folders, protocol, resamples: int, perception_stats=None, lpips_weights=None,
                  no_perception_reason: str = "") -> None:
    """Fill ``delta_intervals`` of every row with a Δ row: the paired bootstrap over scenes against its dense row.

    ``folders[i]``: the videos folder of ``results[i]``; ``perception_stats(folder) -> (PooledDetection,
    PooledIoU)`` gives the per-scene perception records (``None``: the perception columns get
    ``no_perception_reason``)."""
    from coredit_video.evaluation.bootstrap import delta_intervals, video_scene_statistics
    from coredit_video.evaluation.report import COLUMNS, delta_reference

    cache = {}

    def stats(i):
        if i not in cache:
            per = {c: (s, s.scenes) for c, s in video_scene_statistics(folders[i], protocol, lpips_weights).items()}
            if perception_stats is not None:
                det, iou = perception_stats(folders[i])
                per.update(mAP=(det.metric("mAP"), det.scenes), NDS=(det.metric("NDS"), det.scenes),
                           mIoU=(iou, iou.scenes))
            cache[i] = per
        return cache[i]

    missing = {"FVD": "FVD is a distance between the distributions of all clips, not a mean of per-scene values"}
    if perception_stats is None:
        missing.update({c: no_perception_reason for c in ("mAP", "NDS", "mIoU")})
    for i, r in enumerate(results):
        ref = delta_reference(results, r)
        if ref is None:
            continue
        j = next(j for j, x in enumerate(results) if x is ref)
        print(f"bootstrap: {r.method} - {ref.method}, {resamples} resamples over scenes", file=sys.stderr)
        r.delta_intervals = delta_intervals(stats(i), stats(j), {c: r.value(c) for c in COLUMNS},
                                            {c: ref.value(c) for c in COLUMNS}, COLUMNS, resamples,
                                            missing=missing)


def main(argv=None) -> int:
    from mmengine.config import DictAction

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", help="folders with gen_video/ and gt_video/")
    ap.add_argument("--config", required=True)
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    ap.add_argument("--names", nargs="+", help="one method name per folder (default: folder names)")
    ap.add_argument("--ratios", nargs="+", help="mean pruning ratio per folder, or 'auto' (generation.json)")
    ap.add_argument("--out", default=None, help="report folder (default: <first folder>/../eval)")
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--i3d-weights", default=None,
                    help="TorchScript I3D ([B, 3, T, R, R] in [-1, 1] -> [B, D] features) for FVD against gt_video")
    ap.add_argument("--fidelity-to", default=None, metavar="NAME",
                    help="method name of the dense run: every other run also gets fidelity_PSNR / fidelity_SSIM "
                         "against its generations (same noise and conditions); default 'dense' when present")
    ap.add_argument("--references", nargs="*", default=[], metavar="NAME",
                    help="method names of reference rows (e.g. gt_codec pretrained): listed first, no Δ row")
    ap.add_argument("--frame-scenes", type=int, default=2,
                    help="scenes in eval_frames.png (frame 0 of every camera, one strip per method)")
    ap.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                    help="resamples of the paired bootstrap over scenes behind each Δ row's 95%% interval "
                         "(default 1000; 0: no intervals)")
    args = ap.parse_args(argv)
    if args.bootstrap < 0:
        ap.error(f"--bootstrap {args.bootstrap}: give a number of resamples >= 0 (0 turns the intervals off)")

    from coredit_video.embedded.perception.evaluate import synthetic_scorer
    from coredit_video.evaluation.pipeline import evaluate_run
    from coredit_video.evaluation.protocol import protocol_from_config
    from coredit_video.evaluation.report import markdown_table, plot_frames, write_report

    from coredit_video.cli import UsageError, load_config
    from coredit_video.evaluation.protocol import ProtocolError

    cfg = load_config(args.config, args.cfg_options)
    try:
        protocol = protocol_from_config(cfg)
    except ProtocolError as e:
        raise UsageError(f"{args.config}: {e}") from None
    names = args.names or [os.path.basename(os.path.normpath(v)) for v in args.videos]
    ratios = args.ratios or ["auto"] * len(args.videos)
    if len(names) != len(args.videos) or len(ratios) != len(args.videos):
        ap.error("--names and --ratios need one entry per videos folder")
    if args.i3d_weights and not os.path.isfile(args.i3d_weights):
        ap.error(f"--i3d-weights {args.i3d_weights}: no such file (a TorchScript I3D, torch.jit.save)")
    for v in args.videos:
        if not os.path.isdir(os.path.join(v, "gen_video")):
            ap.error(f"{v} has no gen_video/ folder (MagicDrive-V2 test layout); generate with tools/generate.py")
    unknown = sorted(set(args.references) - set(names))
    if unknown or (args.fidelity_to and args.fidelity_to not in names):
        ap.error(f"--references / --fidelity-to name methods that are not in --names {names}: "
                 f"{unknown or [args.fidelity_to]}")
    fid_name = args.fidelity_to or ("dense" if "dense" in names else None)
    fidelity_to = args.videos[names.index(fid_name)] if fid_name else None
    perception = dict(cfg.get("perception", {"type": "synthetic"}))
    kind = perception.pop("type")
    dataset = runner = nusc = info = None
    if kind == "synthetic":
        data_cfg = dict(cfg.get("data", {}))
        dataset = synthetic_dataset(data_cfg)
        if data_cfg.get("nuscenes_dir"):  # ground truth through the devkit, from a nuScenes-format export
            from coredit_video.embedded.world.nuscenes_export import write_nuscenes
            from nuscenes import NuScenes

            import shutil

            root = data_cfg["nuscenes_dir"]
            shutil.rmtree(root, ignore_errors=True)  # always the samples of this evaluation
            write_nuscenes(dataset, root)
            nusc = NuScenes(version="v1.0-synthetic", dataroot=root, verbose=False)
    elif kind == "bevformer":
        from coredit_video.evaluation.perception_runner import BEVFormerRunner

        info = perception.pop("info")
        root, version = perception.pop("nusc_dataroot"), perception.pop("nusc_version", "v1.0-trainval")
        runner = BEVFormerRunner(**perception)
        from nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=root, verbose=False)
    else:
        ap.error(f"perception.type must be 'synthetic' or 'bevformer', got {kind!r}")
    scorer = synthetic_scorer(dataset, protocol, nusc=nusc) if kind == "synthetic" else None
    results = []
    for folder, name, ratio in zip(args.videos, names, ratios):
        if ratio == "auto":
            meta = os.path.join(folder, "generation.json")
            ratio = 0.0
            if os.path.isfile(meta):
                with open(meta) as f:
                    ratio = json.load(f).get("mean_ratio", 0.0)
        res = evaluate_run(name, float(ratio), folder, protocol, perception=scorer or kind,
                           lpips_weights=args.lpips_weights, runner=runner, nusc=nusc,
                           info_path=info, fidelity_to=fidelity_to, reference=name in args.references,
                           i3d_weights=args.i3d_weights)
        results.append(res)
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items() if v is not None),
              file=sys.stderr)
    if args.bootstrap:
        add_intervals(results, list(args.videos), protocol, args.bootstrap, lpips_weights=args.lpips_weights,
                      perception_stats=(lambda folder: synthetic_scene_statistics(folder, dataset, protocol, nusc))
                      if kind == "synthetic" else None,
                      no_perception_reason="the BEVFormer path keeps no per-scene perception results")
    out = args.out or os.path.join(os.path.dirname(os.path.normpath(args.videos[0])), "eval")
    paths = write_report(results, out, protocol=protocol)
    paths["frames_png"] = plot_frames(dict(zip(names, args.videos)), os.path.join(out, "eval_frames.png"),
                                      args.frame_scenes, protocol.cameras)
    print(markdown_table(results))
    print(f"\nreport: {json.dumps(paths)}")
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
