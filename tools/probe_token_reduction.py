#!/usr/bin/env python
"""Why token merging beats CoReDiT without fine-tuning on the embedded host: the attention-output error of
each token-reduction mechanism, block by block, on the host's own inputs along the dense sampling trajectory.

    python tools/probe_token_reduction.py --scenes 2 --out docs/quality

The dense trajectory is the front's (:mod:`coredit_video.front`): the shipped host samples its held-out scenes
(1000 on) from the noise of ``--seed`` with the config's rflow (its steps, or ``--sampling-steps``, and its
guidance), and the front's probe (:class:`coredit_video.attention_probe.AttentionErrorProbe`) recomputes every
spatial self-attention call reduced, at each ratio. A registered method's error here is therefore the front's
``attn_error`` for the same config, scenes, seed and steps. Five mechanisms split CoReDiT and ToMe into their
differences:

- ``coredit``: coherence scores, per-band budgets, m-stride tokens kept; a skipped token gets the
  coherence-weighted mean of its sub-grid cell's retained outputs (the registered method);
- ``coredit_local_nearest``: the same selection; a skipped token gets the output of the most similar (cosine of
  the inputs) retained token of its sub-grid cell, else grid cell, else band (a rule that linear time allows);
- ``coredit_nearest``: the same selection; the output of the most similar retained token of the frame;
- ``tome_drop``: ToMe's bipartite matching (sources most similar to a 2x2-cell destination); a merged source
  gets its destination's output, the destination not averaged;
- ``tomesd``: ToMe without proportional attention, the destination averaged with its sources before attention
  (the registered method).

``coredit`` -> ``coredit_nearest`` is the reconstruction rule (``coredit_local_nearest``: how much of it a
linear-time rule keeps), ``coredit_nearest`` -> ``tome_drop`` the selection, ``tome_drop`` -> ``tomesd`` the
averaging. The error is ``sum |Y_hat - Y|^2 / sum |Y|^2`` over all calls (``Y``: the dense output, before the
output projection's residual), split into the rows that skipped attention and the rows that attended (over fewer
keys). ``--methods`` adds registered methods of the table (``coredit_video.methods``), measured the same way (the
split where the method says which rows it reduced). Writes ``probe.json`` and ``probe.md`` into ``--out``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REGISTERED = ("coredit", "tomesd")  # the registered ends of the mechanism line-up
MECHANISMS = ("coredit", "coredit_local_nearest", "coredit_nearest", "tome_drop", "tomesd")
METHODS = ("tome", "coredit_copy", "coredit_sharp", "coredit_merge", "coredit_kv", "todo")


def _coredit_retained(attn, x, geo):
    """CoReDiT's selection of ``x [F, N, C]`` in call ``geo``, the retained tokens' attention ``y_keep [F, N-K, C]``,
    the skipped rows ``[F, N]`` and the cosine of each skipped input to each retained one ``[F, K, N-K]``."""
    import torch

    from coredit_video.attention import call_scores, dense_self_attention, reduce_call
    from coredit_video.methods import gather_tokens
    from coredit_video.methods.coredit import CoReDiT

    Fr, N, _ = x.shape
    coredit = CoReDiT()
    sel, red = reduce_call(x, geo, coredit, call_scores(x, geo, coredit))  # the core's steps 1-3
    skipped = torch.zeros(Fr, N, dtype=torch.bool, device=x.device)
    skipped[torch.arange(Fr).view(Fr, 1), sel.skip] = True
    y_keep = dense_self_attention(attn, red.q)
    xn = torch.nn.functional.normalize(x.float(), dim=-1)
    sim = gather_tokens(xn, sel.skip) @ gather_tokens(xn, sel.keep).transpose(1, 2)
    return sel, y_keep, skipped, sim


def _copy_retained(x, sel, y_keep, source):
    """``[F, N, C]``: the retained rows' own outputs, each skipped row the output of retained token ``source [F, K]``
    (positions in ``sel.keep``)."""
    Fr, N, _ = x.shape
    frame = _frames(Fr)
    y = x.new_empty(Fr, N, y_keep.shape[-1])
    y[frame, sel.keep] = y_keep
    y[frame, sel.skip] = y_keep[frame, source]
    return y


def _frames(n: int):
    import torch

    return torch.arange(n).view(n, 1)


def coredit_nearest(attn, x, geo):
    """CoReDiT's selection; a skipped token copies the output of the most similar retained token of its frame."""
    sel, y_keep, skipped, sim = _coredit_retained(attn, x, geo)
    return _copy_retained(x, sel, y_keep, sim.argmax(-1)), skipped


def coredit_local_nearest(attn, x, geo):
    """CoReDiT's selection; a skipped token copies the most similar retained token of the finest level (sub-grid
    cell, grid cell, band) that holds one (linear time: a cell's size is fixed)."""
    import torch

    from coredit_video.ops.partition import partition

    sel, y_keep, skipped, sim = _coredit_retained(attn, x, geo)
    part = partition(geo.hw, geo.layout.grid, geo.layout.subgrid, geo.bands)
    level = torch.full_like(sim, -1.0)
    for ids in (part.band, part.cell, part.sub):  # coarse to fine: a finer match overrides
        same = ids[sel.skip].unsqueeze(-1) == ids[sel.keep].unsqueeze(1)  # [F, K, N-K]
        has = same.any(-1, keepdim=True)
        level = torch.where(has, torch.where(same, sim, torch.full_like(sim, -2.0)), level)
    return _copy_retained(x, sel, y_keep, level.argmax(-1)), skipped


