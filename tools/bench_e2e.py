#!/usr/bin/env python
"""One denoising step of the built-in MagicDrive-shaped host, dense vs CoReDiT pruned: time and peak memory,
next to the FLOPs model's prediction for the same model and shapes, and the time split per module kind.
With ``--cross-view kv|qkv`` a third variant also prunes the cross-view attention (``pruned_cv``).

Default: the XL host (``host_config('xl')``: width 1152, 16 heads, 28 base + 13 control spatial blocks
and as many temporal blocks, cross-view attention in the base spatial blocks) at 848x1600
(53x100 tokens, padded to 56x100 for SP 8), 6 views, 5 latent frames (17 frames), batch 1, a uniform
plan of ratio 0.26 (mean 0.26; ``--plan plan.json`` for another), main phase. bf16 on CUDA, fp32 on CPU.

Timing: ``--repeats`` rounds after warm-up, each round one dense and one pruned step back to back
(``coredit_video.apply`` / ``remove`` between them); speed-up = median over rounds of dense / pruned.
Peak memory: on CUDA ``max_memory_allocated`` during one step minus the memory allocated before it; on
CPU the peak resident set size of a fresh worker process during one step (the kernel's peak mark reset
just before it) minus its resident size just before the step (one worker per variant).

    python tools/bench_e2e.py                                              # GPU, full XL
    python tools/bench_e2e.py --device cpu --depth 1 --control-depth 1 --views 1 --latent-frames 1
    python tools/bench_e2e.py --device cpu --depth 1 --control-depth 1 --views 3 --latent-frames 1 --cross-view qkv

``--scope block`` compares the two pruning scopes instead: dense, attention scope (self-attention and, with
``--cross-view`` (default here ``qkv``), cross-view attention pruned) and block scope (``prune.scope="block"``: each
prunable spatial block runs on its retained tokens) at every ``--ratios`` value (default 0.4,0.5) on every
``--resolutions`` entry (default 848x1600,424x800), one model for all. Each round runs every variant once, in an
order shuffled per round (seeded); per mode it reports time / dense and speed-up (dense / mode), each the median
of the per-round ratios against that round's dense step, next to the FLOPs model for the same host and shapes
(``rows`` in the JSON, one per resolution and mode and ratio, dense included), and optionally peak memory and the
time per module kind (``--no-memory``, ``--no-split``). The files are rewritten after each resolution.

    python tools/bench_e2e.py --scope block                               # GPU, full XL
    python tools/bench_e2e.py --scope block --device cpu --threads 1 --depth 2 --control-depth 1 --views 1 \
        --latent-frames 2 --no-memory

Writes ``docs/benchmarks/e2e_<tag>.{json,md}`` (default tag ``cpu`` / ``cuda``; ``block_scope_cpu`` /
``block_scope_cuda`` with ``--scope block``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import coredit_video as cv  # noqa: E402
from coredit_video import kernels  # noqa: E402
from coredit_video.flops import PRESETS, count_flops, parse_hw  # noqa: E402
from coredit_video.ops.selection import check_ratio  # noqa: E402
from coredit_video.cli import fail  # noqa: E402
from coredit_video.plan import read_plan  # noqa: E402
from coredit_video.embedded.host import MultiViewSTDiT, host_config  # noqa: E402
from coredit_video.embedded.host.mv_stdit import HOST_PRESETS  # noqa: E402


def build_model(args, device, dtype):
    overrides = {"force_pad_h_for_sp_size": args.pad_sp if args.pad_sp > 1 else None}
    if args.depth is not None:
        overrides["depth"] = args.depth
    if args.control_depth is not None:
        overrides["control_depth"] = args.control_depth
    cfg = host_config(args.preset, **overrides)
    torch.manual_seed(0)
    return MultiViewSTDiT(cfg).to(device=device, dtype=dtype).eval(), cfg


def make_inputs(args, cfg, resolution: str, device, dtype) -> dict:
    h_px, w_px = parse_hw(resolution)
    g = torch.Generator().manual_seed(1)
    B, NC, T = args.batch, args.views, args.latent_frames
    lat_h, lat_w = -(-h_px // 8), -(-w_px // 8)
    inputs = dict(
        x=torch.randn(B, NC, cfg.in_channels, T, lat_h, lat_w, generator=g),
        timestep=torch.full((B,), 500.0),
        y=torch.randn(B, args.cond_tokens, cfg.cond_dim, generator=g),
        cams=torch.randn(B, NC, cfg.cam_dim, generator=g),
        bev_map=torch.randn(B, cfg.map_channels, 64, 64, generator=g),
    )
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def build(args, device, dtype):
    model, cfg = build_model(args, device, dtype)
    return model, cfg, make_inputs(args, cfg, args.resolution, device, dtype)


def plan_of(args, n_blocks: int):
    if args.plan:
        return read_plan(args.plan).ratios
    return [args.ratio] * n_blocks


def prune_cfg(args, plan, variant: str = "pruned"):
    cross_view = {"cross_view": args.cross_view if variant == "pruned_cv" else "off",
                  "cross_view_select": args.cross_view_select}
    if args.plan:  # the plan with its whole layout (grids, stride, bands, late steps)
        return {"plan": args.plan, **cross_view}
    return {"ratios": plan, "max_ratio": max(0.5, max(plan)), **cross_view}


SCOPE_MODES = ("attention", "block")  # --scope block: the modes timed against dense, per ratio
CACHE_MODE = "block_cache"  # --scope block --step-cache: block scope with the step cache, in its steady state


def scope_modes(args) -> tuple:
    return SCOPE_MODES + ((CACHE_MODE,) if getattr(args, "step_cache", False) else ())


def scope_prune_cfg(args, mode: str, ratio: float, n_blocks: int) -> dict:
    """Attention scope (with ``--cross-view``, default qkv here), block scope, or block scope with the step cache,
    uniform ``ratio``."""
    cfg = {"ratios": [ratio] * n_blocks, "max_ratio": max(0.5, ratio), "scope": "block" if mode == CACHE_MODE else mode}
    if mode == "attention":
        cfg.update(cross_view=scope_cross_view(args), cross_view_select=args.cross_view_select)
    if mode == CACHE_MODE:
        cfg.update(step_cache=True)
    return cfg


def start_step(model, cfg, inputs):
    """Patch ``model`` by ``cfg`` for a main-phase step; with the step cache, run step 0 first (untimed: it fills
    the cache) so the step measured next takes the cache's path. Returns the controller."""
    ctrl = cv.apply(model, cfg)
    ctrl.set_step(0, 30)
    if ctrl.step_cache is not None:
        with torch.no_grad():
            model(**inputs)
        ctrl.set_step(1, 30)
    return ctrl


