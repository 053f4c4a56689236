#!/usr/bin/env python
"""Sequence-parallel cost of one spatial block, dense vs pruned, at MagicDrive-V2 shapes.

For the self-attention alone and for the whole spatial block (self-attention, cross-view attention,
cross-attention, MLP), per rank: bytes sent by the all-to-alls, time inside them, and the block's
time; medians over repeats. Run under torchrun (gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node 2 tools/bench_sp.py                 # 848x1600: 56x100 tokens, 6 views
    torchrun --nproc_per_node 2 tools/bench_sp.py --tokens 28x50 --repeats 5

Writes ``bench_sp<P>_<backend>_<HxW>.{json,md}`` into ``--out`` (default ``work_dirs/bench``; pass
``--out docs/benchmarks`` to update the committed results) from rank 0, which also prints one line
per case with the time left. Ratios are within one run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import coredit_video as cv  # noqa: E402
from coredit_video.embedded.host import MultiViewSTDiT, host_config  # noqa: E402
from coredit_video.parallel import destroy_parallel, init_parallel, measure_comm  # noqa: E402


def parse_hw(text: str):
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} threads per rank)"


def timed(fn, warmup: int, repeats: int, sync):
    """Median wall time of ``fn`` (all ranks aligned by a barrier) and the meter of the last repeat."""
    times, meter = [], None
    for i in range(warmup + repeats):
        dist.barrier()
        sync()
        with measure_comm() as m:
            t0 = time.perf_counter()
            fn()
            sync()
            dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            meter = m
    return statistics.median(times), meter


def parse_args(argv, is_main: bool) -> argparse.Namespace:
    """The options; under torchrun only rank 0 prints help, usage or errors (the others exit quietly)."""
    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="56x100", help="padded token grid per frame, HxW (848x1600 -> 56x100)")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--frames", type=int, default=1, help="latent frames per call (frames = views x this)")
    ap.add_argument("--hidden", type=int, default=1152)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ratios", default="0.26,0.5")
    ap.add_argument("--bands", type=int, default=None, help="row bands (default: the SP size)")
    ap.add_argument("--backward", action="store_true", help="also time forward+backward")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("work_dirs", "bench"),
                    help="output folder (default %(default)s; docs/benchmarks holds the committed results)")
    if is_main:
        return ap.parse_args(argv)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        return ap.parse_args(argv)


def main(argv=None) -> dict:
    is_main = os.environ.get("RANK", "0") == "0"
    args = parse_args(argv, is_main)
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        print("error: tools/bench_sp.py measures sequence parallelism: run it under torchrun with at least 2 "
              "processes, e.g. torchrun --nproc_per_node 2 tools/bench_sp.py", file=sys.stderr)
        sys.exit(2)
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    device = st.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    H, W = parse_hw(args.tokens)
    P = st.sp_size
    bands = args.bands or P
    if H % bands or bands % P:
        raise SystemExit(f"{H} token rows must split into bands={bands}, and bands into the SP size {P}")
    torch.manual_seed(0)
    cfg = host_config("xl", hidden=args.hidden, num_heads=args.heads, depth=1, control_depth=0, views=args.views)
    model = MultiViewSTDiT(cfg).to(device=device, dtype=dtype)
    model.set_sequence_parallel(st.sp_group)
    block = model.base_blocks_s[0]
    F = args.views * args.frames
    S_local = H * W // P
    g = torch.Generator(device="cpu").manual_seed(1 + st.rank)
    x = torch.randn(F, args.frames * S_local, args.hidden, generator=g).to(device, dtype)
    y = torch.randn(F, 16, args.hidden, generator=g).to(device, dtype)
    t_mod = torch.randn(F, 6 * args.hidden, generator=g).to(device, dtype) * 0.1

    def attn_fwd():
        with torch.no_grad():
            block.attn(x.view(F * args.frames, S_local, -1))

    def block_fwd():
        with torch.no_grad():
            block(x, y, t_mod, args.frames, S_local, args.views)

    def block_fwd_bwd():
        xr = x.detach().requires_grad_(True)
        block(xr, y, t_mod, args.frames, S_local, args.views).float().square().mean().backward()

    cases = [("attention fwd", attn_fwd), ("block fwd", block_fwd)]
    if args.backward:
        cases.append(("block fwd+bwd", block_fwd_bwd))
    ratios = [0.0] + [float(r) for r in args.ratios.split(",") if r]
    total = len(ratios) * len(cases)
    if st.is_main:
        print(f"{total} cases (r in {ratios} x {[c for c, _ in cases]}), {args.warmup} warm-up + {args.repeats} "
              f"timed runs each, {H}x{W} tokens, SP={P}, {device_name(device)}; writing to {args.out} "
              "(--help for options)", flush=True)
    rows = []
    t_start = time.perf_counter()
    for ratio in ratios:
        if ratio > 0:
            ctrl = cv.apply(model, dict(ratios=ratio, bands=bands, blocks=["base_blocks_s"]))
            ctrl.set_frame((H, W))
        else:
            cv.remove(model)
        for name, fn in cases:
            sec, meter = timed(fn, args.warmup, args.repeats, sync)
            stats = torch.tensor([sec, meter.seconds, meter.by_tag.get("self_attn", 0) * x.element_size(),
                                  meter.bytes_sent], dtype=torch.float64, device="cpu")
            dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
            rows.append(dict(case=name, ratio=ratio, block_s=stats[0].item(), all_to_all_s=stats[1].item(),
                             self_attn_bytes=stats[2].item(), all_bytes=stats[3].item()))
            if st.is_main:
                done, spent = len(rows), time.perf_counter() - t_start
                print(f"[{done}/{total}] r={ratio:<5} {name:<14} block {stats[0]:.4f}s  all-to-all {stats[1]:.4f}s  "
                      f"self-attn sent {stats[2] / 2**20:.1f} MiB  all sent {stats[3] / 2**20:.1f} MiB  "
                      f"({spent:.0f}s so far, about {spent / done * (total - done):.0f}s left)", flush=True)
    cv.remove(model)
    result = dict(
        device=device_name(device), backend=st.backend, sp_size=P, bands=bands, tokens=[H, W], views=args.views,
        frames=args.frames, hidden=args.hidden, heads=args.heads, dtype=str(dtype).replace("torch.", ""),
        warmup=args.warmup, repeats=args.repeats, rows=rows,
        command=f"torchrun --nproc_per_node {P} tools/bench_sp.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    if st.is_main:
        write_report(result, args.out)
        print(f"wrote {args.out}/bench_sp{P}_{st.backend}_{H}x{W}.{{json,md}}", flush=True)
    destroy_parallel()
    return result


def write_report(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    tag = f"sp{result['sp_size']}_{result['backend']}_{result['tokens'][0]}x{result['tokens'][1]}"
    with open(os.path.join(out_dir, f"bench_{tag}.json"), "w") as f:
        json.dump(result, f, indent=2)
    dense = {r["case"]: r for r in result["rows"] if r["ratio"] == 0.0}
    lines = [
        f"# Sequence-parallel spatial block: dense vs pruned ({result['backend']}, SP={result['sp_size']})",
        "",
        f"Device: {result['device']}. Token grid {result['tokens'][0]}x{result['tokens'][1]} per frame, "
        f"{result['views']} views x {result['frames']} frame(s), width {result['hidden']}, {result['heads']} heads, "
        f"{result['dtype']}, bands={result['bands']}. Median of {result['repeats']} after {result['warmup']} warm-up; "
        "per rank, slowest rank. Ratios are pruned / dense within this run.",
        "",
        "| case | r | block time (s) | vs dense | all-to-all time (s) | vs dense | self-attn bytes sent (MiB) "
        "| vs dense | all bytes sent (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        d = dense[r["case"]]
        lines.append(
            f"| {r['case']} | {r['ratio']:.2f} | {r['block_s']:.4f} | {r['block_s'] / d['block_s']:.3f} | "
            f"{r['all_to_all_s']:.4f} | {r['all_to_all_s'] / max(d['all_to_all_s'], 1e-12):.3f} | "
            f"{r['self_attn_bytes'] / 2**20:.1f} | {r['self_attn_bytes'] / max(d['self_attn_bytes'], 1):.3f} | "
            f"{r['all_bytes'] / 2**20:.1f} |"
        )
    lines += ["", f"Reproduce: `{result['command']}`", "",
              "The all-to-all time includes waiting for the slower rank, so on a shared CPU it is noisy; the "
              "bytes are exact."]
    with open(os.path.join(out_dir, f"bench_{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    run_cli(main)
