#!/usr/bin/env python
"""Report on the shipped pre-trained embedded host: loss curve, ground truth vs dense generations on
held-out scenes, and their metrics next to the ground truth through the same codec.

    python tools/host_report.py --train-log work_dirs/embedded_pretrain/train.log \
        work_dirs/embedded_pretrain_layout/train.log --out docs/embedded_host

Writes ``loss.png``, ``frames.png`` (per scene: ground truth, ground truth through the codec, dense
generation; six cameras, frame 0), ``metrics.json`` and ``metrics.md`` into ``--out``.
"""
from __future__ import annotations

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LOSS_RE = re.compile(r"step (\d+)/\d+ loss ([0-9.]+)")


def read_losses(log_path: str):
    """``(steps, losses)`` logged in ``log_path``, in step order (a resumed run logs some steps twice)."""
    import numpy as np

    steps, losses = [], []
    with open(log_path) as f:
        for line in f:
            m = LOSS_RE.search(line)
            if m:
                steps.append(int(m.group(1)))
                losses.append(float(m.group(2)))
    if not steps:
        raise ValueError(f"{log_path} has no 'step N/M loss X' lines")
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(losses)[order]


def loss_curve(log_paths, out_png: str) -> dict:
    """Plot the logged training loss of the stages ``log_paths`` (in order; a stage's steps continue the previous
    stage's) and a 20-point running mean; returns first/last means and where each stage starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    parts, starts, offset = [], [], 0
    for path in log_paths:
        st, lo = read_losses(path)
        starts.append(offset)
        parts.append((st + offset, lo))
        offset += int(st[-1])
    s, l_ = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    k = min(20, len(l_))
    smooth = np.convolve(l_, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(s, l_, lw=0.6, alpha=0.4, label="logged loss")
    ax.plot(s[k - 1:], smooth, lw=1.5, label=f"mean of {k} logged points")
    for i, start in enumerate(starts[1:], 2):
        ax.axvline(start, color="k", ls="--", lw=0.8)
        ax.text(start, ax.get_ylim()[1], f" stage {i}", va="top", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title("Dense pre-training of the embedded host")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return dict(first_steps=int(s[0]), last_step=int(s[-1]), loss_start=float(l_[:k].mean()),
                loss_end=float(l_[-k:].mean()), stage_starts=starts)


def main(argv=None) -> int:
    from mmengine.config import Config

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny_cpu.py", help="a config whose data and model the host fits")
    ap.add_argument("--eval-config", default="configs/eval_tiny_cpu.py")
    ap.add_argument("--train-log", required=True, nargs="+", help="train.log of each pre-training stage, in order")
    ap.add_argument("--weights", default="embedded", help="'embedded' (the shipped host) or a .pt / checkpoint dir")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--grid-scenes", type=int, default=3)
    ap.add_argument("--seed-offset", type=int, default=1000)
    ap.add_argument("--out", default="docs/embedded_host")
    args = ap.parse_args(argv)
    for p in (args.config, args.eval_config, *args.train_log):
        if not os.path.isfile(p):
            print(f"error: {p} not found", file=sys.stderr)
            return 2

    from coredit_video.embedded.perception.evaluate import synthetic_scorer
    from coredit_video.evaluation.pipeline import evaluate_run
    from coredit_video.evaluation.protocol import protocol_from_config
    from coredit_video.evaluation.report import plot_frames
    from coredit_video.generation import generate, write_codec_reference
    from coredit_video.embedded.host.shipped import ShippedWeightsError, load_host_weights
    from coredit_video.training.config import build_train_config
    from coredit_video.training.hosts import build_host_bundle, held_out_data

    os.makedirs(args.out, exist_ok=True)
    tcfg = build_train_config(Config.fromfile(args.config))
    protocol = protocol_from_config(args.eval_config)
    bundle = build_host_bundle(tcfg.model, held_out_data(tcfg.data, args.scenes, args.seed_offset), tcfg.seed)
    try:
        weights = load_host_weights(bundle.model, args.weights)
    except ShippedWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = os.path.join(args.out, "videos")
    dirs = {"through the codec": os.path.join(work, "gt_codec"), "dense generation": os.path.join(work, "dense")}
    write_codec_reference(bundle, dirs["through the codec"], bundle.codec)
    generate(bundle, dirs["dense generation"], tcfg.rflow, seed=tcfg.seed, codec=bundle.codec,
             meta=dict(weights=weights))
    rows = {}
    for label, d in dirs.items():
        r = evaluate_run(label, 0.0, d, protocol, perception=synthetic_scorer(bundle.dataset, protocol))
        rows[label] = {k: r.metrics.get(k) for k in ("mAP", "NDS", "mIoU", "PSNR", "SSIM")}
    loss = loss_curve(args.train_log, os.path.join(args.out, "loss.png"))
    plot_frames(dirs, os.path.join(args.out, "frames.png"), args.grid_scenes, protocol.cameras)
    ref, gen = rows["through the codec"], rows["dense generation"]
    ratios = {k: (gen[k] / ref[k] if ref[k] else None) for k in ("mAP", "mIoU")}
    payload = dict(weights=weights, scenes=args.scenes, seed_offset=args.seed_offset, loss=loss, metrics=rows,
                   dense_over_codec=ratios, sampling_steps=tcfg.rflow.num_sampling_steps,
                   cfg_scale=tcfg.rflow.cfg_scale)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(payload, f, indent=2)
    lines = ["| row | mAP (%) | NDS (%) | mIoU (%) | PSNR | SSIM |", "|---|---|---|---|---|---|"]
    for label, m in rows.items():
        lines.append(f"| {label} | {100 * m['mAP']:.2f} | {100 * m['NDS']:.2f} | {100 * m['mIoU']:.2f} | "
                     f"{m['PSNR']:.2f} | {m['SSIM']:.4f} |")
    lines.append("")
    lines.append("dense / through the codec: " + ", ".join(
        f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in ratios.items()))
    with open(os.path.join(args.out, "metrics.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
