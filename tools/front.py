#!/usr/bin/env python
"""The quality-vs-cost front: every token-reduction method, training-free, at ratios 0.1 ... 0.6, fidelity to dense
against measured time and counted FLOPs (see ``coredit_video/front.py``).

    python tools/front.py --bench-json docs/benchmarks/<bench_attention json> --out docs/quality
    python tools/front.py --seeds 0 --scenes 1 --sampling-steps 2 --methods coredit,tome --ratios 0.3 --out /tmp/f

Writes ``front.json`` (rows: method, ratio, seed, fidelity_PSNR, fidelity_SSIM, attn_error, flops_ratio,
time_ratio), ``front.png`` and ``front.md`` (the equal-time win counts) into ``--out``; re-running resumes.
"""
from __future__ import annotations

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


def main(argv=None) -> int:
    from coredit_video.cli import UsageError, load_train_config
    from coredit_video.front import FRONT_METHODS, FRONT_RATIOS, FrontSettings, run_front

    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny_cpu.py", help="the host (train.init_from) and the world")
    ap.add_argument("--out", default="work_dirs/front")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds")
    ap.add_argument("--scenes", type=int, default=8, help="held-out scenes (seed offset 1000)")
    ap.add_argument("--probe-scenes", type=int, default=2, help="scenes whose dense trajectory gives attn_error")
    ap.add_argument("--probe-every", type=int, default=1, help="attn_error on every k-th model forward")
    ap.add_argument("--probe-methods", default="", help="methods measured by the probe only (comma-separated)")
    ap.add_argument("--sampling-steps", type=int, default=None, help="default: rflow.num_sampling_steps")
    ap.add_argument("--methods", default=",".join(FRONT_METHODS), help="comma-separated")
    ap.add_argument("--ratios", type=float, nargs="+", default=list(FRONT_RATIOS))
    ap.add_argument("--bench-json", default=None, help="tools/bench_attention.py --json output: the time_ratio column")
    ap.add_argument("--render-only", action="store_true",
                    help="write front.json / front.png / front.md from the rows measured so far (no sampling)")
    ap.add_argument("--temperature", type=float, default=0.05, help="coredit_sharp's temperature")
    ap.add_argument("--max-stale", type=int, default=2, help="METHOD@block+cache lines: prune.max_stale")
    ap.add_argument("--dense-steps", type=int, default=1, help="METHOD@block+cache lines: prune.dense_steps")
    ap.add_argument("--fewer-steps", type=int, nargs="*", default=[],
                    help="the line fewer_steps: the dense model at each of these step counts (of --sampling-steps)")
    args = ap.parse_args(argv)
    load_train_config(args.config)  # every config value checked before the dense scenes are sampled
    if args.bench_json and not os.path.isfile(args.bench_json):
        raise UsageError(f"--bench-json {args.bench_json!r} not found (run tools/bench_attention.py --json)")
    try:
        s = FrontSettings(config=args.config, out=args.out, seeds=args.seeds, scenes=args.scenes,
                          probe_scenes=args.probe_scenes, probe_every=args.probe_every,
                          probe_methods=[m for m in args.probe_methods.split(",") if m],
                          sampling_steps=args.sampling_steps,
                          methods=[m for m in args.methods.split(",") if m], ratios=args.ratios,
                          bench_json=args.bench_json, temperature=args.temperature, render_only=args.render_only,
                          max_stale=args.max_stale, dense_steps=args.dense_steps, fewer_steps=args.fewer_steps)
    except ValueError as e:
        raise UsageError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    payload = run_front(s)
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
    md += ["| method | ratio | seed | fidelity PSNR | SSIM | attn error % | FLOPs / dense | time / dense | steps | "
           "whole-run FLOPs / dense |", "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        md.append(f"| {r['method']} | {r['ratio']:.1f} | {r['seed']} | {fmt(r['fidelity_PSNR'], 2)} | "
                  f"{fmt(r['fidelity_SSIM'], 4)} | {fmt(r['attn_error'], 2)} | {fmt(r['flops_ratio'], 3)} | "
                  f"{fmt(r['time_ratio'], 3)} | {r.get('steps', '-')} | {fmt(r.get('cost_flops'), 3)} |")
    with open(os.path.join(args.out, "front.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
