#!/usr/bin/env python
"""FLOPs report of a MagicDrive-V2 style DiT, dense vs CoReDiT-pruned (per module kind).

Examples (from the repo root, no installation needed)::

    python tools/flops.py --preset magicdrive-v2-xl --resolution 848x1600 --ratio 0.26
    python tools/flops.py --preset magicdrive-v2-xl --resolution 848x1600 --ratio 0.26 --json
    python tools/flops.py --preset magicdrive-v2-xl --resolution 848x1600 --ratio 0.26 --cross-view qkv
    python tools/flops.py --plan work_dirs/run/plan.json --frames 33 --bands 8 --pad-h-to-bands
    python tools/flops.py --resolution 848x1600 --ratio 0.5 --method tome --json
    python tools/flops.py --resolution 848x1600 --ratio 0.4 --cross-view qkv --scope block

FLOPs are per forward pass of one sample (all views, all latent frames), multiply-add = 2.
Reductions are fractions saved, ``(dense - pruned) / dense``: positive means fewer FLOPs. The pruned counts
include the method's own work (``overhead_flops``: scoring, similarity, merging, reconstruction...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package

from coredit_video import flops as F  # noqa: E402
from coredit_video.cli import ArgumentParser  # noqa: E402
from coredit_video.plan import read_plan  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="magicdrive-v2-xl", choices=sorted(F.PRESETS), help="model preset")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--resolution", default="x".join(str(v) for v in F.DEFAULT_RESOLUTION),
                      help="HxW in pixels (default %(default)s)")
    size.add_argument("--hw-tokens", default=None, help="HxW token grid of one latent frame and view")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=int, default=F.DEFAULT_FRAMES,
                        help="video frames (default %(default)s -> 1 + (F-1)//4 latent frames)")
    frames.add_argument("--latent-frames", type=int, default=None, help="latent (token) frames T")
    p.add_argument("--views", type=int, default=None, help="camera views (default: the preset's)")
    p.add_argument("--bands", type=int, default=None, help="row bands per frame (default: the plan's, else 1)")
    p.add_argument("--pad-h-to-bands", action="store_true",
                   help="pad the token height up to a multiple of --bands (MagicDrive-V2 SP padding)")
    p.add_argument("--stride", type=int, default=None,
                   help="m-stride retention m (0: no forced tokens; default: the plan's, else 3)")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--ratio", type=float, default=None, help="uniform pruning ratio in [0, 1)")
    plan.add_argument("--plan", default=None, help="pruning plan JSON (controller.save_plan); its bands and stride "
                                                   "apply unless given, and must agree when given")
    p.add_argument("--cross-view", default="off", choices=F.CROSS_VIEW_PRUNING,
                   help="also prune cross-view attention: kv (neighbour keys/values) or qkv (queries too)")
    p.add_argument("--cross-view-select", default="self", choices=("self", "fresh"),
                   help="cross-view retained set: the self-attention's (self) or a fresh score (fresh)")
    p.add_argument("--method", default="coredit", choices=F.METHODS,
                   help="token-reduction method whose work is counted (default %(default)s)")
    p.add_argument("--scope", default="attention", choices=F.SCOPES,
                   help="attention: prune the spatial self-attention (and cross-view with --cross-view); "
                        "block: run the whole prunable spatial block on the retained tokens")
    p.add_argument("--step-cache", action="store_true",
                   help="with --scope block: also count the step cache's memory per block and per rank (SP size = "
                        "--bands, bf16, one forward slot of batch 1; guidance in two calls doubles it)")
    p.add_argument("--cache-select", default="change", choices=("change", "coherence", "staleness", "random"),
                   help="prune.cache_select (change also caches each token's input)")
    p.add_argument("--cache-form", default="residual", choices=("residual", "gated"),
                   help="prune.cache_form (gated caches the attention and MLP branches too)")
    p.add_argument("--cache-context", default="retained", choices=("retained", "self", "all"),
                   help="prune.cache_context (self / all cache the self-attention inputs; all also the cross-view "
                        "attention's, in blocks that have one)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--blocks", action="store_true", help="table: also list every prunable block")
    return p


def _fmt(x: float) -> str:
    return f"{x:.4e}"


def print_table(res: dict, show_blocks: bool = False) -> None:
    inp = res["inputs"]
    H, W = inp["hw_tokens"]
    res_px = "x".join(str(v) for v in inp["resolution"]) if inp["resolution"] else "-"
    print(f"units: {res['units']}")
    print(
        f"resolution {res_px} px -> {H}x{W} tokens/frame ({inp['tokens_per_frame']}), "
        f"frames {inp['frames'] if inp['frames'] is not None else '-'} -> T={inp['latent_frames']}, "
        f"views {inp['views']}, bands {inp['bands']}, mean ratio {inp['mean_ratio']:.4f}"
    )
    print(f"method {res['method']}, scope {res['scope']}, cross-view {inp['cross_view']}")
    print()
    head = f"{'kind':<26}{'dense':>14}{'pruned':>14}{'reduction':>11}{'share':>9}"
    print(head)
    print("-" * len(head))
    for kind, v in res["kinds"].items():
        share = v["dense"] / res["dense_total"]
        print(f"{kind:<26}{_fmt(v['dense']):>14}{_fmt(v['pruned']):>14}{v['reduction']:>10.2%}{share:>9.1%}")
    print("-" * len(head))
    total_red = res["total_reduction"]
    print(f"{'total':<26}{_fmt(res['dense_total']):>14}{_fmt(res['pruned_total']):>14}{total_red:>10.2%}")
    over = res["overhead_flops"]
    print(f"{'  of which overhead':<26}{'-':>14}{_fmt(over):>14}{'':>10}{over / res['dense_total']:>9.2%}")
    print()
    print(f"self-attention FLOPs (spatial blocks): -{res['self_attention_reduction']:.2%}")
    cv_mode = "blk" if res["scope"] == "block" else inp["cross_view"]  # block scope: always on the retained tokens
    print(f"cross-view FLOPs ({cv_mode:>3}):               -{res['cross_view_reduction']:.2%}")
    print(f"total FLOPs:                           -{res['total_reduction']:.2%}")
    terms = ", ".join(f"{k} {_fmt(v)}" for k, v in res["overhead_terms"].items()) or "none"
    print(f"{res['method']} overhead (in the pruned counts): {_fmt(res['overhead_flops'])} ({terms})")
    if show_blocks:
        print()
        print(f"{'block':<22}{'ratio':>7}{'skipped':>9}{'kept':>7}{'reduction':>11}")
        for b in res["blocks"]:
            print(f"{b['name']:<22}{b['ratio']:>7.3f}{b['skipped_per_frame']:>9}{b['kept_per_frame']:>7}"
                  f"{b['reduction']:>10.2%}")


def resolution_problem(preset: str, resolution: str):
    """``None`` if the host's VAE can encode ``resolution`` as is, else a one-line message. The VAE
    downsamples by ``vae_down[1]`` (8 for MagicDrive-V2's CogVideoX VAE) and needs multiples of it; an odd
    latent size is then padded by the patch embedder (424x800 -> 53x100 latents -> 27x50 tokens)."""
    spec = F.get_spec(preset)
    h, w = F.parse_hw(resolution, "resolution")
    m = spec.vae_down[1]
    if h % m == 0 and w % m == 0:
        return None
    return (f"--resolution {resolution}: {preset}'s VAE downsamples by {m} and needs height and width in "
            f"multiples of {m}; use e.g. --resolution {-(-h // m) * m}x{-(-w // m) * m}, or --hw-tokens")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hw_tokens is None:
        try:
            problem = resolution_problem(args.preset, args.resolution)
        except ValueError as e:
            problem = str(e)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        ratios, bands, stride, grids = args.ratio, args.bands, args.stride, None
        if args.plan:
            ratios = read_plan(args.plan)
            bad = ratios.conflicts({"bands": bands, "stride": stride})
            if bad:
                raise ValueError(f"{ratios.source} disagrees with the command line ({'; '.join(bad)}); "
                                 "drop --bands / --stride to count with the plan's")
            grids = ratios.layout.get("grids")
            bands = ratios.layout.get("bands", 1) if bands is None else bands
            stride = ratios.layout.get("stride", 3) if stride is None else stride
        bands = 1 if bands is None else bands
        stride = 3 if stride is None else stride
        res = F.count_flops(
            args.preset,
            resolution=None if args.hw_tokens else args.resolution,
            frames=args.frames,
            views=args.views,
            ratios=ratios,
            bands=bands,
            hw_tokens=args.hw_tokens,
            latent_frames=args.latent_frames,
            pad_h_to_bands=args.pad_h_to_bands,
            stride=stride if stride else None,
            cross_view=args.cross_view,
            cross_view_select=args.cross_view_select,
            method=args.method,
            scope=args.scope,
            grids=grids,
        )
    except (ValueError, OSError) as e:
        parser.error(str(e))
    if args.plan:
        res["inputs"]["plan"] = args.plan
    res["inputs"]["preset"] = args.preset
    if args.step_cache:
        if args.scope != "block":
            parser.error("--step-cache caches block residuals: add --scope block")
        res["step_cache"] = step_cache_memory(res, F.get_spec(args.preset).hidden, args.cache_select, args.cache_form,
                                              args.cache_context)
    if args.json:
        print(json.dumps(res))
    else:
        print_table(res, args.blocks)
        if args.step_cache:
            m = res["step_cache"]
            print(f"step cache ({m['form']}, {m['select']}, context {m['context']}): "
                  f"{m['bytes_per_block_per_rank'] / 2**20:.1f} MiB per block per rank (the largest block), "
                  f"{m['bytes_per_rank'] / 2**30:.2f} GiB per rank ({m['blocks']} blocks, {m['ranks']} ranks, "
                  f"{m['frames']} frames x {m['tokens_per_rank']} tokens, bf16)")
    return 0


def step_cache_memory(res: dict, hidden: int, select: str, form: str = "residual", context: str = "retained") -> dict:
    """The step cache's bytes per block and per rank for the counted geometry (bf16, one forward slot of batch 1);
    ``bytes_per_block_per_rank`` is the largest block's (with ``context="all"`` the blocks with cross-view attention
    cache its inputs too)."""
    from coredit_video.step_cache import cache_bytes_per_block

    inp = res["inputs"]
    ranks = inp["bands"]
    frames, tokens = inp["views"] * inp["latent_frames"], inp["tokens_per_frame"] // ranks
    per_block = [cache_bytes_per_block(frames, tokens, hidden, 2, select, form, context, b["cross_view_dense"] > 0)
                 for b in res["blocks"]]
    return dict(select=select, form=form, context=context, ranks=ranks, frames=frames, tokens_per_rank=tokens,
                blocks=len(res["blocks"]), bytes_per_block_per_rank=max(per_block), bytes_per_rank=sum(per_block))


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
