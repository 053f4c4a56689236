"""Paired bootstrap over scenes: a 95% interval for each Δ row of the report (a method minus the dense row).

A resample draws ``n`` of the ``n`` scenes (clip tokens) with replacement, the same draw for both rows of the Δ,
and recomputes each row's metric on the drawn scenes the way the headline is computed; the interval is the 2.5 /
97.5 percentiles of the differences over the resamples (``numpy.percentile``, linear). A Δ whose interval
contains 0 is noise: it is not told apart from the scene-to-scene variation of the set.

The statistics take the multiplicity of every scene in a resample (``{token: count}``; every count 1 for the full
set, which gives the headline number back):

- :class:`FrameMean`: PSNR / SSIM / LPIPS, the mean over the drawn scenes' frames (every frame of every camera),
  per generation, then the mean over generations (PSNR without ``inf`` frames, as ``mean_finite``);
- :class:`PooledIoU`: BEV mIoU, TP / FP / FN of each class summed over the drawn scenes, IoU, mean over classes,
  then over generations (W-CODA's rule, :class:`~.metrics_bev.BEVIoU`);
- :class:`PooledDetection`: mAP / NDS, the nuScenes devkit (:func:`~.metrics_det.evaluate_detection`) on the
  pooled detections and ground truth of the drawn scenes (a scene drawn twice is scored twice, its samples
  renamed), then the mean over generations. Devkit runs are cached per distinct resample.

:func:`video_scene_statistics` collects the per-scene frame values of a videos folder; the per-scene perception
records come from the caller (``tools/eval_bev.py`` for the built-in perception).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
LEVEL = 0.95

Weights = Mapping[str, int]  # scene token -> multiplicity in a resample
Statistic = Callable[[Weights], float]

HOW = {
    "mAP": "nuScenes devkit on the pooled detections of the drawn scenes",
    "NDS": "nuScenes devkit on the pooled detections of the drawn scenes",
    "mIoU": "TP / FP / FN pooled over the drawn scenes",
    "PSNR": "mean over the drawn scenes' frames",
    "SSIM": "mean over the drawn scenes' frames",
    "LPIPS": "mean over the drawn scenes' frames",
}


def distinct_resamples(n: int) -> int:
    """How many different multisets of ``n`` scenes drawn from ``n`` exist: ``C(2n - 1, n)``."""
    return math.comb(2 * n - 1, n) if n > 0 else 0


def resample_counts(n: int, resamples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``[resamples, n]`` multiplicities: row ``b`` counts how often each of the ``n`` scenes is drawn in resample
    ``b`` (``numpy.random.default_rng(seed).integers(0, n, (resamples, n))``)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(resamples), n), idx.reshape(-1)), 1)
    return counts


def no_interval(reason: str) -> Dict[str, Any]:
    """An interval entry that says why there is none."""
    return {"reason": reason}


def paired_bootstrap(stat_a: Statistic, stat_b: Statistic, scenes: Sequence[str],
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     level: float = LEVEL) -> Dict[str, Any]:
    """Interval of ``stat_a - stat_b`` over scenes: both statistics see the same resample each time.

    Returns ``{"delta" (full set), "low", "high", "noise" (low <= 0 <= high), "scenes", "resamples", "seed",
    "level", "dropped" (resamples with a non-finite difference, left out)}``, or ``{"reason"}`` when there is no
    interval (fewer than 2 scenes, no finite difference)."""
    scenes = list(scenes)
    n = len(scenes)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 2:
        return no_interval(f"{n} scene{'s' if n != 1 else ''}: a bootstrap over scenes needs at least 2")
    full = {t: 1 for t in scenes}
    delta = float(stat_a(full) - stat_b(full))
    diffs = np.empty(resamples)
    for b, row in enumerate(resample_counts(n, resamples, seed)):
        w = {t: int(c) for t, c in zip(scenes, row) if c}
        diffs[b] = stat_a(w) - stat_b(w)
    finite = diffs[np.isfinite(diffs)]
    if finite.size == 0:
        return no_interval("no resample gave a finite difference")
    tail = 50.0 * (1.0 - level)
    low, high = (float(x) for x in np.percentile(finite, [tail, 100.0 - tail]))
    return {"delta": delta, "low": low, "high": high, "noise": bool(low <= 0.0 <= high), "scenes": n,
            "resamples": int(resamples), "seed": int(seed), "level": float(level),
            "dropped": int(resamples - finite.size)}


def _key(w: Weights) -> Tuple[Tuple[str, int], ...]:
    return tuple(sorted((t, int(c)) for t, c in w.items() if c))


# ---------------------------------------------------------------------------------------------------- statistics
class FrameMean:
    """Mean of per-frame values over the drawn scenes, per generation, then over generations.

    ``finite_only``: ``inf`` frames (identical images' PSNR) are left out while finite ones exist
    (:func:`~.metrics_video.mean_finite`)."""

    def __init__(self, finite_only: bool = False):
        self.finite_only = finite_only
        self.sums: Dict[int, Dict[str, float]] = {}
        self.counts: Dict[int, Dict[str, int]] = {}
        self.infs: Dict[int, Dict[str, int]] = {}

    def add(self, gen: int, scene: str, values: Sequence[float]) -> None:
        v = np.asarray(values, np.float64).reshape(-1)
        keep = np.isfinite(v) if self.finite_only else np.ones(v.shape, bool)
        self.sums.setdefault(gen, {}).setdefault(scene, 0.0)
        self.sums[gen][scene] += float(v[keep].sum())
        self.counts.setdefault(gen, {}).setdefault(scene, 0)
        self.counts[gen][scene] += int(keep.sum())
        self.infs.setdefault(gen, {}).setdefault(scene, 0)
        self.infs[gen][scene] += int((~keep).sum())

    @property
    def scenes(self) -> List[str]:
        return sorted({t for per in self.counts.values() for t in per})

    def __call__(self, w: Weights) -> float:
        vals = []
        for k in sorted(self.sums):
            s = sum(w.get(t, 0) * v for t, v in self.sums[k].items())
            c = sum(w.get(t, 0) * v for t, v in self.counts[k].items())
            i = sum(w.get(t, 0) * v for t, v in self.infs[k].items())
            vals.append(s / c if c else (float("inf") if i else float("nan")))
        return float(np.mean(vals)) if vals else float("nan")


class PooledIoU:
    """BEV mIoU: per generation, TP / FP / FN of each class summed over the drawn scenes, ``IoU = TP / (TP + FP +
    FN)`` (``absent_score`` for a class absent from both), mean over classes; then the mean over generations."""

    def __init__(self, absent_score: float = 0.0):
        self.absent_score = float(absent_score)
        self.tp: Dict[int, Dict[str, np.ndarray]] = {}
        self.fp: Dict[int, Dict[str, np.ndarray]] = {}
        self.fn: Dict[int, Dict[str, np.ndarray]] = {}

    def add(self, gen: int, scene: str, tp: Sequence[float], fp: Sequence[float], fn: Sequence[float]) -> None:
        for store, v in ((self.tp, tp), (self.fp, fp), (self.fn, fn)):
            v = np.asarray(v, np.float64).reshape(-1)
            per = store.setdefault(gen, {})
            per[scene] = per[scene] + v if scene in per else v.copy()

    @property
    def scenes(self) -> List[str]:
        return sorted({t for per in self.tp.values() for t in per})

    def __call__(self, w: Weights) -> float:
        vals = []
        for k in sorted(self.tp):
            tp, fp, fn = (sum(w.get(t, 0) * v for t, v in store[k].items()) for store in (self.tp, self.fp, self.fn))
            tot = tp + fp + fn
            iou = np.where(tot > 0, tp / np.where(tot > 0, tot, 1.0), self.absent_score)
            vals.append(float(np.mean(iou)))
        return float(np.mean(vals)) if vals else float("nan")


class PooledDetection:
    """mAP / NDS of the drawn scenes' pooled detections (nuScenes devkit), per generation, then the mean.

    ``add(gen, scene, sample_token, predictions, ground_truth, ego_translation)`` records one key frame: global
    box dicts (:func:`~.metrics_det.evaluate_detection`'s format) and the ego position. A scene drawn ``c`` times
    enters ``c`` times, its samples renamed ``<token>~<j>`` for the copies after the first. The devkit run of each
    distinct resample is cached; :meth:`metric` gives the ``mAP`` or ``NDS`` statistic."""

    def __init__(self, config: Any = "detection_cvpr_2019"):
        self.config = config
        self.preds: Dict[int, Dict[str, Dict[str, List[Dict[str, Any]]]]] = {}
        self.gts: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
        self.ego: Dict[str, Dict[str, List[float]]] = {}
        self._cache: Dict[Any, Tuple[float, float]] = {}

    def add(self, gen: int, scene: str, sample_token: str, predictions: Sequence[Mapping[str, Any]],
            ground_truth: Sequence[Mapping[str, Any]], ego_translation: Sequence[float]) -> None:
        self.preds.setdefault(gen, {}).setdefault(scene, {})[sample_token] = [dict(b) for b in predictions]
        self.gts.setdefault(scene, {})[sample_token] = [dict(b) for b in ground_truth]
        self.ego.setdefault(scene, {})[sample_token] = [float(x) for x in ego_translation][:3]
        self._cache.clear()

    @property
    def scenes(self) -> List[str]:
        return sorted({t for per in self.preds.values() for t in per})

    def _evaluate(self, gen: int, w: Weights) -> Tuple[float, float]:
        key = (gen, _key(w))
        if key not in self._cache:
            from .metrics_det import evaluate_detection

            preds, gts, ego = {}, {}, {}
            for scene in sorted(self.preds[gen]):
                for j in range(int(w.get(scene, 0))):
                    for stok, boxes in self.preds[gen][scene].items():
                        name = stok if j == 0 else f"{stok}~{j}"
                        preds[name] = boxes
                        gts[name] = self.gts[scene][stok]
                        ego[name] = self.ego[scene][stok]
            if not preds:
                self._cache[key] = (float("nan"), float("nan"))
            else:
                res = evaluate_detection(preds, sorted(preds), gt=gts, ego_translation=ego, config=self.config)
                self._cache[key] = (res.mAP, res.NDS)
        return self._cache[key]

    def metric(self, name: str) -> Statistic:
        i = {"mAP": 0, "NDS": 1}[name]

        def stat(w: Weights) -> float:
            vals = [self._evaluate(k, w)[i] for k in sorted(self.preds)]
            return float(np.mean(vals)) if vals else float("nan")

        return stat


# ---------------------------------------------------------------------------------------------------- records
def video_scene_statistics(videos_dir: str, protocol, lpips_weights: Optional[str] = None) -> Dict[str, FrameMean]:
    """Per-scene frame values of a videos folder against its ``gt_video`` (as :func:`~.pipeline.video_metrics`
    computes them): ``{"PSNR", "SSIM"(, "LPIPS")}`` statistics."""
    from .metrics_video import MetricSkipped, _match_layout, compare_clips
    from .video_io import find_clips, find_gt_clips, read_video

    gens = find_clips(os.path.join(videos_dir, "gen_video"), protocol.cameras)
    ref = find_gt_clips(os.path.join(videos_dir, "gt_video"), protocol.cameras)
    lpips = None
    if lpips_weights:
        from .metrics_video import LPIPSMetric

        try:
            lpips = LPIPSMetric(lpips_weights)
        except MetricSkipped:
            lpips = None
    stats = {"PSNR": FrameMean(finite_only=True), "SSIM": FrameMean()}
    if lpips is not None:
        stats["LPIPS"] = FrameMean()
    for k in sorted({k for g in gens.values() for k in g if k >= 0}):
        for tok in sorted(gens):
            if k not in gens[tok] or tok not in ref:
                continue
            for cam in protocol.cameras:
                a, b = read_video(gens[tok][k][cam]), read_video(ref[tok][cam])
                if a.shape[1:] != b.shape[1:]:
                    b = _match_layout(b, a.shape[1:3], protocol)
                out = compare_clips(a, b, protocol, lpips=lpips, generation_hw=protocol.generation_hw)
                for key, col in (("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS")):
                    if col in stats:
                        stats[col].add(k, tok, out[key].tolist())
    return stats


def delta_intervals(row: Mapping[str, Any], ref: Mapping[str, Any], headline_row: Mapping[str, Optional[float]],
                    headline_ref: Mapping[str, Optional[float]], columns: Sequence[str],
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = LEVEL,
                    missing: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Intervals of ``row - ref`` for each of ``columns`` whose both headline values are finite.

    ``row`` / ``ref``: ``{column: (statistic, scenes)}`` (a statistic and the scenes it covers); a column absent
    from them gets ``missing[column]`` (or "no per-scene values") as its reason. Each statistic's full-set value
    must equal its headline (relative 1e-6), else the column gets no interval and the reason says so."""
    out: Dict[str, Dict[str, Any]] = {}
    for col in columns:
        a, b = headline_row.get(col), headline_ref.get(col)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        if col not in row or col not in ref:
            out[col] = no_interval((missing or {}).get(col, "no per-scene values"))
            continue
        (sa, scenes_a), (sb, scenes_b) = row[col], ref[col]
        if list(scenes_a) != list(scenes_b):
            out[col] = no_interval(f"the rows cover different scenes ({len(scenes_a)} vs {len(scenes_b)}): "
                                   "generate both from the same data")
            continue
        full = {t: 1 for t in scenes_a}
        bad = [(name, v, h) for name, s, h in (("row", sa, a), ("reference", sb, b))
               for v in [s(full)] if not math.isclose(v, h, rel_tol=1e-6, abs_tol=1e-9)]
        if bad:
            name, v, h = bad[0]
            out[col] = no_interval(f"the per-scene recomputation of the {name} gives {v:.6g}, not the headline "
                                   f"{h:.6g} (a bug: please report it)")
            continue
        out[col] = paired_bootstrap(sa, sb, scenes_a, resamples, seed, level)
    return out
