#!/usr/bin/env python
"""Why token merging beats CoReDiT without fine-tuning on the embedded host: the attention-output error of
each token-reduction mechanism, block by block, on the host's own inputs along the dense sampling trajectory.

    python tools/probe_token_reduction.py --scenes 2 --out docs/quality

Every spatial self-attention call of a dense generation (30 steps, the shipped host, held-out scenes) is also
computed reduced, at each ratio, by five mechanisms that split CoReDiT and ToMe into their differences:

- ``coredit``: coherence scores, per-band budgets, m-stride tokens kept; a skipped token gets the
  coherence-weighted mean of its sub-grid cell's retained outputs (the method);
- ``coredit_local_nearest``: the same selection; a skipped token gets the output of the most similar (cosine of
  the inputs) retained token of its sub-grid cell, else grid cell, else band (a rule that linear time allows);
- ``coredit_nearest``: the same selection; the output of the most similar retained token of the frame;
- ``tome_drop``: ToMe's bipartite matching (sources most similar to a 2x2-cell destination); a merged source
  gets its destination's output, the destination not averaged;
- ``tome``: ToMe, the destination averaged with its sources before attention.

``coredit`` -> ``coredit_nearest`` is the reconstruction rule (``coredit_local_nearest``: how much of it a
linear-time rule keeps), ``coredit_nearest`` -> ``tome_drop`` the selection, ``tome_drop`` -> ``tome`` the
averaging. The error is ``sum |Y_hat - Y|^2 / sum |Y|^2`` over all
calls (``Y``: the dense output, before the output projection's residual), split into the rows that skipped
attention and the rows that attended (over fewer keys). The generation itself stays dense, so every mechanism
sees the same inputs. ``--methods`` adds registered methods of the table (``coredit_video.methods``), measured as
``pruned_self_attention`` runs them (total error only). Writes ``probe.json`` and ``probe.md`` into ``--out``.
"""
from __future__ import annotations

import functools
import dataclasses
import json
import os
import sys
from typing import Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MECHANISMS = ("coredit", "coredit_local_nearest", "coredit_nearest", "tome_drop", "tome")
METHODS = ("coredit_copy", "coredit_sharp", "coredit_merge", "coredit_kv", "todo")


