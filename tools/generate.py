#!/usr/bin/env python
"""Generate multi-view videos in MagicDrive-V2's test layout, dense and/or pruned.

    python tools/generate.py configs/tiny_cpu.py --ckpt auto --plan work_dirs/tiny_cpu/plan.json \\
        --out work_dirs/tiny_cpu/videos/pruned --num-samples 4
    python tools/generate.py configs/tiny_cpu.py --ckpt auto --dense --out work_dirs/tiny_cpu/videos/dense

Held-out samples: the config's synthetic data with ``seed + --seed-offset``. ``--ckpt auto`` takes the
newest complete checkpoint in ``work_dir``; EMA weights unless ``--no-ema``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plan_problem(model, prune_cfg, path: str):
    """``None`` if the plan at ``path`` applies to ``model`` under ``prune_cfg`` (it is removed again), else a
    one-line message naming the fix."""
    from coredit_video import apply, remove

    if not os.path.isfile(path):
        return f"plan {path!r} not found (training writes <work_dir>/plan.json)"
    try:
        apply(model, prune_cfg, plan=path)
    except (ValueError, KeyError, TypeError) as e:  # over the cap, another model's blocks, not a plan
        cap = f" (the cap is the config's prune.max_ratio={prune_cfg.max_ratio})" if "max_ratio" in str(e) else ""
        return f"plan {path}: {e}{cap}"
    finally:
        remove(model)
    return None


def main(argv=None) -> int:
    from mmengine.config import DictAction

    from coredit_video.integrations.magicdrive_runner import run_magicdrive_script, runner_of

    first = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if first and os.path.isfile(first[0]) and runner_of(first[0]) == "magicdrive_v2":
        return run_magicdrive_script("test_magicdrive.py", first[0])  # MagicDrive-V2 writes its test layout

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    ap.add_argument("--ckpt", default="auto", help="'auto', a checkpoint directory, 'embedded' (the shipped "
                    "pre-trained host) or 'none' (random weights)")
    mode = ap.add_mutually_exclusive_group(required=True)  # (MagicDrive-V2 configs: only the config)
    mode.add_argument("--plan", help="pruning plan JSON (from training): generate pruned")
    mode.add_argument("--dense", action="store_true", help="generate with the dense model")
    mode.add_argument("--codec-reference", action="store_true",
                      help="no model: write the ground truth through the codec as the generations (the upper bound)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--gens", type=int, default=1, help="generations per sample (_gen0, _gen1, ...)")
    ap.add_argument("--seed-offset", type=int, default=1000, help="held-out data seed = data.seed + this")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: rflow.num_sampling_steps)")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (default: rflow.cfg_scale)")
    ap.add_argument("--no-ema", action="store_true")
    ap.add_argument("--no-gt", action="store_true", help="do not write gt_video/")
    args = ap.parse_args(argv)
    for name in ("num_samples", "gens", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} {value}: give at least 1")
    if args.guidance is not None and args.guidance < 0:
        ap.error(f"--guidance {args.guidance}: the CFG scale is >= 0 (1: no guidance)")

    from coredit_video.generation import generate, load_weights, write_codec_reference
    from coredit_video.training.checkpoint import checkpoint_dir, checkpoint_problems, list_checkpoints
    from coredit_video.cli import load_train_config
    from coredit_video.training.hosts import build_host_bundle, held_out_data

    _, tcfg = load_train_config(args.config, args.cfg_options)
    bundle = build_host_bundle(tcfg.model, held_out_data(tcfg.data, args.num_samples, args.seed_offset), tcfg.seed)
    if args.codec_reference:
        print(json.dumps(write_codec_reference(bundle, args.out, bundle.codec, write_gt=not args.no_gt), indent=2))
        return 0
    ckpt = args.ckpt
    if ckpt == "auto":
        found = list_checkpoints(checkpoint_dir(tcfg.work_dir))
        if not found:
            print(f"error: no complete checkpoint in {tcfg.work_dir}; train first or pass --ckpt PATH / none",
                  file=sys.stderr)
            return 2
        ckpt = found[-1][1]
    if args.plan:
        problem = plan_problem(bundle.model, tcfg.prune, args.plan)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    weights = "random"
    if ckpt == "embedded" or ckpt.endswith(".pt"):
        from coredit_video.embedded.host.shipped import ShippedWeightsError, load_host_weights

        try:
            weights = load_host_weights(bundle.model, ckpt)
        except ShippedWeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    elif ckpt != "none":
        problems = checkpoint_problems(ckpt) if os.path.isfile(os.path.join(ckpt, "trainer.pt")) else []
        try:
            if problems:
                raise OSError(f"broken checkpoint ({problems[0]})")
            weights = load_weights(bundle.model, ckpt, use_ema=not args.no_ema)
        except FileNotFoundError as e:  # its message names the fix
            print(f"error: --ckpt {ckpt}: {e}", file=sys.stderr)
            return 2
        except (OSError, KeyError, RuntimeError) as e:
            print(f"error: --ckpt {ckpt}: {e}; pass <work_dir>/checkpoints/step_N, --ckpt auto, embedded or none",
                  file=sys.stderr)
            return 2
    rflow = tcfg.rflow
    if args.steps is not None:
        rflow = dataclasses.replace(rflow, num_sampling_steps=args.steps)
    if args.guidance is not None:
        rflow = dataclasses.replace(rflow, cfg_scale=args.guidance)
    summary = generate(bundle, args.out, rflow, prune_cfg=tcfg.prune, plan=args.plan, gens=args.gens,
                       seed=tcfg.seed, write_gt=not args.no_gt, codec=bundle.codec,
                       meta=dict(checkpoint=ckpt, weights=weights, sampling_steps=rflow.num_sampling_steps,
                                 guidance=rflow.cfg_scale))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
