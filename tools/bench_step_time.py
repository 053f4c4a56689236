#!/usr/bin/env python
"""Time of one denoising step of the built-in host at MagicDrive-V2-XL width, per front line and ratio, over the
dense step's: what ``tools/front.py --step-time-json`` combines over a run's steps into ``cost_time``.

A front line is ``METHOD[@SCOPE][+cache|+cache_self|+cache_all]`` (``coredit_video/front.py``). Each round times
every variant (dense and each line at each ratio) once, in an order shuffled per round (seeded), after one untimed
warm-up round; a variant's ``time_ratio`` is the median over rounds of its time over that round's dense step.
Step-cache lines are timed in their steady state: an untimed dense step fills the cache, the next (cached) step is
timed. The model is the XL host (width 1152, 16 heads) at reduced depth, views and frames (the front's cost is per
step, so depth scales dense and pruned alike; fewer views and frames shrink only the temporal and cross-view share).

    python tools/bench_step_time.py --device cpu --threads 1 --depth 1 --control-depth 1 --views 1 \
        --latent-frames 1 --resolution 848x1600 --ratios 0.1 0.3 0.5 0.6 --repeats 3

Writes ``--out`` (default ``docs/benchmarks/step_time_<device>.json``, rows ``line``, ``ratio``, ``time_ratio``,
``time_ratio_min``, ``time_ratio_max``, ``time_s``) and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_LINES = "coredit,coredit_merge,tome,tomesd,todo,coredit@block,coredit@block+cache"


def variant_cfg(line: str, ratio: float, n_blocks: int) -> dict:
    from coredit_video.front import parse_line

    p = parse_line(line)
    cfg = dict(method=p.method, scope=p.scope, ratios=[ratio] * n_blocks, max_ratio=max(0.5, ratio), late_steps=0)
    if p.cache:
        cfg.update(step_cache=True, max_stale=2, dense_steps=1, cache_context=p.context)
    return cfg


def time_variant(model, inputs, cfg, sync) -> float:
    """Seconds of one main-phase step of ``model`` patched by ``cfg`` (``None``: dense); a step-cache variant runs
    one untimed step first (``bench_e2e.start_step``: it fills the cache)."""
    import torch

    import coredit_video as cv
    from bench_e2e import start_step

    ctrl = start_step(model, cfg, inputs) if cfg is not None else None
    try:
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            model(**inputs)
            sync()
            return time.perf_counter() - t0
    finally:
        if ctrl is not None:
            cv.remove(model)


def main(argv=None) -> int:
    import torch

    from bench_e2e import build_model, make_inputs
    from coredit_video.cli import ArgumentParser, UsageError
    from coredit_video.front import FrontSettings

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--preset", default="xl")
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--control-depth", type=int, default=1)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--latent-frames", type=int, default=1)
    ap.add_argument("--resolution", default="848x1600")
    ap.add_argument("--lines", default=DEFAULT_LINES, help="comma-separated front lines")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="the per-round order's seed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [m for m in args.lines.split(",") if m]
    try:
        FrontSettings(methods=lines, ratios=args.ratios)  # the front's own check of lines and ratios
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats}: give at least 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ns = argparse.Namespace(preset=args.preset, pad_sp=1, depth=args.depth, control_depth=args.control_depth,
                            batch=1, views=args.views, latent_frames=args.latent_frames, cond_tokens=300)
    model, cfg = build_model(ns, device, dtype)
    inputs = make_inputs(ns, cfg, args.resolution, device, dtype)
    n_blocks = cfg.depth + cfg.control_depth
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    variants = [None] + [(m, r) for m in lines for r in args.ratios]
    times = {v: [] for v in variants}
    rng = random.Random(args.seed)
    from tqdm import tqdm

    for rnd in tqdm(range(args.repeats + 1), desc="rounds"):
        order = list(variants)
        rng.shuffle(order)
        for v in order:
            t = time_variant(model, inputs, None if v is None else variant_cfg(v[0], v[1], n_blocks), sync)
            if rnd:  # round 0 warms up
                times[v].append(t)
    dense = times[None]
    rows = [dict(line="dense", ratio=0.0, time_ratio=1.0, time_ratio_min=1.0, time_ratio_max=1.0,
                 time_s=statistics.median(dense))]
    for v in variants[1:]:
        ratios = [t / d for t, d in zip(times[v], dense)]
        rows.append(dict(line=v[0], ratio=v[1], time_ratio=statistics.median(ratios), time_ratio_min=min(ratios),
                         time_ratio_max=max(ratios), time_s=statistics.median(times[v])))
    out = args.out or f"docs/benchmarks/step_time_{device.type}.json"
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(), dtype=str(dtype),
                preset=args.preset, hidden=cfg.hidden, heads=cfg.num_heads, depth=cfg.depth,
                control_depth=cfg.control_depth, views=args.views, latent_frames=args.latent_frames,
                resolution=args.resolution, repeats=args.repeats,
                command="python tools/bench_step_time.py " + " ".join(sys.argv[1:] if argv is None else argv))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    md = ["# One denoising step, time over dense", "", f"`{meta['command']}`", "",
          f"{meta['device']}, torch {meta['torch']}, {meta['threads']} threads, {dtype}; XL width {cfg.hidden}, depth "
          f"{cfg.depth} + {cfg.control_depth} control, {args.views} view(s), {args.latent_frames} latent frame(s), "
          f"{args.resolution}; median of {args.repeats} rounds (min..max)", "",
          "| line | ratio | time / dense | min..max |", "|---|---|---|---|"]
    md += [f"| {r['line']} | {r['ratio']:g} | {r['time_ratio']:.3f} | "
           f"{r['time_ratio_min']:.3f}..{r['time_ratio_max']:.3f} |" for r in rows]
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