def reduced_outputs(attn, x, hw: Tuple[int, int], ratio: float, layout, bands: int = 1,
                    methods=METHODS, temperature: float = 0.05) -> Dict[str, tuple]:
    """Each mechanism's (and each registered method's) self-attention output for ``x [F, N, C]`` at ``ratio``:
    ``{name: (y [F, N, C], reduced [F, N] bool)}``, ``reduced`` marking the rows that did not attend themselves
    (all ``False`` for a method of the table: its split is not computed)."""
    import torch

    from coredit_video.attention import pruned_self_attention
    from coredit_video.attention.backends import dense_self_attention
    from coredit_video.kernels import reconstruct, spatial_coherence
    from coredit_video.methods import CallGeometry, build_method, gather_tokens
    from coredit_video.methods.coredit import CoReDiT
    from coredit_video.methods.tome import bipartite_merge, destination_mask
    from coredit_video.ops.partition import partition
    from coredit_video.ops.selection import band_budgets

    Fr, N, C = x.shape
    budgets = band_budgets(hw, ratio, layout.stride, layout.ordinal, bands)
    K = sum(budgets)
    out = {}
    none = torch.zeros(Fr, N, dtype=torch.bool)
    if K == 0:
        y = dense_self_attention(attn, x)
        return {m: (y, none) for m in (*MECHANISMS, *methods)}
    for m in methods:
        method = build_method(m, temperature=temperature)
        out[m] = (pruned_self_attention(attn, x, hw, ratio, layout, bands, budgets=budgets, method=method).out, none)
    attend = lambda t: dense_self_attention(attn, t)  # noqa: E731
    frame = torch.arange(Fr).view(Fr, 1)

    # CoReDiT (as pruned_self_attention computes it), and its selection with a nearest-retained-token copy
    geo = CallGeometry(tuple(hw), ratio, layout, bands, tuple(budgets))
    sel = CoReDiT().select(x, geo, spatial_coherence(x, hw, layout.grid, bands))
    skipped = torch.zeros(Fr, N, dtype=torch.bool)
    skipped[frame, sel.skip] = True
    y_keep = attend(gather_tokens(x, sel.keep))
    out["coredit"] = (reconstruct(y_keep, sel.keep, sel.skip, sel.sc, hw, layout.grid, layout.subgrid, bands),
                      skipped)
    xn = torch.nn.functional.normalize(x.float(), dim=-1)
    sim = gather_tokens(xn, sel.skip) @ gather_tokens(xn, sel.keep).transpose(1, 2)  # [F, K, N-K]
    nearest = sim.argmax(-1)
    y = x.new_empty(Fr, N, y_keep.shape[-1])
    y[frame, sel.keep] = y_keep
    y[frame, sel.skip] = y_keep[frame, nearest]
    out["coredit_nearest"] = (y, skipped)
    # the same copy restricted as CoReDiT's reconstruction is: the finest level (sub-grid cell, grid cell, band)
    # that holds a retained token (linear time: a cell's size is fixed)
    part = partition(hw, layout.grid, layout.subgrid, bands)
    level = torch.full_like(sim, -1.0)
    for ids in (part.band, part.cell, part.sub):  # coarse to fine: a finer match overrides
        same = ids[sel.skip].unsqueeze(-1) == ids[sel.keep].unsqueeze(1)  # [F, K, N-K]
        has = same.any(-1, keepdim=True)
        level = torch.where(has, torch.where(same, sim, torch.full_like(sim, -2.0)), level)
    y = y.clone()
    y[frame, sel.skip] = y_keep[frame, level.argmax(-1)]
    out["coredit_local_nearest"] = (y, skipped)

    # ToMe, and its matching without the averaging. After unmerge a token reads its own row (a destination, or a
    # source left unmerged: those rows come first) or, if merged, its destination's row.
    merged, unmerge = bipartite_merge(x, hw, K)
    rows = unmerge(torch.arange(N - K, dtype=torch.float32).view(1, N - K, 1).expand(Fr, N - K, 1))[..., 0].long()
    dst = destination_mask(hw).view(1, N)
    n_src_kept = (N - int(dst.sum())) - K
    reads_own = dst | (rows < n_src_kept)  # [F, N], N - K per frame
    tok = torch.arange(N).view(1, N).expand(Fr, N)
    own = torch.empty(Fr, N - K, dtype=torch.long).scatter_(1, rows[reads_own].view(Fr, N - K),
                                                             tok[reads_own].view(Fr, N - K))
    out["tome_drop"] = (gather_tokens(attend(gather_tokens(x, own)), rows), ~reads_own)
    out["tome"] = (unmerge(attend(merged)), ~reads_own)
    return out


