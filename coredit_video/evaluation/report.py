"""Reports: JSON, a Markdown table shaped like the paper's Table 4, and PNG plots.

Table columns: method, ratio, mAP, NDS, mIoU, PSNR, SSIM, LPIPS, FVD, and the fidelity of a pruned
generation to the dense one from the same noise and conditions (fidelity_PSNR, fidelity_SSIM). mAP / NDS /
mIoU are shown in percent (stored as fractions in the JSON). Reference rows (ground truth through the codec,
the pre-trained host) come first, then the dense row (ratio 0); every pruned row is followed by a ``Δ`` row
against the dense row. A metric that was not computed is '-' with a numbered footnote giving the reason.

A Δ row carries, when the row has ``delta_intervals`` (:mod:`.bootstrap`, ``tools/eval_bev.py --bootstrap``), the
95% paired-bootstrap interval of each difference over scenes, ``-1.93 [-4.10, +0.25] (noise)``: "(noise)" when
the interval contains 0. A note under the table says how many scenes and resamples back the intervals and how
each metric is recomputed; a difference without an interval has a footnote saying why.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

COLUMNS = ("mAP", "NDS", "mIoU", "PSNR", "SSIM", "LPIPS", "FVD", "fidelity_PSNR", "fidelity_SSIM")
PERCENT = ("mAP", "NDS", "mIoU")
DECIMALS = {"mAP": 2, "NDS": 2, "mIoU": 2, "PSNR": 2, "SSIM": 4, "LPIPS": 4, "FVD": 2, "fidelity_PSNR": 2,
            "fidelity_SSIM": 4}
HIGHER_IS_BETTER = {"mAP": True, "NDS": True, "mIoU": True, "PSNR": True, "SSIM": True, "LPIPS": False,
                    "FVD": False, "fidelity_PSNR": True, "fidelity_SSIM": True}


@dataclass
class MethodResult:
    """One row: a method at one pruning ratio.

    metrics: ``{column: value}`` (fractions for mAP / NDS / mIoU); a column absent or ``None`` is skipped.
    skipped: ``{column: reason}`` for the skipped ones (a missing reason reads "not computed").
    per_class_ap / per_camera_psnr / per_class_iou: breakdowns for the plots and the JSON.
    """

    method: str
    ratio: float = 0.0
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    per_class_ap: Dict[str, float] = field(default_factory=dict)
    per_camera_psnr: Dict[str, float] = field(default_factory=dict)
    per_class_iou: Dict[str, float] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    reference: bool = False  # a reference row (ground truth through the codec, the pre-trained host)
    # {column: bootstrap.paired_bootstrap's dict, or {"reason"}}: the interval of this row minus its dense row
    delta_intervals: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.metrics) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown metric column(s) {unknown}; columns are {COLUMNS}")

    def value(self, col: str) -> Optional[float]:
        v = self.metrics.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return float(v)

    @property
    def is_dense(self) -> bool:
        return self.ratio == 0 and not self.reference

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["metrics"] = {c: self.value(c) for c in COLUMNS}
        d["skipped"] = {c: self.skipped.get(c, "not computed") for c in COLUMNS if self.value(c) is None}
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> MethodResult:
        return cls(**{k: d[k] for k in ("method", "ratio", "metrics", "skipped", "per_class_ap", "per_camera_psnr",
                                        "per_class_iou", "extra", "reference", "delta_intervals") if k in d})


def _fmt(col: str, v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    scale = 100.0 if col in PERCENT else 1.0
    return f"{v * scale:.{DECIMALS[col]}f}"


def _ordered(results: Sequence[MethodResult]) -> List[MethodResult]:
    return sorted(results, key=lambda r: (not r.reference, not r.is_dense, r.ratio))


def delta_label(dense_method: str) -> str:
    """Label of a Δ row against the dense row of ``dense_method`` ("dense" is not repeated)."""
    if "dense" in dense_method.lower().replace("-", " ").replace("_", " ").split():
        return f"Δ vs {dense_method}"
    return f"Δ vs {dense_method} dense"


def delta_reference(results: Sequence[MethodResult], row: MethodResult) -> Optional[MethodResult]:
    """The dense row ``row``'s Δ row is taken against (same method name, else the first dense row); ``None`` for a
    dense or reference row, or without a dense row."""
    if row.is_dense or row.reference:
        return None
    dense = {r.method: r for r in _ordered(results) if r.is_dense}
    return dense.get(row.method, next(iter(dense.values()), None))


def _signed(col: str, v: float) -> str:
    return f"{v * (100.0 if col in PERCENT else 1.0):+.{DECIMALS[col]}f}"


def _delta_cell(col: str, d: float, iv: Optional[Dict[str, Any]], notes: Dict[str, int]) -> str:
    cell = _signed(col, d)
    if not iv:
        return cell
    if "reason" in iv:
        n = notes.setdefault(f"Δ {col}: no interval: {iv['reason']}", len(notes) + 1)
        return f"{cell}[^{n}]"
    cell += f" [{_signed(col, iv['low'])}, {_signed(col, iv['high'])}]"
    return cell + " (noise)" if iv.get("noise") else cell


FEW_SCENES = 10  # below this many scenes the note warns that a percentile bootstrap understates the spread


def bootstrap_note(results: Sequence[MethodResult]) -> str:
    """The paragraph under the table: how many scenes and resamples back the Δ intervals, how each metric is
    recomputed, what "(noise)" means, and, for few scenes, how little such an interval says; empty without
    intervals."""
    from .bootstrap import HOW, distinct_resamples

    settings: Dict[tuple, int] = {}
    cols: List[str] = []
    for r in results:
        for c, iv in r.delta_intervals.items():
            if "reason" not in iv:
                key = (iv["scenes"], iv["resamples"], iv["seed"], iv["level"])
                settings[key] = settings.get(key, 0) + iv.get("dropped", 0)
                cols += [c] if c not in cols else []
    if not settings:
        return ""
    parts, caveats = [], []
    for (n, b, seed, _level), dropped in settings.items():
        parts.append(f"{n} scenes, {b} resamples, seed {seed}" +
                     (f", {dropped} non-finite resample differences left out" if dropped else ""))
        if n < FEW_SCENES:
            c = f"Few scenes: {n} scenes allow only {distinct_resamples(n)} distinct resamples"
            c += ", and the interval is about the span of the two scenes' own Δs" if n == 2 else ""
            caveats.append(c + "; a percentile bootstrap over so few scenes understates the uncertainty, so an "
                               "interval without 0 does not establish a difference.")
    level = next(iter(settings))[3]
    how: Dict[str, List[str]] = {}
    for c in (c for c in COLUMNS if c in cols):
        how.setdefault(HOW.get(c, "recomputed on the drawn scenes"), []).append(c)
    return (f"Δ rows: {level:.0%} intervals over scenes from a paired bootstrap ({'; '.join(parts)}): each "
            "resample draws the scenes with replacement, the same draw for both rows, and recomputes every metric "
            "on the drawn scenes as the headline is computed (" +
            "; ".join(f"{' / '.join(cs)}: {h}" for h, cs in how.items()) +
            "). (noise): the interval contains 0, the difference is not told apart from the scene-to-scene "
            "variation." + "".join(" " + c for c in dict.fromkeys(caveats)))


def markdown_table(results: Sequence[MethodResult], deltas: bool = True) -> str:
    """Markdown table (and footnotes) of ``results``; dense first, each pruned row followed by its Δ row (with
    its bootstrap intervals, when the row has ``delta_intervals``, and a note on them under the table)."""
    if not results:
        raise ValueError("no result to report")
    rows = _ordered(results)
    notes: Dict[str, int] = {}
    header = "| method | ratio | " + " | ".join(f"{c} (%)" if c in PERCENT else c for c in COLUMNS) + " |"
    arrows = "| | | " + " | ".join("↑" if HIGHER_IS_BETTER[c] else "↓" for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2), arrows]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.value(c)
            if v is None:
                reason = f"{c}: {r.skipped.get(c, 'not computed')}"
                n = notes.setdefault(reason, len(notes) + 1)
                cells.append(f"-[^{n}]")
            else:
                cells.append(_fmt(c, v))
        ratio = "reference" if r.reference else ("0 (dense)" if r.is_dense else f"{r.ratio:g}")
        lines.append(f"| {r.method} | {ratio} | " + " | ".join(cells) + " |")
        ref = delta_reference(rows, r)
        if deltas and ref is not None:
            dc = []
            for c in COLUMNS:
                a, b = r.value(c), ref.value(c)
                if a is None or b is None or math.isinf(a) or math.isinf(b):
                    dc.append("")
                else:
                    dc.append(_delta_cell(c, a - b, r.delta_intervals.get(c), notes))
            lines.append(f"| {delta_label(ref.method)} | | " + " | ".join(dc) + " |")
    note = bootstrap_note(rows) if deltas else ""
    if note:
        lines += ["", note]
    if notes:
        lines.append("")
        for reason, n in notes.items():
            lines.append(f"[^{n}]: {reason}")
    return "\n".join(lines) + "\n"


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def bars_figure(results: Sequence[MethodResult], attr: str, ylabel: str, title: str, empty_note: str = ""):
    """Grouped bars of the ``attr`` breakdown, one group per key and one bar per row, the legend outside the
    axes (right) so it never covers a bar; ``None`` when matplotlib is missing or no row has the breakdown.
    When every value is 0 (or not finite), ``empty_note`` is written in the axes instead of bars."""
    plt = _plt()
    rows = [r for r in _ordered(results) if getattr(r, attr)]
    if plt is None or not rows:
        return None
    keys: List[str] = []
    for r in rows:
        keys += [k for k in getattr(r, attr) if k not in keys]
    n = len(rows)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) + 2), 4.0))
    values = [[getattr(r, attr).get(k, float("nan")) for k in keys] for r in rows]
    values = [[v if math.isfinite(v) else float("nan") for v in vals] for vals in values]
    if empty_note and not any(v for vals in values for v in vals if math.isfinite(v)):
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_yticks([])
    else:
        for i, (r, vals) in enumerate(zip(rows, values)):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(keys))]
            label = r.method if r.reference else (f"{r.method} (dense)" if r.is_dense else f"{r.method} r={r.ratio:g}")
            ax.bar(xs, vals, width=width, label=label)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _save(fig, path: str) -> Optional[str]:
    if fig is None:
        return None
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps the outside legend in the image
    plt.close(fig)
    return path


def plot_class_ap(results: Sequence[MethodResult], path: str) -> Optional[str]:
    """Grouped bars of per-class AP; ``None`` when matplotlib is missing or no row has per-class AP."""
    return _save(bars_figure(results, "per_class_ap", "AP", "Per-class AP (nuScenes, mean over distance thresholds)",
                             empty_note="every per-class AP is 0: no detection matched a ground-truth box"), path)


def plot_camera_psnr(results: Sequence[MethodResult], path: str) -> Optional[str]:
    """Grouped bars of per-camera PSNR; ``None`` when matplotlib is missing or no row has it."""
    return _save(bars_figure(results, "per_camera_psnr", "PSNR (dB)", "Per-camera PSNR"), path)


def write_report(results: Sequence[MethodResult], out_dir: str, name: str = "eval", protocol=None,
                 plots: bool = True, extra: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Write ``{name}.json``, ``{name}.md`` and (matplotlib permitting) ``{name}_class_ap.png`` /
    ``{name}_camera_psnr.png`` into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths: Dict[str, str] = {}
    payload = {"results": [r.to_dict() for r in _ordered(results)]}
    if protocol is not None:
        payload["protocol"] = protocol.to_dict() if hasattr(protocol, "to_dict") else protocol
    if extra:
        payload["extra"] = extra

    def _clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {str(k): _clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [_clean(v) for v in o]
        return o

    paths["json"] = os.path.join(out_dir, f"{name}.json")
    with open(paths["json"], "w") as f:
        json.dump(_clean(payload), f, indent=2)
    paths["markdown"] = os.path.join(out_dir, f"{name}.md")
    with open(paths["markdown"], "w") as f:
        f.write(markdown_table(results))
    if plots:
        p = plot_class_ap(results, os.path.join(out_dir, f"{name}_class_ap.png"))
        if p:
            paths["class_ap_png"] = p
        p = plot_camera_psnr(results, os.path.join(out_dir, f"{name}_camera_psnr.png"))
        if p:
            paths["camera_psnr_png"] = p
    return paths


def plot_frames(dirs: Dict[str, str], path: str, scenes: int, cameras: Sequence[str]) -> Optional[str]:
    """Frame 0 of every camera, side by side: for each of the first ``scenes`` scenes (by token) the ground truth
    of the first folder, then one strip per entry of ``dirs`` (label -> videos folder in MagicDrive-V2's test
    layout; its ``_gen0`` generation). A folder without the scene is left out. ``None`` without matplotlib."""
    plt = _plt()
    if plt is None:
        return None
    import numpy as np

    from .video_io import find_clips, read_video

    clips = {label: find_clips(os.path.join(d, "gen_video"), cameras) for label, d in dirs.items()}
    gts = find_clips(os.path.join(next(iter(dirs.values())), "gt_video"), cameras)
    rows = []
    for tok in sorted(gts)[:scenes]:
        rows.append((f"{tok[:6]} ground truth", [read_video(gts[tok][-1][c], [0])[0] for c in cameras]))
        rows += [(f"{tok[:6]} {label}", [read_video(found[tok][0][c], [0])[0] for c in cameras])
                 for label, found in clips.items() if 0 in found.get(tok, {})]
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.35 * len(rows)), squeeze=False)
    for ax, (label, frames) in zip(axes[:, 0], rows):
        ax.imshow(np.concatenate(frames, axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Frame 0 of " + ", ".join(cameras), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