def scope_cross_view(args) -> str:
    """``--cross-view``: off unless given in attention mode; qkv unless given in the scope comparison."""
    if args.cross_view is not None:
        return args.cross_view
    return "qkv" if args.scope == "block" else "off"


def module_kinds(model) -> dict:
    """Module kind -> modules whose forward time is summed under it (the rest of a step is "other")."""
    kinds = {"self_attention": [], "cross_view_attention": [], "cross_attention": [], "mlp": [], "temporal": []}
    for blk in [*model.base_blocks_s, *model.control_blocks_s]:
        kinds["self_attention"].append(blk.attn)
        kinds["cross_attention"].append(blk.cross_attn)
        kinds["mlp"].append(blk.mlp)
        if not blk.skip_cross_view:
            kinds["cross_view_attention"].append(blk.cross_view_attn)
    kinds["temporal"] = [*model.base_blocks_t, *model.control_blocks_t]
    return kinds


def time_modules(model, sync, totals: dict, clock=time.perf_counter) -> list:
    """Forward hooks adding each kind's time (s; wall time unless ``clock`` says otherwise) to ``totals``; returns
    the handles."""
    handles = []
    for kind, mods in module_kinds(model).items():
        for m in mods:
            def pre(mod, args, kind=kind):
                sync()
                mod.__dict__["_bench_t0"] = clock()

            def post(mod, args, out, kind=kind):
                sync()
                totals[kind] = totals.get(kind, 0.0) + clock() - mod.__dict__.pop("_bench_t0")

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(args) -> None:
    """Child process: one step of one variant; prints the resident-size numbers as JSON."""
    device, dtype = torch.device(args.device), resolve_dtype(args)
    model, cfg, inputs = build(args, device, dtype)
    n_blocks = cfg.depth + cfg.control_depth
    cache_bytes = 0
    if args.worker in (*SCOPE_MODES, CACHE_MODE):
        ctrl = start_step(model, scope_prune_cfg(args, args.worker, args.ratio, n_blocks), inputs)
        cache_bytes = ctrl.step_cache.nbytes if ctrl.step_cache is not None else 0
    elif args.worker != "dense":
        ctrl = cv.apply(model, prune_cfg(args, plan_of(args, n_blocks), args.worker))
        ctrl.set_step(0, 30)
    reset = reset_peak_rss()  # else the peak may be model construction's, not the step's
    before = _status_kib("VmRSS") * 1024
    with torch.no_grad():
        model(**inputs)
    if reset:
        peak = _status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"rss_before": before, "peak_rss": peak, "step_peak": peak - before, "peak_reset": reset,
                      "cache_bytes": cache_bytes}))