def main(argv=None) -> int:
    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny_cpu.py")
    ap.add_argument("--scenes", type=int, default=2, help="held-out scenes (seed offset 1000)")
    ap.add_argument("--sampling-steps", type=int, default=None, help="default: rflow.num_sampling_steps")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="registered methods measured beside the mechanisms (comma-separated)")
    ap.add_argument("--temperature", type=float, default=0.05, help="coredit_sharp's temperature")
    ap.add_argument("--out", default="work_dirs/probe")
    args = ap.parse_args(argv)
    from coredit_video.methods import method_names

    unknown = [m for m in args.methods.split(",") if m and m not in method_names()]
    if unknown:
        print(f"error: unknown method(s) {unknown}; choose from {list(method_names())}", file=sys.stderr)
        return 2
    from coredit_video.cli import load_train_config

    _, tcfg = load_train_config(args.config)
    bad = [r for r in args.ratios if not 0.0 < r < 1.0]
    if bad or args.scenes < 1 or (args.sampling_steps is not None and args.sampling_steps < 1):
        ap.error(f"--ratios must lie in (0, 1) (got {bad or args.ratios}); --scenes and --sampling-steps >= 1")

    import torch
    from tqdm import tqdm

    from coredit_video.attention.backends import dense_self_attention
    from coredit_video import apply as apply_pruning
    from coredit_video.plugin import remove
    from coredit_video.sampling import sample
    from coredit_video.training.hosts import build_host_bundle, held_out_data

    rflow = tcfg.rflow if args.sampling_steps is None else \
        dataclasses.replace(tcfg.rflow, num_sampling_steps=args.sampling_steps)
    bundle = build_host_bundle(tcfg.model, held_out_data(tcfg.data, args.scenes, 1000), tcfg.seed)
    bundle.init_weights(bundle.model, tcfg.train.init_from or "embedded")
    model = bundle.model.eval()
    ctrl = apply_pruning(model, dataclasses.replace(tcfg.prune, ratios=0.0, plan=None))
    # sums[(mechanism, ratio)] = [err on reduced rows, err on attending rows, |Y|^2, reduced rows, rows]
    methods = tuple(m for m in args.methods.split(",") if m)
    sums = {(m, r): [0.0, 0.0, 0.0, 0, 0] for m in (*MECHANISMS, *methods) for r in args.ratios}

    def probe(ordinal, attn, x):
        hw, layout = ctrl.context.hw, ctrl.geometries[ordinal]
        y = dense_self_attention(attn, x)
        energy = float(y.float().pow(2).sum())
        for r in args.ratios:
            for m, (y_hat, red) in reduced_outputs(attn, x, hw, r, layout, ctrl.bands, methods,
                                                   args.temperature).items():
                d = (y_hat - y).float().pow(2).sum(-1)
                s = sums[(m, r)]
                s[0] += float(d[red].sum())
                s[1] += float(d[~red].sum())
                s[2] += energy
                s[3] += int(red.sum())
                s[4] += red.numel()
        return y

    for ordinal, attn in enumerate(ctrl.modules):  # the generation stays dense; each call is also measured reduced
        attn.__dict__["forward"] = functools.partial(probe, ordinal, attn)
    with torch.no_grad():
        for i in tqdm(range(args.scenes), desc="probe", file=sys.stderr):
            batch = bundle.collate([bundle.dataset[i]])
            x0 = bundle.latents(batch)
            h, w, f = (v[0].item() for v in bundle.frame_info(batch))
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(i))
            null = bundle.drop_condition(batch, torch.ones(x0.shape[0], dtype=torch.bool)) \
                if bundle.drop_condition is not None else None
            sample(model, bundle.forward, noise, batch, null, rflow, h, w, int(f), controller=ctrl)
    remove(model)
    rows = []
    for (m, r), (e_red, e_att, norm, n_red, n) in sums.items():
        rows.append(dict(mechanism=m, ratio=r, error=(e_red + e_att) / norm, error_reduced_rows=e_red / norm,
                         error_attending_rows=e_att / norm, reduced_fraction=n_red / n))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "probe.json"), "w") as f:
        json.dump(dict(config=args.config, scenes=args.scenes, sampling_steps=rflow.num_sampling_steps,
                       rows=rows), f, indent=2)
    lines = ["Relative attention-output error (% of the dense output's energy), summed over every spatial "
             f"self-attention call of {args.scenes} dense generations ({rflow.num_sampling_steps} steps):", "",
             "| ratio | mechanism | reduced rows (%) | error: all | on reduced rows | on attending rows |",
             "|---|---|---|---|---|---|"]
    for r in args.ratios:
        for m in (*MECHANISMS, *methods):
            row = next(x for x in rows if x["mechanism"] == m and x["ratio"] == r)
            lines.append(f"| {r:.2f} | {m} | {100 * row['reduced_fraction']:.1f} | {100 * row['error']:.3f} | "
                         f"{100 * row['error_reduced_rows']:.3f} | {100 * row['error_attending_rows']:.3f} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "probe.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
