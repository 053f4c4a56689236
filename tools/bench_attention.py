#!/usr/bin/env python
"""Wall-clock time of one spatial self-attention at MagicDrive-V2 shapes: dense, CoReDiT pruned, and ideal.

* dense: the host attention module (qkv, q/k norm, SDPA, proj) on all ``N`` tokens of every view-frame;
* pruned: :func:`coredit_video.attention.pruned_self_attention` (score, select, gather, attend, reconstruct);
* ideal: the same dense module on the ``N - K`` retained tokens only (pre-gathered; no scoring, no
  selection, no reconstruction): the best any pruning path can do.

Shapes: pixels / 8 (VAE) / 2 (patch), token rows padded to a multiple of the SP size as MagicDrive-V2
does (``--pad-sp 8``: 848x1600 -> 53x100 -> 56x100), ``F = batch x views x latent frames`` view-frames per
call, batch from MagicDrive-V2's ``bucket_config`` (17-frame buckets: 224x400 -> 10, 424x800 -> 6,
848x1600 -> 2; 17 frames -> 5 latent frames), width 1152, 16 heads. bf16 on CUDA, fp32 on CPU.

Timing: warm-up calls, then ``--repeats`` rounds; each round runs every variant once, back to back
(dense, then pruned and ideal for each ratio), synchronising around each call. Reported: median time
per variant and the median over rounds of the per-round ratios (pruned/ideal, pruned/dense), which
are robust on a shared machine where absolute times drift. The overhead split (forward, eager) times
each stage of the pruned path alone: scoring, selection, gather, reconstruction.

    python tools/bench_attention.py                                   # GPU: full MagicDrive-V2 shapes
    python tools/bench_attention.py --device cpu --batch 1 --views 1 --latent-frames 1   # CPU, small F

Writes ``docs/benchmarks/attention_<tag>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

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
from coredit_video.attention import BlockLayout, dense_self_attention, pruned_self_attention  # noqa: E402
from coredit_video.attention.pruned import gather_tokens  # noqa: E402
from coredit_video.flops import tokens_for_resolution  # noqa: E402
from coredit_video.embedded.host.layers import Attention  # noqa: E402
from coredit_video.ops import band_budgets, reconstruct, select_tokens, spatial_coherence  # noqa: E402

# MagicDrive-V2 stage-3 bucket_config, 17-frame buckets ("H-W-fps-frames": batch per data-parallel rank)
BUCKET_BATCH = {"224x400": 10, "424x800": 6, "848x1600": 2}
DEFAULT_GRIDS = {0: ((8, 8), (4, 4)), 1: ((6, 6), (3, 3))}  # the default config's grids, block l % 2


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


def rounds(timer: Timer, fns: Dict[str, Callable], warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Interleaved timing: every round calls every function once, in order."""
    for _ in range(warmup):
        for fn in fns.values():
            timer(fn)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timer(fn))
    return times


