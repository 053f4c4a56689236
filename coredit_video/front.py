"""The quality-vs-cost front on the embedded default: every token-reduction method, training-free, at ratios
0.1 ... 0.6, measured the way a user chooses: fidelity to the dense generation against the cost paid.

For each seed and held-out scene the shipped host samples the scene densely and once per (method, ratio) from the
same noise; fidelity is PSNR / SSIM of the decoded uint8 frames to the dense ones (averaged over scenes). The
attention-output error (``attn_error``, % of the dense output's energy) is measured on the dense trajectory of the
first ``probe_scenes`` scenes of each seed: every spatial self-attention call is recomputed by every (method, ratio).
Cost columns, each the method's figure over dense's (below 1 is cheaper), are the user's MagicDrive-V2-XL at
848x1600: ``flops_ratio`` from :func:`coredit_video.flops.count_flops` (the method's own work counted) and
``time_ratio`` from a ``tools/bench_attention.py --json`` run (the whole spatial self-attention, forward, measured).

Rows are appended to ``front_rows.jsonl`` as they finish (a re-run resumes); ``front.json`` / ``front.png`` are
written at the end.

The same loop runs on another host through :class:`FrontHost` (``FrontSettings.host``, :func:`open_host`):
``"magicdrive_v2"`` samples a MagicDrive-V2 checkpoint with its config's conditions
(:mod:`coredit_video.integrations.magicdrive_front`); its rows carry ``host = "magicdrive_v2:<config>"``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .attention_probe import AttentionErrorProbe

log = logging.getLogger("coredit.front")

FRONT_METHODS = ("coredit", "coredit_copy", "coredit_sharp", "coredit_merge", "coredit_kv", "tome", "tomesd",
                 "todo", "coredit@block", "coredit_copy@block", "coredit_merge@block")
FRONT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
ROW_FIELDS = ("method", "ratio", "seed", "fidelity_PSNR", "fidelity_SSIM", "attn_error", "flops_ratio", "time_ratio",
              "steps", "cost_flops", "cost_time", "scope", "host", "step_ratios")


@dataclasses.dataclass
class FrontSettings:
    config: str = "configs/tiny_cpu.py"
    out: str = "work_dirs/front"
    seeds: Sequence[int] = (0, 1)
    scenes: int = 8
    seed_offset: int = 1000
    probe_scenes: int = 2
    probe_every: int = 1  # measure the attention error on every k-th model forward of the probe scenes
    probe_methods: Sequence[str] = ()  # measured by the probe only (no generation), e.g. coredit_sharp
    sampling_steps: Optional[int] = None
    methods: Sequence[str] = FRONT_METHODS
    ratios: Sequence[float] = FRONT_RATIOS
    bench_json: Optional[str] = None  # tools/bench_attention.py --json output (time_ratio)
    bench_resolution: Tuple[int, int] = (848, 1600)
    preset: str = "magicdrive-v2-xl"
    temperature: float = 0.05
    render_only: bool = False  # write front.json / .png from the rows measured so far, measure nothing
    max_stale: Optional[int] = 2  # lines METHOD@block+cache: prune.max_stale
    dense_steps: int = 1  # lines METHOD@block+cache: prune.dense_steps
    fewer_steps: Sequence[int] = ()  # the line "fewer_steps": dense sampling at k of the reference steps, each k
    step_time_json: Optional[str] = None  # tools/bench_step_time.py output: the cost_time column
    # -- the host seam (open_host): "builtin" samples ``config``'s embedded host; "magicdrive_v2" a MagicDrive-V2
    # config (``config``) with its checkpoint ``ckpt`` (coredit_video/integrations/magicdrive_front.py)
    host: str = "builtin"
    ckpt: Optional[str] = None  # magicdrive_v2: the checkpoint (as MagicDrive-V2's --ckpt-path)
    latents: bool = False  # magicdrive_v2: fidelity on the latents even when the config has a VAE

    def __post_init__(self):
        from .config import SCOPES
        from .methods import REGISTRY, method_names

        lines = [*self.methods, *self.probe_methods]
        unknown = sorted({line_method_scope(m)[0] for m in lines} - set(method_names()))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(method_names())}")
        scopes = sorted({line_method_scope(m)[1] for m in lines} - set(SCOPES))
        if scopes:
            raise ValueError(f"unknown scope(s) {scopes} after '@'; a line is METHOD or METHOD@block "
                             f"(scopes: {list(SCOPES)})")
        if self.host not in FRONT_HOSTS:
            raise ValueError(f"unknown front host {self.host!r}; choose from {list(FRONT_HOSTS)}")
        zero_ok = self.host != "builtin"  # ratio 0: the dense model through the line's own path (its row is exact)
        bad = [r for r in self.ratios if not (0.0 < float(r) < 1.0 or zero_ok and float(r) == 0.0)]
        if bad:
            raise ValueError(f"ratios must be in {'[0, 1)' if zero_ok else '(0, 1)'}, got {bad}")
        no_block = [m for m in self.methods if line_method_scope(m)[1] == "block"
                    and not REGISTRY[line_method_scope(m)[0]].supports_block_scope]
        if no_block:
            raise ValueError(f"{no_block}: these methods have no block scope")
        if self.scenes < 1 or not self.seeds:
            raise ValueError("the front needs at least one scene and one seed")
        if self.sampling_steps is not None and self.sampling_steps < 1:
            raise ValueError(f"--sampling-steps {self.sampling_steps}: give at least 1")
        if self.probe_every < 1 or self.probe_scenes < 0:
            raise ValueError("--probe-every must be >= 1 and --probe-scenes >= 0")
        parsed = [parse_line(m) for m in lines]  # raises on a bad step count after '/'
        no_cache = [m for m, p in zip(lines, parsed) if p.cache and p.scope != "block"]
        if no_cache:
            raise ValueError(f"{no_cache}: the step cache runs in block scope; write METHOD@block{CACHE_SUFFIX}")
        steps = self.sampling_steps
        long = [m for m, p in zip(lines, parsed) if p.steps is not None and steps is not None and p.steps > steps]
        if long:
            raise ValueError(f"{long}: a line's steps after '/' are at most --sampling-steps {steps}")
        if self.max_stale is not None and self.max_stale < 1 or self.dense_steps < 0:
            raise ValueError(f"--max-stale {self.max_stale} / --dense-steps {self.dense_steps}: give >= 1 / >= 0")
        if any(int(k) < 1 for k in self.fewer_steps):
            raise ValueError(f"--fewer-steps {list(self.fewer_steps)}: step counts >= 1")
        bad_probe = [m for m in self.probe_methods if parse_line(m) != FrontLine(*line_method_scope(m))]
        if bad_probe:
            raise ValueError(f"{bad_probe}: the attention-error probe measures plain METHOD or METHOD@block lines")


# Hosts other than the built-in one, as "package.module:function" (imported when used: the integration builds on this
# module, so a static import here would be a cycle)
FRONT_HOST_BUILDERS = {"magicdrive_v2": "coredit_video.integrations.magicdrive_front:magicdrive_front_host"}
FRONT_HOSTS = ("builtin", *FRONT_HOST_BUILDERS)
HOST_FIELDS = ("host", "ckpt", "latents")  # settings of the host seam (not in a builtin front.json's settings)


@dataclasses.dataclass
class FrontHost:
    """The host seam of :func:`run_front`: what the shared loop (dense references, lines, rows, resume, render)
    needs from a host. :func:`open_host` builds it for ``FrontSettings.host``.

    ``generate(seed, scene, controller, steps)`` samples held-out scene ``scene`` from the noise of
    ``(seed, scene)`` with whatever CoReDiT ``controller`` is applied to ``model`` (``None``: none is), at ``steps``
    sampling steps (``None``: ``num_steps``), and returns one array per view; ``fidelity(a, b)`` is one view's
    ``(PSNR, SSIM)`` of ``a`` to the dense ``b``, PSNR clamped at 100 dB."""

    label: str  # the rows' ``host``
    model: Any  # what CoReDiT is applied to (None when only rendering)
    prune: Any  # the host's PruneConfig: layout, bands, late steps, cap (the lines set method, ratio, scope)
    num_steps: int  # the reference sampling steps
    generate: Callable[..., List[Any]]
    fidelity: Callable[[Any, Any], Tuple[float, float]]


def frame_fidelity(a, b) -> Tuple[float, float]:
    """PSNR (clamped at 100 dB) and SSIM of uint8 frames ``[T, H, W, 3]`` to the dense ones, peak 255."""
    from .evaluation.metrics_video import psnr, ssim

    return float(psnr(a, b, 255.0).clamp_max(100.0).mean()), float(ssim(a, b, 255.0).mean())


def builtin_host(s: FrontSettings) -> FrontHost:
    """The embedded host of ``s.config`` (its held-out synthetic scenes, weights from ``train.init_from``)."""
    import torch
    from mmengine.config import Config

    from .generation import to_uint8_frames
    from .sampling import sample
    from .training.config import build_train_config
    from .training.hosts import build_host_bundle, held_out_data

    tcfg = build_train_config(Config.fromfile(s.config))
    rflow = tcfg.rflow if s.sampling_steps is None else \
        dataclasses.replace(tcfg.rflow, num_sampling_steps=s.sampling_steps)
    bundle = build_host_bundle(tcfg.model, held_out_data(tcfg.data, s.scenes, s.seed_offset), tcfg.seed)
    if not s.render_only:
        bundle.init_weights(bundle.model, tcfg.train.init_from or "embedded")
    model = bundle.model.eval()

    def run(seed: int, i: int, ctrl=None, steps: Optional[int] = None):
        flow = rflow if steps is None else dataclasses.replace(rflow, num_sampling_steps=steps)
        item = bundle.dataset[i]
        batch = bundle.collate([item])
        x0 = bundle.latents(batch)
        h, w, f = (v[0].item() for v in bundle.frame_info(batch))
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(item.get("index", i)) * 101)
        noise = torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            z = sample(model, bundle.forward, noise, batch, None, flow, h, w, int(f), controller=ctrl)
        video = bundle.codec.decode(z)[0] if bundle.codec is not None else z[0]
        return [to_uint8_frames(v) for v in video]  # per view [T, H, W, 3]

    return FrontHost(label=s.config, model=model, prune=tcfg.prune, num_steps=rflow.num_sampling_steps,
                     generate=run, fidelity=frame_fidelity)


def open_host(s: FrontSettings) -> FrontHost:
    """The :class:`FrontHost` of ``s.host``."""
    if s.host in FRONT_HOST_BUILDERS:
        import importlib

        module, fn = FRONT_HOST_BUILDERS[s.host].split(":")
        return getattr(importlib.import_module(module), fn)(s)
    return builtin_host(s)


CACHE_SUFFIX = "+cache"  # a front line METHOD@block+cache runs block scope with the step cache
# ... +cache_self / +cache_all: its computed tokens attend to every token (cache_context "self" / "all")
CONTEXT_SUFFIXES = {"+cache_self": "self", "+cache_all": "all"}
FEWER_STEPS = "fewer_steps"  # the dense model at fewer sampling steps (ratio: the fraction of steps left out)


@dataclasses.dataclass(frozen=True)
class FrontLine:
    """A front line ``METHOD[@SCOPE][+cache|+cache_self|+cache_all][/STEPS]``: a method, its scope, the step cache
    (block scope; ``+cache_self`` / ``+cache_all``: with ``cache_context`` ``"self"`` / ``"all"``), and the sampling
    steps it runs (``None``: the reference steps; fewer: a composition with fewer steps)."""

    method: str
    scope: str = "attention"
    cache: bool = False
    steps: Optional[int] = None
    context: str = "retained"  # the step cache's cache_context


def parse_line(line: str) -> FrontLine:
    body, slash, steps = line.partition("/")
    suffix = next((s for s in (*CONTEXT_SUFFIXES, CACHE_SUFFIX) if body.endswith(s)), None)
    cache, context = suffix is not None, CONTEXT_SUFFIXES.get(suffix, "retained")
    if cache:
        body = body[:-len(suffix)]
    method, _, scope = body.partition("@")
    if slash and not (steps.isdigit() and int(steps) >= 1):
        raise ValueError(f"line {line!r}: after '/' give the steps it samples, an int >= 1 (e.g. coredit_merge/20)")
    return FrontLine(method, scope or "attention", cache, int(steps) if slash else None, context)


def line_prune(line: str, s: FrontSettings) -> Dict[str, Any]:
    """The ``prune`` settings of a front line: its method and scope, and the step cache's for a ``+cache`` line."""
    p = parse_line(line)
    out: Dict[str, Any] = dict(method=p.method, scope=p.scope)
    if p.cache:
        out.update(step_cache=True, max_stale=s.max_stale, dense_steps=s.dense_steps, cache_context=p.context)
    return out


