#!/usr/bin/env python
"""The quality-vs-cost front: every token-reduction method, training-free, at ratios 0.1 ... 0.6, fidelity to dense
against measured time and counted FLOPs (see ``coredit_video/front.py``), on the built-in host or on a MagicDrive-V2
checkpoint (``--host magicdrive_v2``).

    python tools/front.py --bench-json docs/benchmarks/<bench_attention json> --out docs/quality
    python tools/front.py --seeds 0 --scenes 1 --sampling-steps 2 --methods coredit,tome --ratios 0.3 --out /tmp/f

Writes ``front.json`` (rows: method, ratio, seed, fidelity_PSNR, fidelity_SSIM, attn_error, flops_ratio,
time_ratio, steps, cost_flops, scope, host), ``front.png`` and ``front.md`` (the equal-time win counts) into
``--out``; re-running resumes.

MagicDrive-V2 host (``--host magicdrive_v2``): your MagicDrive-V2 test config and checkpoint, sampled by
``coredit_rflow`` (MagicDrive-V2's RFLOW, which tells CoReDiT each step), pruned through the ``magicdrive_v2`` adapter;
the model, text encoder, VAE, scheduler and validation clips are built from the config by MagicDrive-V2's own
registries (``coredit_video/integrations/magicdrive_front.py``). Fidelity is on the decoded frames (the config's VAE)
or, with ``--latents``, on the latents (PSNR peak: the dense latents' range). It runs in one process on one GPU
(no sequence parallelism), from the checkout (relative paths in the config are MagicDrive-V2's):

    export MAGICDRIVE_V2_ROOT=/path/to/MagicDrive-V2          # commit 4ed72c6, see third_party/README.md
    python tools/front.py --host magicdrive_v2 \\
        --config configs/magicdrive_coredit_test.py --ckpt /path/to/MagicDriveDiT-stage3-40k-ft \\
        --seeds 0 --scenes 4 --methods coredit_merge,tome,coredit --ratios 0 0.1 0.2 0.3 0.4 \\
        --fewer-steps 20 25 --out work_dirs/front_magicdrive

Rows carry ``host`` = ``magicdrive_v2:<config>``; ratio 0 (MagicDrive-V2 only) is the dense model through each
line's path, a check: its row must read 100 dB. ``cost_flops`` and ``flops_ratio`` are counted for the
MagicDrive-V2-XL preset at 848x1600, as on the built-in host.

Picking a setting on your own weights: run the front with your config and checkpoint on a few held-out scenes
(``--scenes 4``, one or two ``--seeds``; your reference ``--sampling-steps``), with the lines you could deploy (the
methods that run under your sequence parallelism, ``--fewer-steps`` for the fewer-steps alternative, ``--bench-json``
for measured time); then take the cheapest line (lowest ``cost_flops``, or ``time_ratio`` where you benched) whose
fidelity (PSNR / SSIM to your dense model) you accept, and set that method and ratio in your config's
``scheduler.prune`` (or that step count). A resumed run adds lines and ratios without re-sampling the measured ones.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def win_table(rows, seeds, ours_list, theirs_list, cost: str) -> str:
    from coredit_video.front import equal_cost_wins

    lines = [f"| ours (at equal {cost}) | vs | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for ours in ours_list:
        for theirs in theirs_list:
            cells = []
            for s in seeds:
                w, n = equal_cost_wins(rows, ours, theirs, s, cost)
                cells.append(f"{w} of {n}")
            lines.append(f"| {ours} | {theirs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def magicdrive_setup(args) -> None:
    """``--host magicdrive_v2``: the checkout importable and the working directory, paths made absolute first;
    every problem found here is one line (UsageError)."""
    from coredit_video.cli import UsageError, load_config
    from coredit_video.integrations.magicdrive_runner import checkout_root

    root = checkout_root()
    if not root or not os.path.isdir(os.path.join(root, "magicdrivedit")):
        raise UsageError("--host magicdrive_v2: set MAGICDRIVE_V2_ROOT to your MagicDrive-V2 checkout (commit 4ed72c6, "
                         "see third_party/README.md)")
    if args.config is None:
        raise UsageError("--host magicdrive_v2: give --config, your MagicDrive-V2 test config "
                         "(e.g. configs/magicdrive_coredit_test.py)")
    for name in ("config", "ckpt", "out", "bench_json", "step_time_json"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    cfg = load_config(args.config)  # a missing or broken config file: one line
    if not args.render_only:
        ckpt = args.ckpt or (cfg.get("model") or {}).get("from_pretrained")
        if not ckpt or ckpt == "???":
            raise UsageError("--host magicdrive_v2: give --ckpt, the MagicDrive-V2 checkpoint to measure "
                             "(as its scripts' --ckpt-path)")
        if not os.path.exists(ckpt if os.path.isabs(ckpt) else os.path.join(root, ckpt)):
            raise UsageError(f"--ckpt {ckpt!r} not found (a MagicDrive-V2 checkpoint file or directory)")
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import magicdrivedit.registry  # noqa: F401
    except ImportError as e:
        raise UsageError(f"MAGICDRIVE_V2_ROOT={root}: magicdrivedit does not import here ({e}); run in MagicDrive-V2's "
                         "environment") from None
    os.chdir(root)  # MagicDrive-V2 resolves its data, VAE and T5 paths from its root


def main(argv=None, host_factory=None) -> int:
    """``host_factory(settings) -> FrontHost``: a host built by the caller (tests); default from the settings."""
    from coredit_video.cli import UsageError, load_train_config
    from coredit_video.front import FRONT_HOSTS, FRONT_METHODS, FRONT_RATIOS, FrontSettings, family_wins, run_front

    from coredit_video.cli import ArgumentParser

    doc = __doc__.split("\n\n")
    ap = ArgumentParser(description=doc[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="\n\n".join(p for p in doc[1:] if "MagicDrive-V2" in p or "magicdrive_v2" in p
                                            or "own weights" in p))
    ap.add_argument("--host", choices=FRONT_HOSTS, default="builtin",
                    help="builtin: the config's embedded host; magicdrive_v2: a MagicDrive-V2 config and checkpoint "
                         "(--ckpt; MAGICDRIVE_V2_ROOT), sampled by coredit_rflow")
    ap.add_argument("--config", default=None,
                    help="builtin: the host (train.init_from) and the world (default configs/tiny_cpu.py); "
                         "magicdrive_v2: your MagicDrive-V2 test config (model, scheduler, vae, text_encoder, data)")
    ap.add_argument("--ckpt", default=None, help="magicdrive_v2: the checkpoint (default: the config's "
                    "model.from_pretrained)")
    ap.add_argument("--latents", action="store_true",
                    help="magicdrive_v2: fidelity on the latents, no decoding (PSNR peak: the dense latents' range)")
    ap.add_argument("--out", default="work_dirs/front")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds")
    ap.add_argument("--scenes", type=int, default=8,
                    help="held-out scenes (builtin: seed offset 1000; magicdrive_v2: spread over the validation set)")
    ap.add_argument("--probe-scenes", type=int, default=None,
                    help="scenes whose dense trajectory gives attn_error (default 2; magicdrive_v2: 0, it recomputes "
                         "every attention call per method and ratio)")
    ap.add_argument("--probe-every", type=int, default=1, help="attn_error on every k-th model forward")
    ap.add_argument("--probe-methods", default="", help="methods measured by the probe only (comma-separated)")
    ap.add_argument("--sampling-steps", type=int, default=None, help="default: rflow.num_sampling_steps")
    ap.add_argument("--methods", default=",".join(FRONT_METHODS), help="comma-separated")
    ap.add_argument("--ratios", type=float, nargs="+", default=list(FRONT_RATIOS),
                    help="in (0, 1); magicdrive_v2 also takes 0 (the dense model through each line: reads 100 dB)")
    ap.add_argument("--bench-json", default=None, help="tools/bench_attention.py --json output: the time_ratio column")
    ap.add_argument("--render-only", action="store_true",
                    help="write front.json / front.png / front.md from the rows measured so far (no sampling)")
    ap.add_argument("--temperature", type=float, default=0.05, help="coredit_sharp's temperature")
    ap.add_argument("--max-stale", type=int, default=2, help="METHOD@block+cache lines: prune.max_stale")
    ap.add_argument("--dense-steps", type=int, default=1, help="METHOD@block+cache lines: prune.dense_steps")
    ap.add_argument("--fewer-steps", type=int, nargs="*", default=[],
                    help="the line fewer_steps: the dense model at each of these step counts (of --sampling-steps)")
    ap.add_argument("--step-time-json", default=None,
                    help="tools/bench_step_time.py output: the cost_time column (whole run's measured time / dense)")
    args = ap.parse_args(argv)
    if args.probe_scenes is None:
        args.probe_scenes = 0 if args.host == "magicdrive_v2" else 2
    if args.bench_json and not os.path.isfile(args.bench_json):
        raise UsageError(f"--bench-json {args.bench_json!r} not found (run tools/bench_attention.py --json)")
    if args.step_time_json and not os.path.isfile(args.step_time_json):
        raise UsageError(f"--step-time-json {args.step_time_json!r} not found (run tools/bench_step_time.py)")
    if args.host == "builtin":
        if args.ckpt or args.latents:
            raise UsageError("--ckpt / --latents are for --host magicdrive_v2 (the built-in host reads "
                             "train.init_from)")
        args.config = args.config or "configs/tiny_cpu.py"
        load_train_config(args.config)  # every config value checked before the dense scenes are sampled
    else:
        magicdrive_setup(args)
    try:
        s = FrontSettings(config=args.config, out=args.out, seeds=args.seeds, scenes=args.scenes,
                          probe_scenes=args.probe_scenes, probe_every=args.probe_every,
                          probe_methods=[m for m in args.probe_methods.split(",") if m],
                          sampling_steps=args.sampling_steps,
                          methods=[m for m in args.methods.split(",") if m], ratios=args.ratios,
                          bench_json=args.bench_json, temperature=args.temperature, render_only=args.render_only,
                          max_stale=args.max_stale, dense_steps=args.dense_steps, fewer_steps=args.fewer_steps,
                          host=args.host, ckpt=args.ckpt, latents=args.latents, step_time_json=args.step_time_json)
    except ValueError as e:
        raise UsageError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    payload = run_front(s, host=host_factory(s) if host_factory is not None else None)
    rows = payload["rows"]
    ours = [m for m in s.methods if m.startswith("coredit")]
    theirs = [m for m in s.methods if m in ("tome", "tomesd", "todo")] + (["fewer_steps"] if s.fewer_steps else [])
    md = ["# The quality-vs-cost front (training-free)", "",
          "Equal-cost win counts: at each of the other method's points, is ours' fidelity PSNR (interpolated along "
          "its line at the same cost) at or above? `n of m`: m points counted: those inside ours' cost range, and "
          "those outside it where one side dominates (costlier than all of ours and not above ours' costliest "
          "point: a win; cheaper than all of ours and above ours' cheapest: a loss).", ""]
    for cost in ("cost_flops", "time_ratio", "flops_ratio"):
        # fewer steps costs less per run, not per forward: compared on the whole run's cost only
        vs = [m for m in theirs if cost == "cost_flops" or m != "fewer_steps"]
        if vs and any(r.get(cost) is not None for r in rows):
            md += [win_table(rows, list(s.seeds), ours, vs, cost), ""]
    for cost in ("cost_flops", "cost_time"):
        if ours and theirs and any(r.get(cost) is not None for r in rows):
            md += [f"The CoReDiT family (every `coredit*` line: any rule, scope, cache or step count) at equal "
                   f"{cost}: at each of the other line's points, is the best family point that costs at most as "
                   "much at or above it?", "",
                   "| vs | " + " | ".join(f"seed {sd}" for sd in s.seeds) + " |", "|---|" + "---|" * len(s.seeds)]
            md += ["| " + t + " | " + " | ".join("{} of {}".format(*family_wins(rows, ours, t, sd, cost))
                                                 for sd in s.seeds) + " |" for t in theirs]
            md.append("")
    md += ["| method | ratio | seed | fidelity PSNR | SSIM | attn error % | FLOPs / dense | time / dense | steps | "
           "whole-run FLOPs / dense | whole-run time / dense |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        md.append(f"| {r['method']} | {r['ratio']:g} | {r['seed']} | {fmt(r['fidelity_PSNR'], 2)} | "
                  f"{fmt(r['fidelity_SSIM'], 4)} | {fmt(r['attn_error'], 2)} | {fmt(r['flops_ratio'], 3)} | "
                  f"{fmt(r['time_ratio'], 3)} | {r.get('steps', '-')} | {fmt(r.get('cost_flops'), 3)} | "
                  f"{fmt(r.get('cost_time'), 3)} |")
    with open(os.path.join(args.out, "front.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
