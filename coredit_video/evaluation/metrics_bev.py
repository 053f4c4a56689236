"""BEV map-segmentation IoU / mIoU (W-CODA's BEVFormer fork, HDMapNet style) and its mean over generations.

IoU (W-CODA ``IntersectionOverUnion`` on label maps ``0 = background, c = class c``; prediction = argmax over
background + classes): true / false positives and false negatives of each class are summed over every sample of
the set, and ``IoU_c = TP / (TP + FP + FN)``; a class absent from both prediction and ground truth over the whole
set scores ``absent_score`` (0 in W-CODA). mIoU is the mean over the foreground classes. This is not the mean of
per-sample IoUs. ``multilabel`` mode takes one boolean raster per class instead (BEVFusion style, the built-in
perception's output) with the same accumulation.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------------- IoU
class BEVIoU:
    """Accumulates per-class TP / FP / FN over a set of samples; :meth:`compute` gives per-class IoU and mIoU.

    ``update(pred, gt)`` takes, for ``mode="argmax"``, int label maps ``[..., H, W]`` (0 = background, 1..C) and,
    for ``mode="multilabel"``, boolean rasters ``[..., C, H, W]``. Leading dims are a batch.
    """

    def __init__(self, classes: Sequence[str] = ("divider", "ped_crossing", "boundary"), mode: str = "argmax",
                 absent_score: float = 0.0):
        if mode not in ("argmax", "multilabel"):
            raise ValueError(f"mode must be 'argmax' or 'multilabel', got {mode!r}")
        self.classes = tuple(classes)
        self.mode = mode
        self.absent_score = float(absent_score)
        self.reset()

    def reset(self) -> None:
        C = len(self.classes)
        self.tp = torch.zeros(C, dtype=torch.float64)
        self.fp = torch.zeros(C, dtype=torch.float64)
        self.fn = torch.zeros(C, dtype=torch.float64)
        self.samples = 0

    def _masks(self, x: Array, what: str) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        C = len(self.classes)
        if self.mode == "argmax":
            if t.is_floating_point() or t.dtype == torch.bool:
                raise TypeError(f"{what}: argmax mode takes integer label maps, got {t.dtype} "
                                "(argmax the class logits first)")
            if t.ndim == 2:
                t = t.unsqueeze(0)
            if int(t.max()) > C or int(t.min()) < 0:
                raise ValueError(f"{what}: labels must be in [0, {C}], got [{int(t.min())}, {int(t.max())}]")
            cls_ids = torch.arange(1, C + 1, dtype=t.dtype).view(C, 1, 1)
            return (t.unsqueeze(-3) == cls_ids).reshape(-1, C, *t.shape[-2:])
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.shape[-3] != C:
            raise ValueError(f"{what}: expected {C} class channels, got shape {tuple(t.shape)}")
        return t.to(torch.bool).reshape(-1, C, *t.shape[-2:])

    def update(self, pred: Array, gt: Array) -> None:
        pm, gm = self._masks(pred, "pred"), self._masks(gt, "gt")
        if pm.shape != gm.shape:
            raise ValueError(f"prediction {tuple(pm.shape)} and ground truth {tuple(gm.shape)} differ in shape")
        self.tp += (pm & gm).sum(dim=(0, 2, 3)).double()
        self.fp += (pm & ~gm).sum(dim=(0, 2, 3)).double()
        self.fn += (~pm & gm).sum(dim=(0, 2, 3)).double()
        self.samples += pm.shape[0]

    def compute(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for c, name in enumerate(self.classes):
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            # W-CODA: absent from ground truth (support = TP + FN) and from prediction (TP + FP) -> absent_score
            if tp + fp + fn == 0:
                out[name] = self.absent_score
            else:
                out[name] = float(tp / (tp + fp + fn))
        out["mIoU"] = float(np.mean([out[n] for n in self.classes]))
        return out


def bev_iou(pred: Array, gt: Array, classes: Sequence[str] = ("divider", "ped_crossing", "boundary"),
            mode: str = "argmax", absent_score: float = 0.0) -> Dict[str, float]:
    """One-shot :class:`BEVIoU` over a batch (accumulated over it, not averaged per sample)."""
    m = BEVIoU(classes, mode, absent_score)
    m.update(pred, gt)
    return m.compute()


def mean_iou_summaries(summaries: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """The mean of each per-class IoU and of mIoU over generations (W-CODA's ``read_map_miou.py``)."""
    if not summaries:
        raise ValueError("no IoU summary to average")
    keys = [k for k in summaries[0] if all(k in s for s in summaries)]
    return {k: float(np.mean([s[k] for s in summaries])) for k in keys}