def line_method_scope(line: str) -> Tuple[str, str]:
    """A front line (:func:`parse_line`) -> ``(method, scope)``."""
    p = parse_line(line)
    return p.method, p.scope


@functools.lru_cache(maxsize=4096)
def flops_ratio(preset: str, resolution: Tuple[int, int], ratio: float, line: str) -> float:
    """Counted FLOPs of the whole model with a front line at ``ratio`` over dense's (overhead included)."""
    from .flops import count_flops

    if ratio <= 0.0:
        return 1.0
    p = parse_line(line)
    res = count_flops(preset, resolution=resolution, ratios=ratio, method=p.method, scope=p.scope)
    if not p.cache:
        return 1.0 - float(res["total_reduction"])
    from .step_cache import full_context_flops, step_cache_flops

    inp = res["inputs"]
    per_frame, J = inp["latent_frames"] * inp["views"], inp["spec"]["cross_view_neighbours"]
    N, C, extra = inp["tokens_per_frame"], inp["spec"]["hidden"], 0
    for b in res["blocks"]:
        kept, cross_view = b["kept_per_frame"], p.context == "all" and b["cross_view_dense"] > 0
        inputs = 0 if p.context == "retained" else 1 + cross_view
        extra += per_frame * step_cache_flops(N, kept, C, "change", inputs)  # the front's lines: cache_select default
        if p.context != "retained":  # "all": the blocks with a cross-view attention see every neighbour token too
            extra += per_frame * full_context_flops(N, kept, C, 1 + J * cross_view)
    return (res["pruned_total"] + extra) / res["dense_total"]


