"""The quality study (paper Table 5 on the embedded default): CoReDiT against its ablations and a
token-merging baseline, all fine-tuned from the same pre-trained host on the same data and steps.

Every variant of one seed starts from the same weights, trains on the same samples with the same noise,
and generates the same held-out scenes from the same noise; only the pruning mechanism differs:

============================  ===========================================================================
``dense``                     no pruning, fine-tuned like the others: the reference the pruned ones keep
``coredit``                   progressive schedule, coherence selection, reconstruction (the method)
``training_free``             ``coredit``'s final plan on the pre-trained host, no fine-tuning
``random``                    random selection at the same budgets (m-stride kept), progressive schedule
``no_reconstruction``         skipped tokens get no attention output, progressive schedule
``uniform``                   every block at ``coredit``'s mean ratio from the first step, then fine-tuned
``tome``                      token merging (bipartite soft matching) at the same retained-token count
``cross_view_kv``             ``coredit`` plus pruned cross-view attention (neighbours' retained keys/values)
``cross_view_qkv``            ``coredit`` plus pruned cross-view queries, keys and values (reconstructed)
``self_matched``              self-attention pruning only, at the target ratio that saves the total FLOPs
                              ``cross_view_kv`` saves (capped at ``prune.max_ratio``)
============================  ===========================================================================

Fidelity is PSNR / SSIM against a dense generation of the same scene and noise: for a fine-tuned variant
the ``dense`` fine-tune's (what the same fine-tuning gives without pruning), for ``training_free``, the curve
and ``dense`` itself the pre-trained host's (``pretrained_dense``). PSNR / SSIM / mAP / mIoU against the
ground truth.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

log = logging.getLogger("coredit.study")

FINETUNED = ("dense", "coredit", "random", "no_reconstruction", "uniform", "tome", "cross_view_kv", "cross_view_qkv",
             "self_matched")
VARIANTS = ("dense", "coredit", "training_free", "random", "no_reconstruction", "uniform", "tome", "cross_view_kv",
            "cross_view_qkv", "self_matched")
METHOD_OF = {"dense": "coredit", "coredit": "coredit", "training_free": "coredit", "random": "random",
             "no_reconstruction": "no_reconstruction", "uniform": "coredit", "tome": "tome",
             "cross_view_kv": "coredit", "cross_view_qkv": "coredit", "self_matched": "coredit"}
CROSS_VIEW_OF = {"cross_view_kv": "kv", "cross_view_qkv": "qkv"}
FIELDS = ("variant", "seed", "mean_ratio", "self_attention_reduction", "total_reduction", "fidelity_PSNR",
          "fidelity_SSIM", "PSNR", "SSIM", "mAP", "mIoU")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class StudySettings:
    config: str = "configs/tiny_cpu.py"
    eval_config: str = "configs/eval_tiny_cpu.py"
    out: str = "work_dirs/ablate"
    seeds: Sequence[int] = (0, 1)
    world_seed: int = 0
    scenes: int = 4
    seed_offset: int = 1000
    steps: Optional[int] = None  # fine-tuning steps (default: the config's train.steps)
    sampling_steps: Optional[int] = None
    nproc: int = 1
    variants: Sequence[str] = VARIANTS
    curve_ratios: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5)
    curve_methods: Sequence[str] = ("coredit", "tome")
    rule: str = "coredit"  # the CoReDiT method of the coredit-family variants (e.g. coredit_merge)
    extra_options: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
        if ("training_free" in self.variants or "uniform" in self.variants) and "coredit" not in self.variants:
            raise ValueError("variants training_free and uniform take coredit's plan: include coredit")
        if any(v in FINETUNED for v in self.variants if v != "dense") and "dense" not in self.variants:
            raise ValueError("fine-tuned variants are measured against the dense fine-tune's generations: include "
                             "dense")
        if "self_matched" in self.variants and "cross_view_kv" not in self.variants:
            raise ValueError("variant self_matched matches cross_view_kv's FLOPs: include cross_view_kv")
        from .methods import REGISTRY

        if self.rule not in REGISTRY or not self.rule.startswith("coredit"):
            raise ValueError(f"rule must be a CoReDiT method of the table, got {self.rule!r}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.scenes < 1 or self.nproc < 1:
            raise ValueError("scenes and nproc must be >= 1")


# ---------------------------------------------------------------------------------------------- pieces
def method_of(s: StudySettings, variant: str) -> str:
    """The method a variant prunes with: ``s.rule`` for the CoReDiT-family variants, else its baseline's."""
    method = METHOD_OF[variant]
    return s.rule if method == "coredit" and variant != "dense" else method