def _tome_rows(x, hw: Tuple[int, int], k: int):
    """ToMe's matching of ``x [F, N, C]`` merging ``k`` tokens: the row ``[F, N]`` each token reads after unmerge
    (its own: a destination, or an unmerged source, those rows first; else its destination's), and whether it reads
    its own ``[F, N]``."""
    import torch

    from coredit_video.methods.tome import bipartite_merge, destination_mask

    Fr, N, _ = x.shape
    _, unmerge = bipartite_merge(x, hw, k)
    rows = unmerge(torch.arange(N - k, dtype=torch.float32).view(1, N - k, 1).expand(Fr, N - k, 1))[..., 0].long()
    dst = destination_mask(hw).view(1, N)
    n_src_kept = (N - int(dst.sum())) - k
    return rows, dst | (rows < n_src_kept)


def merged_rows(x, geo):
    """The rows ``[F, N]`` of ``x`` that ToMe's matching merges (they read their destination's output)."""
    return ~_tome_rows(x, geo.hw, geo.skipped)[1]


def tome_drop(attn, x, geo):
    """ToMe's matching without the averaging: the unmerged tokens attend, a merged source copies its destination's
    output."""
    import torch

    from coredit_video.attention import dense_self_attention
    from coredit_video.methods import gather_tokens

    Fr, N, _ = x.shape
    k = geo.skipped
    rows, reads_own = _tome_rows(x, geo.hw, k)
    tok = torch.arange(N).view(1, N).expand(Fr, N)
    own = torch.empty(Fr, N - k, dtype=torch.long).scatter_(1, rows[reads_own].view(Fr, N - k),
                                                             tok[reads_own].view(Fr, N - k))
    return gather_tokens(dense_self_attention(attn, gather_tokens(x, own)), rows), ~reads_own


EXTRA_MECHANISMS = {"coredit_local_nearest": coredit_local_nearest, "coredit_nearest": coredit_nearest,
                    "tome_drop": tome_drop}


def build_probe(ctrl, ratios: Sequence[float], methods: Sequence[str] = METHODS, temperature: float = 0.05):
    """The package probe measuring the mechanisms and ``methods`` (registered) at ``ratios``."""
    from coredit_video.attention_probe import AttentionErrorProbe

    names = list(dict.fromkeys([*REGISTERED, *methods]))
    return AttentionErrorProbe(ctrl, names, ratios, temperature, mechanisms=EXTRA_MECHANISMS,
                               reduced_rows={"tome": merged_rows, "tomesd": merged_rows})


def main(argv=None) -> int:
    from coredit_video.cli import ArgumentParser

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny_cpu.py")
    ap.add_argument("--scenes", type=int, default=2, help="held-out scenes (seed offset 1000)")
    ap.add_argument("--seed", type=int, default=0, help="the noise, as the front's --seeds")
    ap.add_argument("--sampling-steps", type=int, default=None, help="default: rflow.num_sampling_steps")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="registered methods measured beside the mechanisms (comma-separated)")
    ap.add_argument("--temperature", type=float, default=0.05, help="coredit_sharp's temperature")
    ap.add_argument("--out", default="work_dirs/probe")
    args = ap.parse_args(argv)
    from coredit_video.methods import method_names

    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(method_names())}")
    from coredit_video.cli import load_train_config

    load_train_config(args.config)  # a bad config is a one-line error before the host is built
    bad = [r for r in args.ratios if not 0.0 < r < 1.0]
    if bad or args.scenes < 1 or (args.sampling_steps is not None and args.sampling_steps < 1):
        ap.error(f"--ratios must lie in (0, 1) (got {bad or args.ratios}); --scenes and --sampling-steps >= 1")

    from tqdm import tqdm

    from coredit_video import apply as apply_pruning
    from coredit_video.front import FrontSettings, builtin_host
    from coredit_video.plugin import remove

    host = builtin_host(FrontSettings(config=args.config, seeds=(args.seed,), scenes=args.scenes,
                                      sampling_steps=args.sampling_steps, methods=(), ratios=args.ratios,
                                      temperature=args.temperature))
    # the controller of the front's dense runs (its lines' settings at ratio 0)
    ctrl = apply_pruning(host.model, dataclasses.replace(host.prune, ratios=0.0, plan=None, cross_view="off"))
    probe = build_probe(ctrl, args.ratios, methods, args.temperature)
    with probe:
        for i in tqdm(range(args.scenes), desc="probe", file=sys.stderr):
            host.generate(args.seed, i, ctrl)
    remove(host.model)
    rows = [{"mechanism": r["name"], **{k: v for k, v in r.items() if k != "name"}} for r in probe.rows()]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "probe.json"), "w") as f:
        json.dump(dict(config=args.config, scenes=args.scenes, seed=args.seed, sampling_steps=host.num_steps,
                       rows=rows), f, indent=2)
    lines = ["Relative attention-output error (% of the dense output's energy), summed over every spatial "
             f"self-attention call of {args.scenes} dense generations ({host.num_steps} steps, seed {args.seed}):",
             "", "| ratio | mechanism | reduced rows (%) | error: all | on reduced rows | on attending rows |",
             "|---|---|---|---|---|---|"]
    pct = lambda v: "-" if v is None else f"{100 * v:.3f}"  # noqa: E731
    for r in args.ratios:
        for m in dict.fromkeys([*MECHANISMS, *methods]):
            row = next(x for x in rows if x["mechanism"] == m and x["ratio"] == r)
            frac = "-" if row["reduced_fraction"] is None else f"{100 * row['reduced_fraction']:.1f}"
            lines.append(f"| {r:.2f} | {m} | {frac} | {pct(row['error'])} | {pct(row['error_reduced_rows'])} | "
                         f"{pct(row['error_attending_rows'])} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "probe.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