def run_cost_flops(preset: str, resolution: Tuple[int, int], line: str, step_ratios: Sequence[float],
                   num_steps: Optional[int] = None) -> float:
    """Counted FLOPs of a whole sampling run over the dense run of ``num_steps`` steps (default: as many as the run
    has): the mean over its steps of :func:`flops_ratio` at each step's ratio (the late-step decay, dense steps and
    the step cache's realised skips included; every step runs the same model forwards, so guidance scales both runs
    alike), times its steps over ``num_steps``."""
    mean = sum(flops_ratio(preset, tuple(resolution), round(float(r), 4), line) for r in step_ratios) / len(step_ratios)
    return mean if num_steps is None else mean * len(step_ratios) / num_steps


def mean_fidelity(host: FrontHost, pairs) -> Tuple[float, float]:
    """Mean fidelity PSNR (dB) and SSIM over every frame pair of ``pairs``, an iterable of ``(frames, dense frames)``
    per scene, consumed one scene at a time (the host's ``fidelity``)."""
    got = [host.fidelity(a, b) for frames, ref in pairs for a, b in zip(frames, ref)]
    return sum(p for p, _ in got) / len(got), sum(q for _, q in got) / len(got)


def step_ratios(ctrl, num_steps: int, realized: Optional[Sequence[Tuple[int, int, float]]] = None) -> List[float]:
    """The ratio each of ``num_steps`` sampling steps ran at: the step cache's realised skip fractions (mean over
    its block calls) when given, else the schedule's (mean effective ratio over the blocks in that step's phase)."""
    if realized:
        per: Dict[int, List[float]] = {}
        for step, _, frac in realized:
            per.setdefault(step, []).append(frac)
        return [sum(per[i]) / len(per[i]) if i in per else 0.0 for i in range(num_steps)]
    from .controller import step_phase

    phases = [step_phase(i, num_steps, ctrl.cfg.dense_steps, ctrl.cfg.late_steps) for i in range(num_steps)]
    return [sum(ctrl.effective_ratio(b, ph) for b in range(len(ctrl))) / len(ctrl) for ph in phases]