def resolve_dtype(args):
    if args.dtype:
        return getattr(torch, args.dtype)
    return torch.bfloat16 if torch.device(args.device).type == "cuda" else torch.float32


def memory_cpu(argv, variant: str, extra=()) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, *extra, "--worker", variant]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def step_memory_cuda(model, inputs, cfg) -> dict:
    """Peak CUDA memory of one forward step, pruned by ``cfg`` (``None``: dense), in bytes; with the step cache,
    ``cache_bytes`` is what the cache holds (allocated before the step, so inside ``before``)."""
    cache_bytes = 0
    if cfg is not None:
        ctrl = start_step(model, cfg, inputs)
        cache_bytes = ctrl.step_cache.nbytes if ctrl.step_cache is not None else 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        model(**inputs)
    torch.cuda.synchronize()
    cv.remove(model)
    return {"before": before, "peak": torch.cuda.max_memory_allocated(),
            "step_peak": torch.cuda.max_memory_allocated() - before, "cache_bytes": cache_bytes}


def memory_cuda(model, inputs, args, plan, variants) -> dict:
    return {v: step_memory_cuda(model, inputs, None if v == "dense" else prune_cfg(args, plan, v)) for v in variants}


def machine_meta(device, dtype, args, cfg) -> dict:
    """The run's machine, software and host-model fields shared by both benchmarks' ``meta``."""
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)",
            "torch": torch.__version__, "python": platform.python_version(), "triton": kernels.HAS_TRITON,
            "dtype": str(dtype).replace("torch.", ""), "preset": args.preset, "hidden": cfg.hidden,
            "depth": cfg.depth, "control_depth": cfg.control_depth, "heads": cfg.num_heads}


def command_line(argv) -> str:
    from bench_util import command_line as _command_line

    return _command_line("bench_e2e.py", argv)


