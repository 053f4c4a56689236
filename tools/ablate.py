#!/usr/bin/env python
"""The paper's Table 5 on the embedded default: CoReDiT against its ablations and token merging, each
fine-tuned from the shipped pre-trained host with the same data, steps and noise, plus a training-free
quality-against-ratio curve.

    python tools/ablate.py --out docs/quality                        # the full study (about 80 min on 2 cores)
    python tools/ablate.py --steps 2 --sampling-steps 2 --scenes 1 --curve-ratios 0.3 --out /tmp/smoke

Writes ``quality.json`` (one object per variant and seed), ``quality.md`` and ``quality_vs_ratio.png`` into
``--out``; re-running resumes (finished fine-tunes and generations are kept).
"""
from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import DictAction

    from coredit_video.quality_study import VARIANTS, StudySettings, run_study

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny_cpu.py", help="fine-tuning config (init_from: the host)")
    ap.add_argument("--eval-config", default="configs/eval_tiny_cpu.py")
    ap.add_argument("--out", default="work_dirs/ablate")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training and sampling seeds")
    ap.add_argument("--world-seed", type=int, default=0, help="seed of the synthetic world (data.seed)")
    ap.add_argument("--scenes", type=int, default=4, help="held-out scenes to generate and score")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the config's)")
    ap.add_argument("--sampling-steps", type=int, default=None, help="default: rflow.num_sampling_steps")
    ap.add_argument("--nproc", type=int, default=2, help="processes per fine-tune (data parallel)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--curve-ratios", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--curve-methods", nargs="*", default=["coredit", "tome"], choices=["coredit", "tome"])
    ap.add_argument("--rule", default="coredit",
                    help="the CoReDiT method of the coredit, training_free, uniform and cross-view variants "
                         "(e.g. coredit_merge; default: the paper's rule)")
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                    help="override keys of --config for every run (e.g. data.image_hw=(32,56))")
    args = ap.parse_args(argv)
    from coredit_video.cli import load_config, load_train_config

    load_train_config(args.config, args.cfg_options)  # every value, --cfg-options included, before any fine-tune
    load_config(args.eval_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        settings = StudySettings(config=args.config, eval_config=args.eval_config, out=args.out, seeds=args.seeds,
                                 world_seed=args.world_seed, scenes=args.scenes, steps=args.steps,
                                 sampling_steps=args.sampling_steps, nproc=args.nproc, variants=args.variants,
                                 curve_ratios=args.curve_ratios, curve_methods=args.curve_methods, rule=args.rule,
                                 extra_options=dict(args.cfg_options))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run_study(settings)
    except RuntimeError as e:  # a fine-tune failed: its log is named
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(open(os.path.join(args.out, "quality.md")).read())
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
