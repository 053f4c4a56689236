#!/usr/bin/env python
"""CoReDiT progressive fine-tuning.

    torchrun --nproc_per_node 2 tools/train.py configs/tiny_cpu.py
    torchrun --nproc_per_node 8 tools/train.py configs/magicdrive_coredit.py --resume auto
    python tools/train.py configs/tiny_cpu.py --cfg-options train.steps=10 parallel.sp_size=1

``--resume auto`` continues from the newest complete checkpoint in ``work_dir`` (or starts fresh);
``--resume PATH`` from that checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import Config, DictAction

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="mmengine config file (configs/*.py)")
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                    help="override config keys, e.g. train.steps=10 schedule.interval=2")
    ap.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint) or a checkpoint directory")
    ap.add_argument("--work-dir", default=None, help="override work_dir")
    ap.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: exit after N steps
    args = ap.parse_args(argv)

    if not os.path.isfile(args.config):
        ap.error(f"config file {args.config!r} not found")
    from coredit_video.integrations.magicdrive_runner import run_magicdrive_script, runner_of

    if runner_of(args.config) == "magicdrive_v2":
        if args.cfg_options or args.resume:
            print("note: --cfg-options / --resume are not passed to MagicDrive-V2's script; set them in the config "
                  "(its `load` key resumes; CoReDiT's schedule resumes from scheduler.state_dir)", file=sys.stderr)
        return run_magicdrive_script("train_magicdrive.py", args.config)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir

    from coredit_video.training.checkpoint import CheckpointError
    from coredit_video.training.config import build_train_config
    from coredit_video.training.trainer import train

    try:
        tcfg = build_train_config(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sp = tcfg.parallel.sp_size
    if sp > 1 and "WORLD_SIZE" not in os.environ:
        print(f"error: parallel.sp_size={sp} needs {sp} processes: launch with `torchrun --nproc_per_node {sp} "
              f"tools/train.py ...` or pass --cfg-options parallel.sp_size=1", file=sys.stderr)
        return 2
    try:
        summary = train(tcfg, resume=args.resume, stop_after=args.stop_after)
    except CheckpointError as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        brief = {k: v for k, v in summary.items() if k != "decisions"}
        print(json.dumps(brief, indent=2, default=str))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