def step_time_table(path: Optional[str]) -> Dict[str, Tuple[List[float], List[float]]]:
    """``{line: (ratios, time over dense)}`` of one denoising step from a ``tools/bench_step_time.py`` JSON, each
    line starting at ``(0, 1)`` (ratio 0 is the dense step)."""
    if not path:
        return {}
    with open(path) as f:
        data = json.load(f)
    pts: Dict[str, Dict[float, float]] = {}
    for r in data["rows"]:
        if r["line"] != "dense":
            pts.setdefault(r["line"], {0.0: 1.0})[round(float(r["ratio"]), 4)] = float(r["time_ratio"])
    return {m: (sorted(v), [v[k] for k in sorted(v)]) for m, v in pts.items()}


def schedule_step_ratios(ratio: float, steps: int, prune) -> List[float]:
    """The ratio of each of ``steps`` sampling steps at a uniform ``ratio`` under ``prune``'s schedule (dense steps,
    late-step decay): rows written before ``step_ratios`` was recorded."""
    from .controller import phase_ratio, step_phase

    return [phase_ratio(ratio, step_phase(i, steps, prune.dense_steps, prune.late_steps), prune.late_factor)
            for i in range(steps)]


def row_cost_time(row: dict, table: Dict[str, Tuple[List[float], List[float]]], prune,
                  num_steps: int) -> Optional[float]:
    """Measured time of a row's whole sampling run over the dense run at ``num_steps``: each step's time over the
    dense step (interpolated along the row's line in ``table`` at the step's ratio), summed over the row's steps.
    ``None`` where the line was not timed, a step's ratio lies beyond the timed ones, or a step-cache row predates
    ``step_ratios``."""
    k = int(row.get("steps") or num_steps)
    if row["method"] == FEWER_STEPS:
        return k / num_steps
    p = parse_line(row["method"])
    line = row["method"].partition("/")[0]  # a composition METHOD/k is timed per step as METHOD
    if line not in table:
        return None
    per_step = row.get("step_ratios")
    if per_step is None:
        if p.cache:
            return None
        per_step = schedule_step_ratios(float(row["ratio"]), k, prune)
    xs, ys = table[line]
    each = [interpolate(xs, ys, float(v)) for v in per_step]
    if any(e is None for e in each):
        return None
    return sum(each) / num_steps


