#!/usr/bin/env python
"""Export the EMA weights of a dense pre-training run as the shipped embedded host (fp16 + manifest).

    python tools/export_host.py configs/embedded_pretrain.py [--work-dir DIR] [--ckpt PATH] [--out FILE.pt]

Default output: ``coredit_video/embedded/host/weights/embedded_tiny.pt`` and ``.json`` (sha256, host config, step).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import Config

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--work-dir", default=None, help="the pre-training run (default: the config's work_dir)")
    ap.add_argument("--ckpt", default=None, help="a checkpoint directory (default: the newest complete one)")
    ap.add_argument("--out", default=None, help="output .pt (default: the shipped embedded host)")
    ap.add_argument("--weights", choices=("ema", "model"), default="ema",
                    help="the EMA shadow (default) or the trained weights themselves (a short run whose EMA still "
                         "remembers the random initialisation)")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.config):
        print(f"error: config file {args.config!r} not found", file=sys.stderr)
        return 2

    import torch

    from coredit_video.generation import load_weights
    from coredit_video.embedded.host.shipped import export_host, shipped_paths
    from coredit_video.training.checkpoint import checkpoint_dir, list_checkpoints
    from coredit_video.training.config import build_train_config
    from coredit_video.training.hosts import build_host_bundle

    cfg = Config.fromfile(args.config)
    tcfg = build_train_config(cfg)
    work = args.work_dir or tcfg.work_dir
    ckpt = args.ckpt
    if ckpt is None:
        found = list_checkpoints(checkpoint_dir(work))
        if not found:
            print(f"error: no complete checkpoint in {work}; run the pre-training first: torchrun --nproc_per_node 2 "
                  f"tools/train.py {args.config} --resume auto", file=sys.stderr)
            return 2
        ckpt = found[-1][1]
    state = torch.load(os.path.join(ckpt, "trainer.pt"), map_location="cpu", weights_only=False)
    model = build_host_bundle(tcfg.model, dict(tcfg.data, num_samples=1), tcfg.seed).model
    load_weights(model, ckpt, use_ema=args.weights == "ema")  # the host's names: a mismatch fails here
    weights = model.state_dict()
    out = args.out or shipped_paths()[0]
    manifest = export_host(weights, model.config, out, meta=dict(
        step=int(state["step"]), weights=args.weights, ema_decay=float(state["ema"]["decay"]),
        config=os.path.relpath(args.config), data=dict(tcfg.data), checkpoint=os.path.basename(ckpt)))
    print(f"wrote {out} ({os.path.getsize(out) / 2**20:.2f} MiB, {manifest['parameters']} parameters, step "
          f"{manifest['step']}, sha256 {manifest['sha256'][:16]}...)")
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