def train_options(s: StudySettings, variant: str, seed: int, work_dir: str,
                  coredit_plan: Optional[dict] = None, target_ratio: Optional[float] = None) -> Dict[str, Any]:
    """The ``--cfg-options`` of one fine-tuning run (DP only: the token-merging baseline has no SP path)."""
    opts: Dict[str, Any] = {"work_dir": work_dir, "seed": seed, "data.seed": s.world_seed, "parallel.sp_size": 1,
                            "prune.method": method_of(s, variant)}
    if s.steps is not None:
        opts["train.steps"] = s.steps
    if variant == "dense":
        opts.update({"prune.ratios": 0.0, "schedule.target_ratio": 0.0})
    if variant == "uniform":
        if coredit_plan is None:
            raise ValueError("the uniform variant needs coredit's plan (its mean ratio)")
        m = float(coredit_plan["mean_ratio"])
        opts.update({"prune.ratios": m, "schedule.target_ratio": m})
    if variant in CROSS_VIEW_OF:
        opts["prune.cross_view"] = CROSS_VIEW_OF[variant]
    if variant == "self_matched":
        if target_ratio is None:
            raise ValueError("the self_matched variant needs its FLOPs-matched target ratio")
        opts["schedule.target_ratio"] = target_ratio
    opts.update(s.extra_options)
    if variant == "dense":  # the reference stays dense whatever --cfg-options set for the pruned variants
        opts.update({"prune.ratios": 0.0, "schedule.target_ratio": 0.0})
    return opts