def main(argv=None) -> dict:
    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="xl")
    ap.add_argument("--depth", type=int, default=None, help="override the preset's base depth (CPU runs)")
    ap.add_argument("--control-depth", type=int, default=None)
    ap.add_argument("--resolution", default="848x1600")
    ap.add_argument("--pad-sp", type=int, default=8)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--latent-frames", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--cond-tokens", type=int, default=32, help="condition tokens L handed in as y (+1 camera token)")
    ap.add_argument("--ratio", type=float, default=0.26)
    ap.add_argument("--plan", default=None, help="plan JSON (ratios per prunable block) instead of --ratio")
    ap.add_argument("--cross-view", default=None, choices=("off", "kv", "qkv"),
                    help="also time a variant pruning cross-view attention in this mode (default off); with --scope "
                         "block: the attention scope's cross-view mode (default qkv)")
    ap.add_argument("--scope", default="attention", choices=("attention", "block"),
                    help="attention: dense vs attention-scope pruning (the default outputs); block: dense, attention "
                         "scope and block scope interleaved at every --ratios and --resolutions")
    ap.add_argument("--resolutions", default=None,
                    help="--scope block: comma-separated resolutions (default 848x1600,424x800)")
    ap.add_argument("--ratios", default=None, help="--scope block: comma-separated uniform ratios (default 0.4,0.5)")
    ap.add_argument("--no-split", action="store_true",
                    help="--scope block: no time per module kind (its hooks synchronise on CUDA)")
    ap.add_argument("--cross-view-select", default="self", choices=("self", "fresh"))
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default="docs/benchmarks")
    ap.add_argument("--step-cache", action="store_true",
                    help="--scope block: also time block scope with the step cache (prune.step_cache), step 1 after "
                         "an untimed step 0 that fills it; memory rows give the cache's bytes")
    ap.add_argument("--worker", choices=("dense", "pruned", "pruned_cv", *SCOPE_MODES, CACHE_MODE), default=None,
                    help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(raw)
    if args.repeats < 1 or args.warmup < 0:
        fail(f"--repeats {args.repeats} --warmup {args.warmup}: time at least one round after >= 0 warm-up rounds")
    if args.scope == "block":
        try:
            args.resolution_list = parse_list(args.resolutions or "848x1600,424x800", "--resolutions", parse_resolution)
            args.ratio_list = parse_list(args.ratios or "0.4,0.5", "--ratios", parse_ratio)
        except ValueError as e:
            fail(str(e))
        if args.plan:
            fail("--plan: with --scope block every mode uses a uniform plan of each --ratios value; drop --plan")
    elif args.step_cache:
        fail("--step-cache goes with --scope block (the cache keeps block residuals)")
    elif args.resolutions or args.ratios or args.no_split:
        fail("--resolutions, --ratios and --no-split go with --scope block (else use --resolution, --ratio)")
    else:
        try:
            parse_resolution(args.resolution, "--resolution")
            if not args.plan:
                parse_ratio(str(args.ratio), "--ratio")
        except ValueError as e:
            fail(str(e))
    if args.preset not in HOST_PRESETS:
        fail(f"--preset {args.preset!r}: choose one of {sorted(HOST_PRESETS)}")
    args.cross_view = scope_cross_view(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return {}
    if args.scope == "block":
        return scope_main(args, raw)

    device, dtype = torch.device(args.device), resolve_dtype(args)
    model, cfg, inputs = build(args, device, dtype)
    n_blocks = cfg.depth + cfg.control_depth
    plan = plan_of(args, n_blocks)
    H, W = model.token_grid(inputs["x"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"host {args.preset}: width {cfg.hidden}, {cfg.depth}+{cfg.control_depth} spatial and temporal blocks, "
          f"token grid {H}x{W}, {args.views} views x {args.latent_frames} latent frames x batch {args.batch}, "
          f"{dtype}, plan mean {sum(plan) / len(plan):.3f}", flush=True)

    def step():
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        sync()
        return time.perf_counter() - t0

    variants = ("dense", "pruned") + (("pruned_cv",) if args.cross_view != "off" else ())
    times = {v: [] for v in variants}
    split = {v: {} for v in variants}  # module kind -> seconds summed over the measured rounds
    for i in range(args.warmup + args.repeats):
        for variant in variants:
            if variant != "dense":
                cv.apply(model, prune_cfg(args, plan, variant)).set_step(0, 30)
            handles = time_modules(model, sync, split[variant]) if i >= args.warmup else []
            dt = step()
            for h in handles:
                h.remove()
            cv.remove(model)
            if i >= args.warmup:
                times[variant].append(dt)
            print(f"  round {i}{' (warm-up)' if i < args.warmup else ''} {variant}: {dt:.2f} s", flush=True)
    speedups = [d / p for d, p in zip(times["dense"], times["pruned"])]
    for variant in variants:
        per = {k: v / args.repeats for k, v in split[variant].items()}
        per["other"] = max(0.0, sum(times[variant]) / args.repeats - sum(per.values()))
        split[variant] = per

    spec = host_spec(args, cfg)
    # The host attends to both neighbours (roll +-1) whatever the view count; the FLOPs model counts
    # min(2, views - 1) neighbours, so for fewer than 3 views it is evaluated at 3 views and scaled back.
    fl_views = max(args.views, 3)
    fl = count_flops(spec, hw_tokens=(H, W), latent_frames=args.latent_frames, views=fl_views, ratios=plan, stride=3)
    scale = args.views / fl_views
    predicted = fl["dense_total"] / fl["pruned_total"]
    cross_view = None
    if "pruned_cv" in variants:
        fl_cv = count_flops(spec, hw_tokens=(H, W), latent_frames=args.latent_frames, views=fl_views, ratios=plan,
                            stride=3, cross_view=args.cross_view, cross_view_select=args.cross_view_select)
        cv_speedups = [d / p for d, p in zip(times["dense"], times["pruned_cv"])]
        cross_view = {"mode": args.cross_view, "select": args.cross_view_select,
                      "pruned_s": statistics.median(times["pruned_cv"]), "speedup": statistics.median(cv_speedups),
                      "speedup_min": min(cv_speedups), "speedup_max": max(cv_speedups),
                      "flops_pruned": fl_cv["pruned_total"] * args.batch * scale,
                      "total_reduction": fl_cv["total_reduction"],
                      "cross_view_reduction": fl_cv["cross_view_reduction"],
                      "predicted_speedup": fl_cv["dense_total"] / fl_cv["pruned_total"]}

    memory = None
    if not args.no_memory:
        if device.type == "cuda":
            memory = memory_cuda(model, inputs, args, plan, variants)
        else:
            memory = {v: memory_cpu([a for a in raw], v) for v in variants}
    result = {
        "meta": {
            **machine_meta(device, dtype, args, cfg),
            "resolution": args.resolution, "tokens": [H, W], "views": args.views,
            "latent_frames": args.latent_frames, "batch": args.batch, "cond_tokens": args.cond_tokens + 1,
            "plan_mean": sum(plan) / len(plan), "warmup": args.warmup, "repeats": args.repeats,
            "command": command_line(raw), "note": args.note,
        },
        "dense_s": statistics.median(times["dense"]), "pruned_s": statistics.median(times["pruned"]),
        "times": times, "speedup": statistics.median(speedups), "speedup_min": min(speedups),
        "speedup_max": max(speedups),
        "flops": {"dense": fl["dense_total"] * args.batch * scale, "pruned": fl["pruned_total"] * args.batch * scale,
                  "views_in_model": fl_views,
                  "total_reduction": fl["total_reduction"],
                  "self_attention_reduction": fl["self_attention_reduction"],
                  "predicted_speedup": predicted,
                  "spatial_self_attention_share": fl["kinds"]["spatial_self_attention"]["dense"] / fl["dense_total"],
                  "cross_view_share": fl["kinds"]["cross_view_attention"]["dense"] / fl["dense_total"]},
        "memory": memory,
        "cross_view": cross_view,
        "module_split_s": split,
    }
    print(f"speed-up dense/pruned: median {result['speedup']:.3f} (rounds {min(speedups):.3f}..{max(speedups):.3f}); "
          f"FLOPs model: {predicted:.3f} (total -{100 * fl['total_reduction']:.1f}%)")
    if cross_view:
        print(f"speed-up dense/pruned+cross-view ({args.cross_view}): median {cross_view['speedup']:.3f}; FLOPs model: "
              f"{cross_view['predicted_speedup']:.3f} (total -{100 * cross_view['total_reduction']:.1f}%)")
    if memory:
        d, p = memory["dense"]["step_peak"], memory["pruned"]["step_peak"]
        print(f"step peak memory: dense {d / 2**20:.0f} MiB, pruned {p / 2**20:.0f} MiB ({p / d:.3f})")
    tag = args.tag or ("cuda" if device.type == "cuda" else "cpu")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"e2e_{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, f"e2e_{tag}.md"), "w") as f:
        f.write(to_markdown(result))
    print(f"wrote {args.out}/e2e_{tag}.json and .md")
    return result




def parse_list(text: str, name: str, conv) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{name}: give at least one value, got {text!r}")
    return [conv(t, name) for t in items]


def parse_ratio(text: str, name: str) -> float:
    try:
        return check_ratio(float(text), name=f"{name} value")
    except ValueError as e:
        raise ValueError(f"{e} (in {name})") from None


def parse_resolution(text: str, name: str) -> str:
    parse_hw(text, f"{name} value")
    return text


def host_spec(args, cfg):
    """The FLOPs model's spec of the built-in host as built here; cross-view "concat": the built-in host has one
    softmax over both neighbours."""
    return replace(PRESETS["magicdrive-v2-xl"], hidden=cfg.hidden, depth=cfg.depth, control_depth=cfg.control_depth,
                   num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, in_channels=cfg.in_channels,
                   out_channels=cfg.in_channels, cond_tokens=args.cond_tokens + 1, caption_channels=cfg.cond_dim,
                   views=args.views, cross_view_mode="concat")


def scope_flops(args, cfg, hw, mode: str, ratio: float) -> dict:
    """FLOPs model for one mode of the scope comparison (views < 3 evaluated at 3 and scaled, as in ``main``)."""
    fl_views = max(args.views, 3)
    kw = {"scope": "block" if mode in ("block", CACHE_MODE) else "attention",
          "cross_view": scope_cross_view(args) if mode == "attention" else "off"}
    if mode == "attention":
        kw["cross_view_select"] = args.cross_view_select
    fl = count_flops(host_spec(args, cfg), hw_tokens=hw, latent_frames=args.latent_frames, views=fl_views,
                     ratios=None if mode == "dense" else [ratio] * (cfg.depth + cfg.control_depth), stride=3, **kw)
    scale = args.batch * args.views / fl_views
    return {"dense": fl["dense_total"] * scale, "pruned": fl["pruned_total"] * scale,
            "total_reduction": fl["total_reduction"], "time_ratio": fl["pruned_total"] / fl["dense_total"],
            "speedup": fl["dense_total"] / fl["pruned_total"], "views_in_model": fl_views}


def scope_main(args, raw) -> dict:
    """``--scope block``: dense, attention scope (with ``--cross-view``) and block scope at every ratio, interleaved
    (one step of each per round, in an order shuffled per round, seeded); per resolution, one model."""
    device, dtype = torch.device(args.device), resolve_dtype(args)
    model, cfg = build_model(args, device, dtype)
    n_blocks = cfg.depth + cfg.control_depth
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cross_view = scope_cross_view(args)
    variants = [("dense", None)] + [(mode, r) for r in args.ratio_list for mode in scope_modes(args)]
    label = {"dense": "dense", "attention": f"attention scope (cross-view {cross_view})", "block": "block scope",
             CACHE_MODE: "block scope + step cache"}
    result = {
        "meta": {
            **machine_meta(device, dtype, args, cfg),
            "resolutions": args.resolution_list, "ratios": args.ratio_list, "views": args.views,
            "latent_frames": args.latent_frames, "batch": args.batch, "cond_tokens": args.cond_tokens + 1,
            "pad_sp": args.pad_sp, "cross_view": cross_view, "cross_view_select": args.cross_view_select,
            "modes": {m: label[m] for m in ("dense", *scope_modes(args))}, "phase": "main",
            "warmup": args.warmup, "repeats": args.repeats, "order": "shuffled per round (seed 0)",
            "command": command_line(raw), "note": args.note,
        },
        "rows": [], "memory": {}, "module_split_s": {},
    }
    print(f"host {args.preset}: width {cfg.hidden}, {cfg.depth}+{cfg.control_depth} spatial and temporal blocks, "
          f"{args.views} views x {args.latent_frames} latent frames x batch {args.batch}, {dtype}; modes dense, "
          f"{label['attention']}, block scope at ratios {args.ratio_list}", flush=True)
    tag = args.tag or f"block_scope_{'cuda' if device.type == 'cuda' else 'cpu'}"
    rng = random.Random(0)
    on_cuda = device.type == "cuda"
    # the split adds up CPU time on CPU (the machine may be shared: waiting for a core is not the module's cost)
    clock = time.perf_counter if on_cuda else time.process_time
    result["meta"]["module_split_clock"] = "wall" if on_cuda else "process CPU time"
    for resolution in args.resolution_list:
        inputs = make_inputs(args, cfg, resolution, device, dtype)
        H, W = model.token_grid(inputs["x"])
        print(f"{resolution}: token grid {H}x{W}", flush=True)
        times = {v: [] for v in variants}
        cpu_times = {v: [] for v in variants}  # CPU only: this process's CPU time (user + system) of the step
        split = {v: {} for v in variants}
        for i in range(args.warmup + args.repeats):
            order = list(variants)
            rng.shuffle(order)
            for v in order:
                mode, ratio = v
                if mode != "dense":
                    start_step(model, scope_prune_cfg(args, mode, ratio, n_blocks), inputs)
                measured = i >= args.warmup
                handles = time_modules(model, sync, split[v], clock) if measured and not args.no_split else []
                sync()
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    model(**inputs)
                sync()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                for h in handles:
                    h.remove()
                cv.remove(model)
                if measured:
                    times[v].append(dt)
                    cpu_times[v].append(dc)
                name = mode if ratio is None else f"{mode} r={ratio}"
                print(f"  round {i}{' (warm-up)' if not measured else ''} {name}: {dt:.2f} s"
                      + ("" if on_cuda else f" (CPU time {dc:.2f} s)"), flush=True)
        for mode, ratio in variants:
            v = (mode, ratio)
            row = {"resolution": resolution, "tokens": [H, W], "mode": mode, "ratio": ratio, "label": label[mode]}
            row.update(ratio_stats(times[v], times[("dense", None)]))
            if not on_cuda:
                row.update({f"cpu_{k}": x for k, x in ratio_stats(cpu_times[v], cpu_times[("dense", None)]).items()})
            row["flops"] = scope_flops(args, cfg, (H, W), mode, ratio)
            result["rows"].append(row)
        if not args.no_split:
            result["module_split_s"][resolution] = {}
            for v in variants:
                total = sum((cpu_times if clock is time.process_time else times)[v])
                per = {k: x / args.repeats for k, x in split[v].items()}
                per["other"] = max(0.0, total / args.repeats - sum(per.values()))
                result["module_split_s"][resolution][variant_key(*v)] = per
        if not args.no_memory:
            result["memory"][resolution] = scope_memory(args, raw, model, inputs, n_blocks, variants, resolution)
        for row in result["rows"]:
            if row["resolution"] == resolution and row["mode"] != "dense":
                print(f"  {resolution} {row['label']} r={row['ratio']}: time/dense {row['time_ratio']:.3f}, speed-up "
                      f"{row['speedup']:.3f} (FLOPs model {row['flops']['speedup']:.3f}, total "
                      f"-{100 * row['flops']['total_reduction']:.1f}%)", flush=True)
        write_outputs(args.out, tag, result, scope_markdown(result))  # after each resolution: a timeout keeps it
    return result


def ratio_stats(t: list, dense: list) -> dict:
    """Median step time and the median / min / max of the per-round ratios against that round's dense step."""
    ratios = [m / d for m, d in zip(t, dense)]
    return {"time_s": statistics.median(t), "times": t, "time_ratio": statistics.median(ratios),
            "time_ratio_min": min(ratios), "time_ratio_max": max(ratios),
            "speedup": statistics.median([d / m for m, d in zip(t, dense)])}


def variant_key(mode: str, ratio) -> str:
    return mode if ratio is None else f"{mode}@{ratio:g}"


def scope_memory(args, raw, model, inputs, n_blocks, variants, resolution) -> dict:
    """Step peak memory per variant (bytes): in process on CUDA, one fresh worker per variant on CPU."""
    res = {}
    for mode, ratio in variants:
        key = variant_key(mode, ratio)
        if model is not None and next(model.parameters()).device.type == "cuda":
            cfg = None if mode == "dense" else scope_prune_cfg(args, mode, ratio, n_blocks)
            res[key] = step_memory_cuda(model, inputs, cfg)
        else:
            extra = ["--resolution", resolution] + ([] if ratio is None else ["--ratio", repr(ratio)])
            res[key] = memory_cpu(raw, mode, extra)
    return res


def write_outputs(out_dir: str, tag: str, result: dict, markdown: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"e2e_{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, f"e2e_{tag}.md"), "w") as f:
        f.write(markdown)
    print(f"wrote {out_dir}/e2e_{tag}.json and .md", flush=True)


def scope_markdown(r: dict) -> str:
    m = r["meta"]
    out = [f"# One denoising step: dense, attention scope and block scope ({m['device']})", "",
           f"Host `{m['preset']}` (width {m['hidden']}, {m['heads']} heads, {m['depth']}+{m['control_depth']} "
           f"spatial and as many temporal blocks), {m['views']} views x {m['latent_frames']} latent frames x batch "
           f"{m['batch']}, {m['cond_tokens']} condition tokens, {m['dtype']}, token rows padded to a multiple of "
           f"{m['pad_sp']}, uniform plans, main phase. Attention scope prunes the spatial self-attention and the "
           f"cross-view attention (`cross_view={m['cross_view']}`); block scope runs each prunable spatial block on "
           f"its retained tokens. Every round runs each variant once, {m['order']}; {m['repeats']} rounds after "
           f"{m['warmup']} warm-up. time/dense and speed-up (dense/mode) are medians of the per-round ratios "
           f"(below 1 = faster); on CPU also in this process's CPU time (user + system), which a shared machine "
           f"disturbs less than wall time. FLOPs model: `coredit_video.flops.count_flops` for this host and these "
           f"shapes. torch {m['torch']}.", "", f"Command: `{m['command']}`", ""]
    if m.get("note"):
        out += [m["note"], ""]
    for res in m["resolutions"]:
        rows = [x for x in r["rows"] if x["resolution"] == res]
        if not rows:
            continue
        H, W = rows[0]["tokens"]
        cpu = "cpu_time_s" in rows[0]
        out += [f"## {res} ({H}x{W} tokens per view-frame)", "",
                "| mode | r | step (s) | time / dense | speed-up | rounds (time / dense) | "
                + ("CPU time (s) | CPU time / dense | CPU-time speed-up | rounds (CPU time / dense) | " if cpu else "")
                + "FLOPs model: time / dense | FLOPs model: speed-up | FLOPs saved |",
                "|---|---|---|---|---|---|" + ("---|---|---|---|" if cpu else "") + "---|---|---|"]
        for x in rows:
            fl = x["flops"]
            ratio = "-" if x["ratio"] is None else f"{x['ratio']:g}"
            cells = [x["label"], ratio]
            for p in ("", "cpu_") if cpu else ("",):
                cells += [f"{x[p + 'time_s']:.2f}", f"{x[p + 'time_ratio']:.3f}", f"**{x[p + 'speedup']:.3f}**",
                          f"{x[p + 'time_ratio_min']:.3f} .. {x[p + 'time_ratio_max']:.3f}"]
            cells += [f"{fl['time_ratio']:.3f}", f"{fl['speedup']:.3f}", f"{100 * fl['total_reduction']:.1f}%"]
            out.append("| " + " | ".join(cells) + " |")
        mem = r["memory"].get(res)
        if mem:
            d = mem["dense"]["step_peak"]
            out += ["", "Step peak memory (MiB; CUDA: allocated, CPU: resident size of a fresh worker above its "
                    "pre-step level): " + ", ".join(f"{k} {v['step_peak'] / 2**20:.0f} ({v['step_peak'] / d:.2f})"
                                                    for k, v in mem.items()) + "."]
        split = r["module_split_s"].get(res)
        if split:
            kinds = list(next(iter(split.values())))
            out += ["", f"Time per module kind ({m.get('module_split_clock', 'wall')}, s per step, mean of the "
                    "measured rounds; in block scope the block's modules run on the retained tokens, the selection "
                    "and residual rebuild fall in other):",
                    "", "| kind | " + " | ".join(split) + " |", "|---|" + "---|" * len(split)]
            out += [f"| {k} | " + " | ".join(f"{split[v].get(k, 0.0):.2f}" for v in split) + " |" for k in kinds]
        out.append("")
    return "\n".join(out)


def to_markdown(r: dict) -> str:
    m, fl, mem = r["meta"], r["flops"], r["memory"]
    out = [f"# One denoising step, dense vs CoReDiT pruned ({m['device']})", "",
           f"Host `{m['preset']}` (width {m['hidden']}, {m['heads']} heads, {m['depth']}+{m['control_depth']} "
           f"spatial and as many temporal blocks), {m['resolution']} -> token grid {m['tokens'][0]}x{m['tokens'][1]}, "
           f"{m['views']} views x {m['latent_frames']} latent frames x batch {m['batch']}, {m['cond_tokens']} "
           f"condition tokens, {m['dtype']}, uniform plan of mean ratio {m['plan_mean']:.2f} (main phase). "
           f"Median of {m['repeats']} interleaved rounds after {m['warmup']} warm-up. torch {m['torch']}.", "",
           f"Command: `{m['command']}`", ""]
    if m.get("note"):
        out += [m["note"], ""]
    out += ["| | dense | pruned | pruned/dense |", "|---|---|---|---|",
            f"| step time (s) | {r['dense_s']:.2f} | {r['pruned_s']:.2f} | {r['pruned_s'] / r['dense_s']:.3f} |",
            f"| FLOPs (model) | {fl['dense']:.3e} | {fl['pruned']:.3e} | {fl['pruned'] / fl['dense']:.3f} |"]
    if mem:
        d, p = mem["dense"]["step_peak"], mem["pruned"]["step_peak"]
        out.append(f"| step peak memory (MiB) | {d / 2**20:.0f} | {p / 2**20:.0f} | {p / d:.3f} |")
    out += ["", f"Measured speed-up (dense/pruned, median of per-round ratios): **{r['speedup']:.3f}** "
            f"(rounds {r['speedup_min']:.3f} .. {r['speedup_max']:.3f}). FLOPs model prediction if time followed "
            f"FLOPs: **{fl['predicted_speedup']:.3f}** (total -{100 * fl['total_reduction']:.1f}%, spatial "
            f"self-attention -{100 * fl['self_attention_reduction']:.1f}%, which is "
            f"{100 * fl['spatial_self_attention_share']:.1f}% of the dense FLOPs)."]
    cvr = r.get("cross_view")
    if cvr:
        out += ["", f"With cross-view pruning too (`cross_view={cvr['mode']}`, retained set: `{cvr['select']}`):", "",
                "| | dense | pruned + cross-view | ratio |", "|---|---|---|---|",
                f"| step time (s) | {r['dense_s']:.2f} | {cvr['pruned_s']:.2f} | "
                f"{cvr['pruned_s'] / r['dense_s']:.3f} |",
                f"| FLOPs (model) | {fl['dense']:.3e} | {cvr['flops_pruned']:.3e} | "
                f"{cvr['flops_pruned'] / fl['dense']:.3f} |"]
        if mem and "pruned_cv" in mem:
            p2 = mem["pruned_cv"]["step_peak"]
            out.append(f"| step peak memory (MiB) | {mem['dense']['step_peak'] / 2**20:.0f} | {p2 / 2**20:.0f} | "
                       f"{p2 / mem['dense']['step_peak']:.3f} |")
        out += ["", f"Measured speed-up with cross-view pruning: **{cvr['speedup']:.3f}** (rounds "
                f"{cvr['speedup_min']:.3f} .. {cvr['speedup_max']:.3f}); FLOPs model: "
                f"**{cvr['predicted_speedup']:.3f}** "
                f"(total -{100 * cvr['total_reduction']:.1f}%, cross-view -{100 * cvr['cross_view_reduction']:.1f}%)."]
    split = r.get("module_split_s")
    if split:
        kinds = list(next(iter(split.values())))
        out += ["", "Time per module kind (s per step, mean of the measured rounds):", "",
                "| kind | " + " | ".join(split) + " |", "|---|" + "---|" * len(split)]
        out += [f"| {k} | " + " | ".join(f"{split[v].get(k, 0.0):.2f}" for v in split) + " |" for k in kinds]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    run_cli(main)
