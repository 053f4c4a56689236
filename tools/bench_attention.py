#!/usr/bin/env python
"""Wall-clock time of one spatial self-attention at MagicDrive-V2 shapes: dense, each token-reduction method, ideal.

* dense: the host attention module (qkv, q/k norm, SDPA, proj) on all ``N`` tokens of every view-frame;
* each method of ``--methods`` (default: coredit, coredit_copy, coredit_sharp, coredit_merge, coredit_kv, tome,
  todo): the whole reduced call :func:`coredit_video.attention.pruned_self_attention` ``(..., method=NAME)``,
  scoring / matching, selection, gather, attention, reconstruction (or unmerge), as paid;
* ideal: the same dense module on the ``N - K`` retained tokens only (pre-gathered; no scoring, no
  selection, no reconstruction): the best any pruning path can do at that ratio. ``coredit_kv`` and ``todo``
  keep every query (they drop or pool keys / values only), so for them the ideal is a bound they cannot reach.

Shapes: pixels / 8 (VAE) / 2 (patch), token rows padded to a multiple of the SP size as MagicDrive-V2
does (``--pad-sp 8``: 848x1600 -> 53x100 -> 56x100; ``--pad-sp 1``: unpadded), ``F = batch x views x latent
frames`` view-frames per call, batch from MagicDrive-V2's ``bucket_config`` (17-frame buckets: 224x400 -> 10,
424x800 -> 6, 848x1600 -> 2; 17 frames -> 5 latent frames), width 1152, 16 heads. bf16 on CUDA, fp32 on CPU.

Timing: warm-up rounds, then ``--repeats`` rounds; each round runs every variant once (dense, every method
and the ideal at every ratio), in an order shuffled per round (seeded), synchronising around each call, so
drift of a shared machine hits all variants alike. Forward runs under ``no_grad``; forward+backward runs
``out.sum().backward()`` into the input and the attention weights. Reported per (resolution, ratio, method,
pass): the median time ``time_s``, ``time_ratio`` = method / dense and ``over_ideal`` = method / ideal, each the
median over rounds of the per-round ratio (robust where absolute times drift; ``time_ratio`` below 1 is
cheaper than dense). ``pruned_s`` / ``pruned_over_dense`` / ``pruned_over_ideal`` are the same numbers under
their older names. The overhead split (forward, eager, ``coredit`` only) times each stage of the pruned path
alone: scoring, selection, gather, reconstruction.

    python tools/bench_attention.py                                   # GPU: full MagicDrive-V2 shapes
    python tools/bench_attention.py --device cpu --batch 1 --views 1 --latent-frames 1   # CPU, small F
    python tools/bench_attention.py --methods coredit,tome --ratios 0.2,0.4 --json out.json

Writes ``docs/benchmarks/attention_<tag>.{json,md}`` (rewritten after each resolution, so a run cut short
keeps what it finished) and, with ``--json PATH``, the same JSON to ``PATH``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

try:  # absent before the kernels existed (lets this tool time an older checkout of the ops)
    from coredit_video import kernels  # noqa: E402
except ImportError:  # pragma: no cover
    class kernels:  # noqa: N801
        HAS_TRITON = False

        @staticmethod
        def get_mode():
            return "none"

        @staticmethod
        def set_mode(mode):
            return mode
from coredit_video.cli import fail  # noqa: E402
from coredit_video.attention import BlockLayout, dense_self_attention, pruned_self_attention  # noqa: E402
from coredit_video.embedded.host.layers import Attention  # noqa: E402
from coredit_video.flops import tokens_for_resolution  # noqa: E402
from coredit_video.methods import build_method, gather_tokens, method_names  # noqa: E402
from coredit_video.ops import band_budgets, reconstruct, select_tokens, spatial_coherence  # noqa: E402

# MagicDrive-V2 stage-3 bucket_config, 17-frame buckets ("H-W-fps-frames": batch per data-parallel rank)
BUCKET_BATCH = {"224x400": 10, "424x800": 6, "848x1600": 2}
DEFAULT_GRIDS = {0: ((8, 8), (4, 4)), 1: ((6, 6), (3, 3))}  # the default config's grids, block l % 2
DEFAULT_METHODS = "coredit,coredit_copy,coredit_sharp,coredit_merge,coredit_kv,tome,todo"
DEFAULT_RATIOS = "0.1,0.2,0.26,0.3,0.4,0.45,0.5,0.6"
MAX_RATIO = 0.7  # ToMe merges only non-destination tokens (3/4 of a frame); CoReDiT keeps the m-stride pattern


def parse_list(text: str, cast=str) -> list:
    return [cast(v) for v in text.split(",") if v.strip()]


def parse_frames(text: str) -> dict:
    out = {}
    for item in parse_list(text):
        res, _, n = item.partition(":")
        out[res.strip()] = int(n)
    return out




def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores visible, " \
           f"{torch.get_num_threads()} torch threads)"


class Timer:
    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def rounds(timer: Timer, fns: Dict[str, Callable], warmup: int, repeats: int, seed: int = 0,
           progress: Optional[str] = None) -> Dict[str, List[float]]:
    """Interleaved timing: every round calls every function once, in an order shuffled per round (seeded)."""
    for _ in range(warmup):
        for fn in fns.values():
            timer(fn)
    times = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(repeats):
        rng.shuffle(order)
        for k in order:
            times[k].append(timer(fns[k]))
        if progress:
            print(f"  [{progress}] round {i + 1}/{repeats} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return times


def median_ratio(a: List[float], b: List[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def make_pass(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, backward: bool, params) -> Callable:
    """Forward under ``no_grad``, or forward + ``out.sum().backward()`` into ``x`` and the weights."""
    if not backward:
        def run():
            with torch.no_grad():
                return fn(x)
        return run
    xg = x.detach().requires_grad_(True)

    def run_bwd():
        for p in params:
            p.grad = None
        xg.grad = None
        fn(xg).sum().backward()
    return run_bwd


def reduced_attention(attn, hw, ratio, layout, bands, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(t: torch.Tensor) -> torch.Tensor:
        return pruned_self_attention(attn, t, hw, ratio, layout, bands, method=method).out
    return call


def variant_key(method: str, r: float, km: str = "auto") -> str:
    return f"{method}@{r}" + ("" if km == "auto" else f"[{km}]")


def bench_resolution(args, res: str, device, dtype, timer, attn) -> List[dict]:
    H, W = tokens_for_resolution("magicdrive-v2-xl", res, args.pad_sp, pad_h_to_bands=args.pad_sp > 1)
    N, C = H * W, args.hidden
    B = args.batch if args.batch else BUCKET_BATCH.get(res, 1)
    Fr = B * args.views * args.latent_frames
    if res in args.frames_per_call:  # explicit view-frames per call (small CPU runs)
        Fr = B = args.frames_per_call[res]
    grid, sub = DEFAULT_GRIDS[args.block % 2]
    layout = BlockLayout(args.block, grid, sub, args.stride)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(Fr, N, C, generator=g).to(device=device, dtype=dtype)
    params = list(attn.parameters())
    ratios, methods = args.ratios, args.methods
    rows = []
    passes = [p for p in ("fwd", "fwd+bwd") if p in args.passes]
    modes = ["eager"] + (["compiled"] if args.compile else [])
    with torch.no_grad():
        sc = spatial_coherence(x, (H, W), layout.grid, args.bands)
    keeps = {}
    for r in ratios:
        with torch.no_grad():
            keep, skip = select_tokens(sc, (H, W), r, layout.stride, layout.ordinal, args.bands)
        keeps[r] = (keep, skip, gather_tokens(x, keep).contiguous())
    explicit = res in args.frames_per_call
    meta_shape = dict(resolution=res, tokens=[H, W], N=N, frames_per_call=Fr, batch=None if explicit else B,
                      views=None if explicit else args.views, latent_frames=None if explicit else args.latent_frames)
    how = ("set by --frames-per-call" if explicit
           else f"batch {B} x {args.views} views x {args.latent_frames} latent frames")
    print(f"\n== {res}: token grid {H}x{W} (N={N}), F={Fr} view-frames ({how}), C={C}, {dtype}, "
          f"methods {','.join(methods)}", flush=True)
    for mode in modes:
        for pas in passes:
            backward = pas == "fwd+bwd"
            fns: Dict[str, Callable] = {}
            # the Triton kernels serve eager forward calls only (autograd and inductor take the torch path);
            # they score (and rebuild), so only the methods that use the scores get a torch-kernel twin
            triton_here = device.type == "cuda" and kernels.HAS_TRITON and mode == "eager" and not backward

            def kernel_modes(method: str, triton_here=triton_here) -> List[str]:
                return ["auto", "torch"] if triton_here and build_method(method).uses_scores else ["auto"]

            def wrap(f, fullgraph=True, mode=mode):
                if mode == "compiled":
                    return torch.compile(f, fullgraph=fullgraph, dynamic=False)
                return f

            fns["dense"] = make_pass(wrap(lambda t: dense_self_attention(attn, t)), x, backward, params)
            for r in ratios:
                for method in methods:
                    # only CoReDiT's path is checked to trace without a graph break (tests/test_compile.py)
                    fm = wrap(reduced_attention(attn, (H, W), r, layout, args.bands, method), method == "coredit")
                    for km in kernel_modes(method):
                        fp = make_pass(fm, x, backward, params)
                        fns[variant_key(method, r, km)] = fp if km == "auto" else with_kernel_mode(km, fp)
                fns[f"ideal@{r}"] = make_pass(wrap(lambda t: dense_self_attention(attn, t)), keeps[r][2], backward,
                                              params)
            t0 = time.perf_counter()
            times = rounds(timer, fns, args.warmup, args.repeats, progress=f"{res} {mode} {pas}, {len(fns)} variants")
            wall = time.perf_counter() - t0
            dense = times["dense"]
            for r in ratios:
                K = sum(band_budgets((H, W), r, layout.stride, layout.ordinal, args.bands))
                idl = times[f"ideal@{r}"]
                for method in methods:
                    for km in kernel_modes(method):
                        pr = times[variant_key(method, r, km)]
                        t, over_dense, over_ideal = statistics.median(pr), median_ratio(pr, dense), median_ratio(
                            pr, idl)
                        if len(kernel_modes(method)) > 1:
                            km_label = "triton" if km == "auto" else "torch"
                        else:
                            km_label = "inductor" if mode == "compiled" else "torch"
                        row = dict(meta_shape, ratio=r, method=method, skipped=K, kept=N - K, pass_=pas, mode=mode,
                                   kernels=km_label, kernel_mode=km, time_s=t, time_ratio=over_dense,
                                   over_ideal=over_ideal,
                                   dense_s=statistics.median(dense), pruned_s=t, ideal_s=statistics.median(idl),
                                   pruned_over_ideal=over_ideal, pruned_over_dense=over_dense,
                                   ideal_over_dense=median_ratio(idl, dense), rounds=len(dense))
                        rows.append(row)
                        print(f"  {mode:8s} {pas:7s} r={r:.2f} K={K:5d} {method:13s} {row['kernels']:8s} "
                              f"dense {row['dense_s']*1e3:9.2f} ms  time {t*1e3:9.2f} ms  "
                              f"ideal {row['ideal_s']*1e3:9.2f} ms  /dense {over_dense:.3f}  /ideal {over_ideal:.3f}",
                              flush=True)
            print(f"  ({mode} {pas}: {wall:.0f} s incl. warm-up/compile)", flush=True)
    if not args.no_split and "coredit" in methods:
        rows += overhead_split(args, x, (H, W), layout, attn, keeps, timer, meta_shape, device)
    return rows


def kernel_label(km: str, device) -> str:
    if km == "torch" or device.type != "cuda":
        return "torch"
    return "triton" if kernels.HAS_TRITON else "torch"


def with_kernel_mode(mode: str, fn: Callable) -> Callable:
    def run():
        prev = kernels.set_mode(mode)
        try:
            return fn()
        finally:
            kernels.set_mode(prev)
    return run


def overhead_split(args, x, hw, layout, attn, keeps, timer, meta_shape, device) -> List[dict]:
    rows = []
    kernel_modes = ["auto"] + (["torch"] if device.type == "cuda" and kernels.HAS_TRITON else [])
    for r, (keep, skip, x_keep) in keeps.items():
        for km in kernel_modes:
            prev = kernels.set_mode(km)
            try:
                with torch.no_grad():
                    fns = stage_fns(attn, x, hw, r, layout, args.bands, keep, skip, x_keep)
                    times = rounds(timer, fns, args.warmup, args.repeats)
            finally:
                kernels.set_mode(prev)
            ideal = times["attention (ideal)"]
            split = {k: median_ratio(v, ideal) for k, v in times.items()}
            stages = ("scoring", "selection", "gather", "reconstruction")
            split["stages (sum)"] = sum(split[s] for s in stages)
            split["other (python, allocation)"] = split["pruned"] - 1.0 - split["stages (sum)"]
            row = dict(meta_shape, ratio=r, method="coredit", pass_="fwd", mode="eager",
                       kernels=kernel_label(km, device), split_over_ideal=split,
                       split_s={k: statistics.median(v) for k, v in times.items()})
            rows.append(row)
            print(f"  split r={r:.2f} [{row['kernels']}] (fraction of ideal): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in split.items()), flush=True)
    return rows


def stage_fns(attn, x, hw, r, layout, bands, keep, skip, x_keep) -> Dict[str, Callable]:
    """The pruned call (CoReDiT) and each of its stages alone, on precomputed inputs."""
    sc = spatial_coherence(x, hw, layout.grid, bands)
    y_keep = dense_self_attention(attn, x_keep)
    return {
        "pruned": lambda: pruned_self_attention(attn, x, hw, r, layout, bands, method="coredit").out,
        "scoring": lambda: spatial_coherence(x, hw, layout.grid, bands),
        "selection": lambda: select_tokens(sc, hw, r, layout.stride, layout.ordinal, bands),
        "gather": lambda: gather_tokens(x, keep),
        "attention (ideal)": lambda: dense_self_attention(attn, x_keep),
        "reconstruction": lambda: reconstruct(y_keep, keep, skip, sc, hw, layout.grid, layout.subgrid, bands),
    }


def method_tables(rows: List[dict]) -> List[str]:
    """Per (resolution, pass, mode): a method x ratio table of ``time/dense · time/ideal``."""
    timed = [r for r in rows if "pruned_over_dense" in r]
    out: List[str] = []
    groups: Dict[tuple, List[dict]] = {}
    for r in timed:
        groups.setdefault((r["resolution"], r["pass_"], r["mode"]), []).append(r)

    def label(r: dict) -> str:
        m = r.get("method", "coredit")
        return m if r.get("kernel_mode", "auto") == "auto" else f"{m} [{r['kernel_mode']} kernels]"

    for (res, pas, mode), rs in groups.items():
        ratios = sorted({r["ratio"] for r in rs})
        labels = list(dict.fromkeys(label(r) for r in rs))
        cell = {(label(r), r["ratio"]): r for r in rs}
        tok = rs[0]["tokens"]
        out += ["", f"{res} ({tok[0]}x{tok[1]} tokens, F = {rs[0]['frames_per_call']}), {pas}, {mode}: "
                "time over dense · time over ideal (medians of per-round ratios; dense "
                f"{rs[0]['dense_s']*1e3:.1f} ms).", "",
                "| method | " + " | ".join(f"r = {v:g}" for v in ratios) + " |",
                "|---|" + "---|" * len(ratios)]
        for m in labels:
            cells = []
            for v in ratios:
                r = cell.get((m, v))
                cells.append("" if r is None else f"{r['pruned_over_dense']:.3f} · {r['pruned_over_ideal']:.3f}")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("| ideal | " + " | ".join(
            f"{next(r['ideal_over_dense'] for r in rs if r['ratio'] == v):.3f} · 1" for v in ratios) + " |")
    return out


def to_markdown(meta: dict, rows: List[dict]) -> str:
    out = [f"# Spatial self-attention: dense vs token reduction vs ideal ({meta['device_tag']})", ""]
    out.append(f"Device: {meta['device']}. dtype {meta['dtype']}, width {meta['hidden']}, {meta['heads']} heads, "
               f"bands {meta['bands']}, block layout l={meta['block']} grid {meta['grid']} sub-grid "
               f"{meta['subgrid']} m={meta['stride']}. Median of {meta['repeats']} interleaved rounds (order "
               f"shuffled per round) after {meta['warmup']} warm-up; ratios are medians of per-round ratios within "
               f"this run. torch {meta['torch']}, triton {'yes' if meta['triton'] else 'not installed'}.")
    out += ["", f"Command: `{meta['command']}`", ""]
    if meta.get("note"):
        out += [meta["note"], ""]
    out.append("Each method's whole reduced call (scoring / matching through reconstruction) against dense "
               "attention on all tokens and the ideal (dense attention on the `N - K` retained tokens only).")
    out += method_tables(rows)
    out += ["", "All rows:", "",
            "| resolution | tokens | F | pass | mode | kernels | r | method | kept | dense (ms) | method (ms) "
            "| ideal (ms) | method/ideal | method/dense | ideal/dense |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "dense_s" not in r:
            continue
        out.append(f"| {r['resolution']} | {r['tokens'][0]}x{r['tokens'][1]} | {r['frames_per_call']} | {r['pass_']} "
                   f"| {r['mode']} | {r['kernels']} | {r['ratio']:.2f} | {r.get('method', 'coredit')} | {r['kept']} "
                   f"| {r['dense_s']*1e3:.1f} | {r['pruned_s']*1e3:.1f} | {r['ideal_s']*1e3:.1f} "
                   f"| **{r['pruned_over_ideal']:.3f}** | {r['pruned_over_dense']:.3f} | {r['ideal_over_dense']:.3f} |")
    splits = [r for r in rows if "split_over_ideal" in r]
    stages = ("scoring", "selection", "gather", "reconstruction")
    for r in splits:
        r["split_over_ideal"].setdefault("stages (sum)", sum(r["split_over_ideal"][s] for s in stages))
    if splits:
        keys = list(splits[0]["split_over_ideal"])
        out += ["", "Overhead split of `coredit`, forward, eager: each stage timed alone, as a fraction of the ideal "
                "time (`pruned` = the whole pruned call; `stages (sum)` = scoring + selection + gather + "
                "reconstruction, the overhead the pruned path adds; `other` = pruned - 1 - stages, the rest, "
                "which on a shared machine is mostly timing noise of the whole call).", "",
                "| resolution | r | kernels | " + " | ".join(keys) + " |",
                "|---|---|---|" + "---|" * len(keys)]
        for r in splits:
            out.append(f"| {r['resolution']} | {r['ratio']:.2f} | {r['kernels']} | "
                       + " | ".join(f"{r['split_over_ideal'][k]:.3f}" for k in keys) + " |")
    return "\n".join(out) + "\n"


def write_report(result: dict, out_dir: str, tag: str, json_path: Optional[str] = None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"attention_{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    if json_path:
        if os.path.dirname(json_path):
            os.makedirs(os.path.dirname(json_path), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    rows = [{("pass_" if k == "pass" else k): v for k, v in r.items()} for r in result["rows"]]
    with open(os.path.join(out_dir, f"attention_{tag}.md"), "w") as f:
        f.write(to_markdown(result["meta"], rows))


def command_line(argv) -> str:
    from bench_util import command_line as _command_line

    return _command_line("bench_attention.py", argv)


def check_args(args) -> None:
    known = method_names()
    bad = [m for m in args.methods if m not in known]
    if bad or not args.methods:
        fail(f"--methods {','.join(args.methods)}: unknown method {bad[0] if bad else '(none given)'!r}; choose from "
             f"{','.join(known)}, e.g. --methods {DEFAULT_METHODS}")
    off = [r for r in args.ratios if not (0 < r <= MAX_RATIO and math.isfinite(r))]
    if off or not args.ratios:
        fail(f"--ratios: each ratio must lie in (0, {MAX_RATIO}] (ToMe merges at most the 3/4 non-destination "
             f"tokens), got {off[0] if off else '(none given)'}; e.g. --ratios 0.2,0.4,0.6")
    bad_res = [r for r in args.resolutions if len(r.split("x")) != 2 or not all(v.isdigit() for v in r.split("x"))]
    if bad_res:
        fail(f"--resolutions {bad_res[0]!r}: give pixel sizes HxW, e.g. --resolutions 848x1600,424x800")
    bad_pass = [p for p in args.passes if p not in ("fwd", "fwd+bwd")]
    if bad_pass or not args.passes:
        fail(f"--passes {','.join(args.passes)}: use fwd, fwd+bwd or both, e.g. --passes fwd,fwd+bwd")
    if args.hidden % args.heads:
        fail(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}, e.g. --hidden 64 --heads 4")


def main(argv=None) -> dict:
    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resolutions", default="224x400,424x800,848x1600", type=lambda s: parse_list(s))
    ap.add_argument("--methods", default=DEFAULT_METHODS, type=lambda s: parse_list(s),
                    help=f"token-reduction methods to time, comma-separated (default %(default)s; any of "
                         f"{','.join(method_names())})")
    ap.add_argument("--ratios", default=DEFAULT_RATIOS, type=lambda s: parse_list(s, float),
                    help=f"reduction ratios r (default %(default)s; each in (0, {MAX_RATIO}])")
    ap.add_argument("--batch", type=int, default=0, help="samples per call (default: MagicDrive-V2 bucket_config)")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--latent-frames", type=int, default=5, help="latent frames (17 video frames -> 5)")
    ap.add_argument("--frames-per-call", default={}, type=parse_frames,
                    help="RES:F,... view-frames per call for some resolutions, overriding batch x views x frames")
    ap.add_argument("--pad-sp", type=int, default=8,
                    help="pad token rows to a multiple of this (MagicDrive-V2 SP; 1: unpadded, 848x1600 -> 53x100)")
    ap.add_argument("--bands", type=int, default=1)
    ap.add_argument("--block", type=int, default=0, help="block ordinal l (grid layout and m-stride phase)")
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1152, help="model width C (MagicDrive-V2-XL: 1152)")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--passes", default="fwd,fwd+bwd", type=lambda s: parse_list(s))
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd dense / methods / ideal")
    ap.add_argument("--no-split", action="store_true", help="skip the per-stage overhead split (coredit)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--tag", default=None, help="output name: attention_<tag>.{json,md} (default: the device)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the JSON result to PATH")
    ap.add_argument("--note", default="", help="a sentence added to the Markdown report")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)
    check_args(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    attn = Attention(args.hidden, args.heads).to(device=device, dtype=dtype).train(False)
    timer = Timer(device)
    grid, sub = DEFAULT_GRIDS[args.block % 2]
    tag = args.tag or ("cuda" if device.type == "cuda" else "cpu")
    meta = dict(device=device_name(device), device_tag=tag, dtype=str(dtype).replace("torch.", ""), hidden=args.hidden,
                heads=args.heads, bands=args.bands, block=args.block, grid=list(grid), subgrid=list(sub),
                stride=args.stride, warmup=args.warmup, repeats=args.repeats, methods=list(args.methods),
                ratios=list(args.ratios), torch=torch.__version__, triton=kernels.HAS_TRITON,
                kernel_mode=kernels.get_mode(), python=platform.python_version(),
                command=command_line(sys.argv[1:] if argv is None else argv),
                note=args.note, bucket_batch=BUCKET_BATCH)
    rows: List[dict] = []
    result: dict = {}
    for i, res in enumerate(args.resolutions):
        rows += bench_resolution(args, res, device, dtype, timer, attn)
        meta["complete"] = i + 1 == len(args.resolutions)
        result = {"meta": meta, "rows": [{("pass" if k == "pass_" else k): v for k, v in r.items()} for r in rows]}
        write_report(result, args.out, tag, args.json)  # after each resolution: a run cut short keeps its results
    print(f"\nwrote {args.out}/attention_{tag}.json and .md" + (f" and {args.json}" if args.json else ""))
    return result


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    run_cli(main)