def finetune(s: StudySettings, variant: str, seed: int, coredit_plan: Optional[dict] = None,
             target_ratio: Optional[float] = None) -> str:
    """Fine-tune one variant (resumes a finished or interrupted run); returns its work dir."""
    work = os.path.join(s.out, "runs", f"{variant}_seed{seed}")
    if os.path.isfile(os.path.join(work, "plan.json")):
        log.info("%s seed %d: already fine-tuned (%s)", variant, seed, work)
        return work
    opts = train_options(s, variant, seed, work, coredit_plan, target_ratio)
    log.info("%s seed %d: fine-tuning -> %s", variant, seed, work)
    os.makedirs(work, exist_ok=True)
    args = [os.path.join(REPO, "tools", "train.py"), s.config, "--resume", "auto", "--cfg-options",
            *[f"{k}={v}" for k, v in opts.items()]]
    # a fresh process per run (DeepSpeed keeps process-group state that a second run in one process trips on)
    cmd = [sys.executable, *args] if s.nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(s.nproc), *args]
    with open(os.path.join(work, "stdout.log"), "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                             env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    if rc != 0:
        raise RuntimeError(f"fine-tuning {variant} seed {seed} failed (exit {rc}); see {work}/stdout.log")
    return work


def read_plan(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def flops_of(bundle, ratios, bands: int, stride: int, cross_view: str = "off") -> Dict[str, float]:
    """Self-attention and total FLOPs saved by per-block ``ratios`` at the held-out shape (one sample)."""
    from .flops import count_flops

    x = bundle.latents(bundle.collate([bundle.dataset[0]]))
    res = count_flops(bundle.spec, None, views=bundle.spec.views, ratios=list(ratios), bands=bands,
                      hw_tokens=bundle.token_grid(x), latent_frames=x.shape[3], stride=stride, cross_view=cross_view)
    return dict(self_attention_reduction=float(res["self_attention_reduction"]),
                total_reduction=float(res["total_reduction"]))


def matched_target(bundle, target: float, n_blocks: int, bands: int, stride: int, cap: float, delta: float) -> float:
    """The smallest self-attention-only mean ratio on the ``delta`` lattice (uniform estimate) whose total FLOPs
    saving reaches that of ``target`` with cross-view ``kv`` pruning; ``cap`` if none does."""
    want = flops_of(bundle, [target] * n_blocks, bands, stride, "kv")["total_reduction"]
    r = target
    while r < cap - 1e-9:
        if flops_of(bundle, [r] * n_blocks, bands, stride)["total_reduction"] >= want - 1e-9:
            return round(r, 9)
        r = min(cap, r + delta)
    return cap


def uniform_plan(ctrl_plan: dict, ratio: float) -> dict:
    """A plan with every block at ``ratio`` and ``ctrl_plan``'s layout."""
    out = dict(ctrl_plan)
    out["ratios"] = [float(ratio)] * len(ctrl_plan["ratios"])
    out["mean_ratio"] = float(ratio)
    return out


def summarize(rows: List[dict], keys: Sequence[str] = FIELDS[2:]) -> List[dict]:
    """Mean and spread (min, max over seeds) of each metric per variant, in first-seen order."""
    out = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == v]
        agg = {"variant": v, "seeds": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None and math.isfinite(r[k])]
            agg[k] = (sum(vals) / len(vals), min(vals), max(vals)) if vals else None
        out.append(agg)
    return out


def markdown(rows: List[dict], curve: List[dict], settings: StudySettings, plots: Dict[str, str]) -> str:
    pct = {"self_attention_reduction", "total_reduction", "mAP", "mIoU"}

    def cell(k, t):
        if t is None:
            return "-"
        m, lo, hi = t
        s = 100.0 if k in pct else 1.0
        d = 2 if k not in ("SSIM", "fidelity_SSIM") else 4
        return f"{m * s:.{d}f} ({lo * s:.{d}f}..{hi * s:.{d}f})" if hi > lo else f"{m * s:.{d}f}"

    cols = ("mean_ratio", "self_attention_reduction", "total_reduction", "fidelity_PSNR", "fidelity_SSIM", "PSNR",
            "SSIM", "mAP", "mIoU")
    heads = ("mean r", "self-attn FLOPs -%", "total FLOPs -%", "fidelity PSNR", "fidelity SSIM", "PSNR", "SSIM",
             "mAP (%)", "mIoU (%)")
    ref_of = {r["variant"]: r.get("fidelity_reference") or "-" for r in rows}
    lines = [f"Seeds {list(settings.seeds)}, world seed {settings.world_seed}, {settings.scenes} held-out scenes; "
             "mean over seeds with (min..max). Fidelity is to the dense generation named in \"fidelity to\".", "",
             "| variant | fidelity to | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for agg in summarize(rows):
        lines.append(f"| {agg['variant']} | {ref_of[agg['variant']]} | "
                     + " | ".join(cell(c, agg.get(c)) for c in cols) + " |")
    if curve:
        lines += ["", "Training-free quality against the ratio (uniform ratio in every block, pre-trained host):", "",
                  "| method | ratio | self-attn FLOPs -% | fidelity PSNR | fidelity SSIM | mAP (%) | mIoU (%) |",
                  "|---|---|---|---|---|---|---|"]
        for r in curve:
            lines.append(f"| {r['method']} | {r['ratio']:.2f} | {100 * r['self_attention_reduction']:.1f} | "
                         f"{r['fidelity_PSNR']:.2f} | {r['fidelity_SSIM']:.4f} | {100 * r['mAP']:.2f} | "
                         f"{100 * r['mIoU']:.2f} |")
    for name, p in plots.items():
        lines += ["", f"![{name}]({os.path.basename(p)})"]
    return "\n".join(lines) + "\n"


def plot_curve(curve: List[dict], reference: dict, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("fidelity_PSNR", "mAP", "mIoU"),
                              ("fidelity PSNR to dense (dB)", "perception mAP", "BEV mIoU")):
        for method in dict.fromkeys(r["method"] for r in curve):
            rs = sorted((r for r in curve if r["method"] == method), key=lambda r: r["ratio"])
            ax.plot([r["ratio"] for r in rs], [r[key] for r in rs], marker="o", label=method)
        if key in reference and reference[key] is not None and math.isfinite(reference[key]):
            ax.axhline(reference[key], color="gray", ls="--", lw=1, label="dense (pre-trained)")
        ax.set_xlabel("pruning ratio r (every block)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Training-free: quality against the pruning ratio", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the study
def run_study(s: StudySettings, progress: bool = True) -> Dict[str, Any]:
    """Run (or resume) the whole study; writes ``quality.json`` / ``quality.md`` / plots into ``s.out``."""
    from mmengine.config import Config

    from .evaluation.pipeline import evaluate_run
    from .evaluation.protocol import protocol_from_config
    from .generation import generate, load_weights
    from .embedded.perception.evaluate import synthetic_scorer
    from .training.checkpoint import checkpoint_dir, list_checkpoints
    from .training.config import build_train_config
    from .training.hosts import build_host_bundle, held_out_data

    os.makedirs(s.out, exist_ok=True)
    cfg = Config.fromfile(s.config)
    cfg.merge_from_dict({"data.seed": s.world_seed, **s.extra_options})
    tcfg = build_train_config(cfg)
    rflow = tcfg.rflow if s.sampling_steps is None else \
        dataclasses.replace(tcfg.rflow, num_sampling_steps=s.sampling_steps)
    protocol = protocol_from_config(s.eval_config)
    held = held_out_data(tcfg.data, s.scenes, s.seed_offset)
    init = tcfg.train.init_from or "embedded"

    def bundle_with(weights: str):
        b = build_host_bundle(tcfg.model, held, tcfg.seed)
        if weights == "pretrained":
            b.init_weights(b.model, init)
        else:
            load_weights(b.model, list_checkpoints(checkpoint_dir(weights))[-1][1])
        return b

    def videos(name: str, seed: int, weights: str, plan: Optional[str], method: str, cross_view: str = "off") -> str:
        out = os.path.join(s.out, "videos", f"seed{seed}", name)
        if os.path.isfile(os.path.join(out, "generation.json")):
            return out
        prune = dataclasses.replace(tcfg.prune, method=method, ratios=0.0, plan=None, cross_view=cross_view)
        b = bundle_with(weights)
        generate(b, out, rflow, prune_cfg=prune, plan=plan, seed=seed, codec=b.codec, progress=progress,
                 meta=dict(variant=name, weights=weights))
        return out

    def score(name: str, folder: str, ref: Optional[str], dataset) -> dict:
        scorer = synthetic_scorer(dataset, protocol, progress=progress)
        r = evaluate_run(name, 0.0, folder, protocol, perception=scorer, fidelity_to=ref)
        return {k: r.metrics.get(k) for k in ("fidelity_PSNR", "fidelity_SSIM", "PSNR", "SSIM", "mAP", "mIoU")}

    probe = build_host_bundle(tcfg.model, held, tcfg.seed)
    dataset = probe.dataset
    bands, stride = tcfg.prune.bands or 1, tcfg.prune.stride
    n_blocks = probe.model.config.depth + probe.model.config.control_depth  # base + control spatial blocks
    rows: List[dict] = []
    reference: Dict[str, Any] = {}
    for seed in s.seeds:
        dense_dir = videos("pretrained_dense", seed, "pretrained", None, "coredit")
        ref = score("pretrained_dense", dense_dir, None, dataset)
        rows.append(dict(variant="pretrained_dense", seed=seed, mean_ratio=0.0, self_attention_reduction=0.0,
                         total_reduction=0.0, **ref, fidelity_reference=None))
        if seed == s.seeds[0]:
            reference = ref
        plans: Dict[str, dict] = {}
        work: Dict[str, str] = {}
        matched = None
        if "self_matched" in s.variants:
            matched = matched_target(probe, tcfg.schedule.target_ratio, n_blocks, bands, stride,
                                     tcfg.prune.max_ratio, tcfg.schedule.delta_ratio)
        ordered = [v for v in VARIANTS if v in s.variants]  # dense, then coredit (uniform takes its plan), ...
        for v in [v for v in ordered if v in FINETUNED]:
            work[v] = finetune(s, v, seed, plans.get("coredit"), matched)
            plans[v] = read_plan(os.path.join(work[v], "plan.json"))
        folders = {"pretrained_dense": dense_dir}
        for v in ordered:  # dense first: the fine-tuned variants' fidelity reference
            plan = plans["coredit"] if v == "training_free" else plans[v]
            plan_path = os.path.join(work["coredit"] if v == "training_free" else work[v], "plan.json")
            folder = videos(v, seed, "pretrained" if v == "training_free" else work[v], plan_path, method_of(s, v),
                            CROSS_VIEW_OF.get(v, "off"))
            folders[v] = folder
            ref_name = "dense" if v in FINETUNED and v != "dense" else "pretrained_dense"
            rows.append(dict(variant=v, seed=seed, mean_ratio=float(plan["mean_ratio"]),
                             **flops_of(probe, plan["ratios"], bands, stride, CROSS_VIEW_OF.get(v, "off")),
                             **score(v, folder, folders[ref_name], dataset), fidelity_reference=ref_name))
            log.info("%s seed %d: %s", v, seed, {k: rows[-1][k] for k in FIELDS[2:]})
    curve: List[dict] = []
    seed0 = s.seeds[0]
    dense_dir = os.path.join(s.out, "videos", f"seed{seed0}", "pretrained_dense")
    base_plan = read_plan(os.path.join(s.out, "runs", f"coredit_seed{seed0}", "plan.json")) if \
        "coredit" in s.variants else None
    for method in s.curve_methods if base_plan else ():
        for r in s.curve_ratios:
            plan = uniform_plan(base_plan, r)
            name = f"curve_{method}_r{r:.2f}"
            plan_path = os.path.join(s.out, "plans", f"{name}.json")
            os.makedirs(os.path.dirname(plan_path), exist_ok=True)
            with open(plan_path, "w") as f:
                json.dump(plan, f, indent=2)
            folder = videos(name, seed0, "pretrained", plan_path, method)
            curve.append(dict(method=method, ratio=float(r), seed=seed0,
                              **flops_of(probe, plan["ratios"], bands, stride),
                              **score(name, folder, dense_dir, dataset)))
    plots: Dict[str, str] = {}
    if curve:
        p = plot_curve(curve, reference, os.path.join(s.out, "quality_vs_ratio.png"))
        if p:
            plots["quality against the pruning ratio"] = p
    payload = dict(settings=dataclasses.asdict(s), results=rows, curve=curve)
    with open(os.path.join(s.out, "quality.json"), "w") as f:
        json.dump(payload, f, indent=2, default=str)
    with open(os.path.join(s.out, "quality.md"), "w") as f:
        f.write(markdown(rows, curve, s, plots))
    return payload


__all__ = ["FIELDS", "StudySettings", "VARIANTS", "run_study", "summarize", "train_options", "uniform_plan"]