def median_ratio(a: List[float], b: List[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def make_pass(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, backward: bool, params) -> Callable:
    if not backward:
        def run():
            with torch.no_grad():
                return fn(x)
        return run
    xg = x.detach().requires_grad_(True)
    grad_holder = {}

    def run_bwd():
        for p in params:
            p.grad = None
        xg.grad = None
        y = fn(xg)
        g = grad_holder.get("g")
        if g is None or g.shape != y.shape:
            g = grad_holder["g"] = torch.randn_like(y)
        y.backward(g)
    return run_bwd


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
    ratios = args.ratios
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
    print(f"\n== {res}: token grid {H}x{W} (N={N}), F={Fr} view-frames ({how}), C={C}, {dtype}", flush=True)
    for mode in modes:
        for pas in passes:
            backward = pas == "fwd+bwd"
            fns: Dict[str, Callable] = {}
            # the Triton kernels serve eager forward calls only (autograd and inductor take the torch path)
            triton_here = device.type == "cuda" and kernels.HAS_TRITON and mode == "eager" and not backward
            kernel_modes = ["auto", "torch"] if triton_here else ["auto"]

            def wrap(f, mode=mode):
                if mode == "compiled":
                    return torch.compile(f, fullgraph=True, dynamic=False)
                return f

            fns["dense"] = make_pass(wrap(lambda t: dense_self_attention(attn, t)), x, backward, params)
            for r in ratios:
                def pruned(t, r=r):
                    return pruned_self_attention(attn, t, (H, W), r, layout, args.bands)
                for km in kernel_modes:
                    fp = make_pass(wrap(pruned), x, backward, params)
                    if km != "auto":
                        fp = with_kernel_mode(km, fp)
                    fns[f"pruned@{r}" + ("" if km == "auto" else f"[{km}]")] = fp
                fns[f"ideal@{r}"] = make_pass(wrap(lambda t: dense_self_attention(attn, t)), keeps[r][2], backward,
                                              params)
            t0 = time.perf_counter()
            times = rounds(timer, fns, args.warmup, args.repeats)
            wall = time.perf_counter() - t0
            dense = times["dense"]
            for r in ratios:
                K = sum(band_budgets((H, W), r, layout.stride, layout.ordinal, args.bands))
                for km in kernel_modes:
                    key = f"pruned@{r}" + ("" if km == "auto" else f"[{km}]")
                    pr, idl = times[key], times[f"ideal@{r}"]
                    row = dict(meta_shape, ratio=r, skipped=K, kept=N - K, pass_=pas, mode=mode,
                               kernels=("triton" if km == "auto" else "torch") if triton_here
                               else ("inductor" if mode == "compiled" else "torch"),
                               dense_s=statistics.median(dense), pruned_s=statistics.median(pr),
                               ideal_s=statistics.median(idl),
                               pruned_over_ideal=median_ratio(pr, idl), pruned_over_dense=median_ratio(pr, dense),
                               ideal_over_dense=median_ratio(idl, dense), rounds=len(dense))
                    rows.append(row)
                    print(f"  {mode:8s} {pas:7s} r={r:.2f} K={K:5d} {row['kernels']:6s} "
                          f"dense {row['dense_s']*1e3:9.2f} ms  pruned {row['pruned_s']*1e3:9.2f} ms  "
                          f"ideal {row['ideal_s']*1e3:9.2f} ms  "
                          f"pruned/ideal {row['pruned_over_ideal']:.3f}  pruned/dense {row['pruned_over_dense']:.3f}",
                          flush=True)
            print(f"  ({mode} {pas}: {wall:.0f} s incl. warm-up/compile)", flush=True)
    if not args.no_split:
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
            row = dict(meta_shape, ratio=r, pass_="fwd", mode="eager", kernels=kernel_label(km, device),
                       split_over_ideal=split, split_s={k: statistics.median(v) for k, v in times.items()})
            rows.append(row)
            print(f"  split r={r:.2f} [{row['kernels']}] (fraction of ideal): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in split.items()), flush=True)
    return rows


def stage_fns(attn, x, hw, r, layout, bands, keep, skip, x_keep) -> Dict[str, Callable]:
    """The pruned call and each of its stages alone, on precomputed inputs."""
    sc = spatial_coherence(x, hw, layout.grid, bands)
    y_keep = dense_self_attention(attn, x_keep)
    return {
        "pruned": lambda: pruned_self_attention(attn, x, hw, r, layout, bands),
        "scoring": lambda: spatial_coherence(x, hw, layout.grid, bands),
        "selection": lambda: select_tokens(sc, hw, r, layout.stride, layout.ordinal, bands),
        "gather": lambda: gather_tokens(x, keep),
        "attention (ideal)": lambda: dense_self_attention(attn, x_keep),
        "reconstruction": lambda: reconstruct(y_keep, keep, skip, sc, hw, layout.grid, layout.subgrid, bands),
    }


def to_markdown(meta: dict, rows: List[dict]) -> str:
    out = [f"# Spatial self-attention: dense vs CoReDiT pruned vs ideal ({meta['device_tag']})", ""]
    out.append(f"Device: {meta['device']}. dtype {meta['dtype']}, width {meta['hidden']}, {meta['heads']} heads, "
               f"bands {meta['bands']}, block layout l={meta['block']} grid {meta['grid']} sub-grid "
               f"{meta['subgrid']} m={meta['stride']}. Median of {meta['repeats']} interleaved rounds after "
               f"{meta['warmup']} warm-up; ratios are medians of per-round ratios within this run. "
               f"torch {meta['torch']}, triton {'yes' if meta['triton'] else 'not installed'}.")
    out += ["", f"Command: `{meta['command']}`", ""]
    if meta.get("note"):
        out += [meta["note"], ""]
    out += ["| resolution | tokens | F | pass | mode | kernels | r | kept | dense (ms) | pruned (ms) | ideal (ms) "
            "| pruned/ideal | pruned/dense | ideal/dense |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "dense_s" not in r:
            continue
        out.append(f"| {r['resolution']} | {r['tokens'][0]}x{r['tokens'][1]} | {r['frames_per_call']} | {r['pass_']} "
                   f"| {r['mode']} | {r['kernels']} | {r['ratio']:.2f} | {r['kept']} | {r['dense_s']*1e3:.1f} "
                   f"| {r['pruned_s']*1e3:.1f} | {r['ideal_s']*1e3:.1f} | **{r['pruned_over_ideal']:.3f}** "
                   f"| {r['pruned_over_dense']:.3f} | {r['ideal_over_dense']:.3f} |")
    splits = [r for r in rows if "split_over_ideal" in r]
    stages = ("scoring", "selection", "gather", "reconstruction")
    for r in splits:
        r["split_over_ideal"].setdefault("stages (sum)", sum(r["split_over_ideal"][s] for s in stages))
    if splits:
        keys = list(splits[0]["split_over_ideal"])
        out += ["", "Overhead split, forward, eager: each stage timed alone, as a fraction of the ideal time "
                "(`pruned` = the whole pruned call; `stages (sum)` = scoring + selection + gather + "
                "reconstruction, the overhead the pruned path adds; `other` = pruned - 1 - stages, the rest, "
                "which on a shared machine is mostly timing noise of the whole call).", "",
                "| resolution | r | kernels | " + " | ".join(keys) + " |",
                "|---|---|---|" + "---|" * len(keys)]
        for r in splits:
            out.append(f"| {r['resolution']} | {r['ratio']:.2f} | {r['kernels']} | "
                       + " | ".join(f"{r['split_over_ideal'][k]:.3f}" for k in keys) + " |")
    return "\n".join(out) + "\n"


def write_report(result: dict, out_dir: str, tag: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"attention_{tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    rows = [{("pass_" if k == "pass" else k): v for k, v in r.items()} for r in result["rows"]]
    with open(os.path.join(out_dir, f"attention_{tag}.md"), "w") as f:
        f.write(to_markdown(result["meta"], rows))


def command_line(argv) -> str:
    from bench_util import command_line as _command_line

    return _command_line("bench_attention.py", argv)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resolutions", default="224x400,424x800,848x1600", type=lambda s: parse_list(s))
    ap.add_argument("--ratios", default="0.26,0.45,0.5", type=lambda s: parse_list(s, float))
    ap.add_argument("--batch", type=int, default=0, help="samples per call (default: MagicDrive-V2 bucket_config)")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--latent-frames", type=int, default=5, help="latent frames (17 video frames -> 5)")
    ap.add_argument("--frames-per-call", default={}, type=parse_frames,
                    help="RES:F,... view-frames per call for some resolutions, overriding batch x views x frames")
    ap.add_argument("--pad-sp", type=int, default=8, help="pad token rows to a multiple of this (MagicDrive-V2 SP)")
    ap.add_argument("--bands", type=int, default=1)
    ap.add_argument("--block", type=int, default=0, help="block ordinal l (grid layout and m-stride phase)")
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1152)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--passes", default="fwd,fwd+bwd", type=lambda s: parse_list(s))
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd dense / pruned / ideal")
    ap.add_argument("--no-split", action="store_true", help="skip the per-stage overhead split")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--tag", default=None, help="output name: attention_<tag>.{json,md} (default: the device)")
    ap.add_argument("--note", default="", help="a sentence added to the Markdown report")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.manual_seed(0)
    attn = Attention(args.hidden, args.heads).to(device=device, dtype=dtype).train(False)
    timer = Timer(device)
    grid, sub = DEFAULT_GRIDS[args.block % 2]
    rows: List[dict] = []
    for res in args.resolutions:
        rows += bench_resolution(args, res, device, dtype, timer, attn)
    tag = args.tag or ("cuda" if device.type == "cuda" else "cpu")
    meta = dict(device=device_name(device), device_tag=tag, dtype=str(dtype).replace("torch.", ""), hidden=args.hidden,
                heads=args.heads, bands=args.bands, block=args.block, grid=list(grid), subgrid=list(sub),
                stride=args.stride, warmup=args.warmup, repeats=args.repeats, torch=torch.__version__,
                triton=kernels.HAS_TRITON, kernel_mode=kernels.get_mode(), python=platform.python_version(),
                command=command_line(sys.argv[1:] if argv is None else argv),
                note=args.note, bucket_batch=BUCKET_BATCH)
    result = {"meta": meta, "rows": [{("pass" if k == "pass_" else k): v for k, v in r.items()} for r in rows]}
    write_report(result, args.out, tag)
    print(f"\nwrote {args.out}/attention_{tag}.json and .md")
    return result


if __name__ == "__main__":
    main()