def bench_time_ratios(path: Optional[str], resolution: Tuple[int, int]) -> Dict[Tuple[str, float], float]:
    """``{(method, ratio): time over dense}`` of the forward pass at ``resolution`` from a bench_attention JSON."""
    if not path:
        return {}
    with open(path) as f:
        data = json.load(f)
    rows = data.get("methods", data.get("rows", data)) if isinstance(data, dict) else data
    out = {}
    want = "x".join(str(v) for v in resolution)
    for r in rows if isinstance(rows, list) else []:
        res = r.get("resolution")
        res = "x".join(str(v) for v in res) if isinstance(res, (list, tuple)) else res
        if res not in (None, want) or r.get("pass", "fwd") not in ("fwd", "forward") or r.get("time_ratio") is None:
            continue
        out[(r["method"], round(float(r["ratio"]), 4))] = float(r["time_ratio"])
    return out


def interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> Optional[float]:
    """Linear interpolation of the line through ``(xs, ys)`` (sorted by ``xs``) at ``x``; ``None`` outside it."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1] if len(pts) == 1 and pts[0][0] == x else None


def family_wins(rows: List[dict], family: Sequence[str], theirs: str, seed: int,
                cost: str = "cost_flops") -> Tuple[int, int]:
    """At each of ``theirs``' points, is the best point of any ``family`` line that costs at most as much at or above
    it? Returns ``(wins, points)``; a point cheaper than every family point is a loss."""
    ours = [(r[cost], r["fidelity_PSNR"]) for r in rows if r["method"] in family and r["seed"] == seed
            and r.get(cost) is not None and r.get("fidelity_PSNR") is not None]
    points = [(r[cost], r["fidelity_PSNR"]) for r in rows if r["method"] == theirs and r["seed"] == seed
              and r.get(cost) is not None and r.get("fidelity_PSNR") is not None]
    wins = 0
    for c, p in points:
        best = max((q for oc, q in ours if oc <= c + 1e-12), default=None)
        wins += int(best is not None and best >= p)
    return wins, len(points)


def equal_cost_wins(rows: List[dict], ours: str, theirs: str, seed: int, cost: str = "time_ratio") -> Tuple[int, int]:
    """At each of ``theirs``' points, is ``ours``' fidelity (interpolated along its line at equal ``cost``) at or
    above? A point outside ours' cost range is decided only where one side dominates: costlier than all of ours, it
    is a win when ours' costliest point is at or above it (cheaper and as faithful); cheaper than all of ours, a
    loss when ours' cheapest point is below it; otherwise it is not counted. Returns (wins, counted points)."""
    def line(m):
        pts = [(r[cost], r["fidelity_PSNR"]) for r in rows if r["method"] == m and r["seed"] == seed
               and r.get(cost) is not None and r.get("fidelity_PSNR") is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    xo, yo = line(ours)
    xt, yt = line(theirs)
    if not xo:
        return 0, 0
    (x_lo, y_lo), (x_hi, y_hi) = min(zip(xo, yo)), max(zip(xo, yo))
    wins = n = 0
    for x, y in zip(xt, yt):
        mine = interpolate(xo, yo, x)
        if mine is not None:
            n += 1
            wins += int(mine >= y)
        elif x > x_hi and y_hi >= y:  # ours is cheaper and at least as faithful
            n, wins = n + 1, wins + 1
        elif x < x_lo and y_lo < y:  # theirs is cheaper and more faithful
            n += 1
    return wins, n


def run_front(s: FrontSettings, progress: bool = True, host: Optional[FrontHost] = None) -> Dict[str, Any]:
    """Run (or resume) the front; returns the payload written to ``front.json``. ``host``: a prebuilt
    :class:`FrontHost` (default: :func:`open_host` of ``s``)."""
    from tqdm import tqdm

    from .plugin import apply as apply_pruning
    from .plugin import remove

    os.makedirs(s.out, exist_ok=True)
    host = host if host is not None else open_host(s)
    model = host.model
    base = dataclasses.replace(host.prune, ratios=0.0, plan=None, cross_view="off", temperature=s.temperature,
                               max_ratio=max(host.prune.max_ratio, *[float(r) for r in s.ratios]))
    rows_path = os.path.join(s.out, "front_rows.jsonl")
    done: Dict[Tuple[str, float, int], dict] = {}
    if os.path.isfile(rows_path):
        for line in open(rows_path):
            r = json.loads(line)
            done[(r["method"], round(r["ratio"], 4), r["seed"])] = r
    times = bench_time_ratios(s.bench_json, s.bench_resolution)

    for seed in [] if s.render_only else s.seeds:
        N = host.num_steps
        todo = [(m, float(r)) for m in s.methods for r in s.ratios if (m, round(float(r), 4), seed) not in done]
        fewer = [int(k) for k in s.fewer_steps if (FEWER_STEPS, round(1 - int(k) / N, 4), seed) not in done]
        if not todo and not fewer:
            continue
        dense = {}
        err_path = os.path.join(s.out, f"attn_error_seed{seed}.json")
        known: Dict[Tuple[str, float], float] = {}
        if os.path.isfile(err_path):  # a resumed run keeps the errors it measured
            with open(err_path) as fh:
                known = {(e["method"], round(e["ratio"], 4)): e["attn_error"] for e in json.load(fh)}
        attention_lines = [m for m in s.methods if parse_line(m) == FrontLine(line_method_scope(m)[0])]
        wanted = list(dict.fromkeys([*attention_lines, *s.probe_methods]))
        missing = [m for m in wanted if any((m, round(float(r), 4)) not in known for r in s.ratios)]
        ctrl = apply_pruning(model, base)
        probe = AttentionErrorProbe(ctrl, missing, [float(r) for r in s.ratios], s.temperature, s.probe_every)
        if missing:
            probe.apply()
        for i in tqdm(range(s.scenes), desc=f"dense seed {seed}", disable=not progress):
            if i == s.probe_scenes:
                probe.remove()  # the remaining dense scenes without the probe
            dense[i] = host.generate(seed, i, ctrl)
        probe.remove()
        remove(model)
        if missing:
            known.update({(m, round(r, 4)): v for (m, r), v in probe.errors().items() if v is not None})
        with open(err_path, "w") as fh:
            json.dump([dict(method=m, ratio=r, seed=seed, attn_error=v) for (m, r), v in known.items()], fh,
                      indent=1)
        for k in tqdm(fewer, desc=f"fewer steps seed {seed}", disable=not progress):
            psnr, ssim = mean_fidelity(host, ((host.generate(seed, i, None, k), dense[i]) for i in range(s.scenes)))
            r = round(1 - k / N, 4)
            row = dict(method=FEWER_STEPS, ratio=r, seed=seed, fidelity_PSNR=psnr, fidelity_SSIM=ssim,
                       attn_error=None, flops_ratio=1.0, steps=k, scope="dense", host=host.label, cost_flops=k / N,
                       step_ratios=[0.0] * k)
            done[(FEWER_STEPS, r, seed)] = row
            with open(rows_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            log.info("fewer steps %d of %d seed %d: %.2f dB", k, N, seed, row["fidelity_PSNR"])
        for m, r in tqdm(todo, desc=f"front seed {seed}", disable=not progress):
            prune = line_prune(m, s)
            k = parse_line(m).steps or N
            ctrl = apply_pruning(model, dataclasses.replace(base, ratios=r, **prune))
            realized: List[Tuple[int, int, float]] = []

            def scenes(ctrl=ctrl, k=k, seed=seed, realized=realized, dense=dense):  # one scene at a time
                for i in range(s.scenes):
                    frames = host.generate(seed, i, ctrl, k)
                    if ctrl.step_cache is not None:
                        realized.extend(ctrl.step_cache.realized)
                    yield frames, dense[i]

            psnr, ssim = mean_fidelity(host, scenes())
            per_step = step_ratios(ctrl, k, realized)
            remove(model)
            row = dict(method=m, ratio=r, seed=seed, fidelity_PSNR=psnr, fidelity_SSIM=ssim,
                       attn_error=known.get((m, round(r, 4))), flops_ratio=flops_ratio(s.preset, (848, 1600), r, m),
                       steps=k, scope=prune["scope"], host=host.label,
                       cost_flops=run_cost_flops(s.preset, (848, 1600), m, per_step, N),
                       step_ratios=[round(float(v), 4) for v in per_step])
            done[(m, round(r, 4), seed)] = row
            with open(rows_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            err = row["attn_error"]
            log.info("%s r %.2f seed %d: %.2f dB, attn error %s", m, r, seed, row["fidelity_PSNR"],
                     "-" if err is None else f"{err:.2f}%")
    fewer_ratios = [round(1 - int(j) / host.num_steps, 4) for j in s.fewer_steps]
    rows = [done[k] for k in sorted(done, key=lambda k: (k[2], s.methods.index(k[0]) if k[0] in s.methods else 99,
                                                         k[1]))
            if k[2] in s.seeds and (k[0] in s.methods and any(math.isclose(k[1], r) for r in s.ratios)
                                    or k[0] == FEWER_STEPS and any(math.isclose(k[1], r) for r in fewer_ratios))]
    for r in rows:  # the measured column comes from the benchmark file given now (re-rendering picks up a new one)
        r["time_ratio"] = times.get((r["method"], round(r["ratio"], 4)))
        if r["time_ratio"] is None:  # a ratio the benchmark skipped: interpolated along the method's measured line
            pts = sorted((k[1], v) for k, v in times.items() if k[0] == r["method"])
            r["time_ratio"] = interpolate([p[0] for p in pts], [p[1] for p in pts], r["ratio"]) if pts else None
    step_times = step_time_table(s.step_time_json)
    for r in rows:
        r["cost_time"] = row_cost_time(r, step_times, base, host.num_steps)
        if r.get("step_ratios") and r["method"] != FEWER_STEPS:  # counted by today's rules (a re-render updates it)
            r["cost_flops"] = run_cost_flops(s.preset, (848, 1600), r["method"], r["step_ratios"], host.num_steps)
    settings = {k: v for k, v in dataclasses.asdict(s).items() if s.host != "builtin" or k not in HOST_FIELDS}
    payload = dict(settings=settings, fields=list(ROW_FIELDS), rows=rows)
    with open(os.path.join(s.out, "front.json"), "w") as fh:
        json.dump(payload, fh, indent=2, default=str)
    plot_front(rows, os.path.join(s.out, "front.png"))
    return payload


def plot_front(rows: List[dict], path: str) -> Optional[str]:
    """Fidelity PSNR against measured time and against counted FLOPs, one line per method (seed mean), the seeds'
    range as a band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")  # one colour per line
    panels = [("cost_flops", "whole sampling run: counted FLOPs / dense run\n(XL 848x1600, every step)"),
              ("cost_time", "whole sampling run: measured time / dense run\n(XL width, per-step times combined)"),
              ("time_ratio", "measured time / dense\n(XL 848x1600, spatial self-attention, forward)"),
              ("flops_ratio", "one forward: counted FLOPs / dense\n(XL 848x1600, whole model, overhead included)")]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in rows)] or panels[2:]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    axes = list(axes[0])
    for ax, (cost, label) in zip(axes, panels):
        for m in methods:
            pts: Dict[float, List[Tuple[float, float]]] = {}
            for r in rows:
                if r["method"] == m and r.get(cost) is not None:
                    pts.setdefault(r["ratio"], []).append((r[cost], r["fidelity_PSNR"]))
            if not pts:
                continue
            xs, mean, lo, hi = [], [], [], []
            for ratio in sorted(pts):
                v = pts[ratio]
                xs.append(sum(p[0] for p in v) / len(v))
                ys = [p[1] for p in v]
                mean.append(sum(ys) / len(ys))
                lo.append(min(ys))
                hi.append(max(ys))
            color = palette(methods.index(m) % palette.N)
            ax.plot(xs, mean, marker="o", label=m, color=color, lw=2.2 if m.startswith("coredit") else 1.4,
                    ls=":" if "@block" in m else "-" if m.startswith("coredit") else "--")
            if m == FEWER_STEPS:  # each point is a step count
                for x_, y_, k_ in zip(xs, mean, sorted({r["steps"] for r in rows if r["method"] == m}, reverse=True)):
                    ax.annotate(f"{k_}", (x_, y_), textcoords="offset points", xytext=(4, -10), fontsize=7)
            ax.fill_between(xs, lo, hi, alpha=0.15, color=color)
        ax.set_xlabel(label)
        ax.set_ylabel("fidelity PSNR to dense (dB, higher is better)")
        ax.grid(alpha=0.3)
        missing = [m for m in methods if not any(r["method"] == m and r.get(cost) is not None for r in rows)]
        if missing:
            ax.text(0.01, 0.01, f"not measured: {', '.join(missing)}", fontsize=7, transform=ax.transAxes)
    handles = {}  # one legend beside the panels, where it hides no line
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=8, loc="center right")
    ratios = ", ".join(f"{x:g}" for x in sorted({r["ratio"] for r in rows if r["method"] != FEWER_STEPS}))
    fig.suptitle(f"Training-free quality against cost (ratios {ratios}; fewer steps labelled by step count; "
                 "band: range over seeds)")
    fig.tight_layout(rect=(0, 0, 0.9 if handles else 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["FRONT_HOSTS", "FRONT_METHODS", "FRONT_RATIOS", "FrontHost", "FrontSettings", "builtin_host",
           "equal_cost_wins", "flops_ratio", "frame_fidelity", "interpolate", "open_host", "run_front"]
