"""Generate multi-view videos with a (pruned or dense) host and write them in MagicDrive-V2's test
layout::

    <out>/gen_video/{token}_gen{k}/{token}_{CAM}.mp4
    <out>/gt_video/{token}/{token}_{CAM}.mp4

Embedded default: the built-in host from a training config and checkpoint, the synthetic dataset
(a held-out seed) and the toy codec. Sampling is MagicDrive-V2's rectified flow (30 steps, CFG) with
``c * r_l`` in the last ``late_steps`` steps.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Optional

import numpy as np
import torch

from . import apply as apply_pruning
from .rflow import RFlowConfig
from .sampling import sample

log = logging.getLogger("coredit.generate")


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``[3, T, H, W]`` in [-1, 1] -> uint8 ``[T, H, W, 3]``."""
    v = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).contiguous().numpy()


def load_weights(model: torch.nn.Module, ckpt_dir: str, use_ema: bool = True) -> str:
    """Load a training checkpoint (``<work_dir>/checkpoints/step_N``) into ``model``; EMA by default."""
    trainer = os.path.join(ckpt_dir, "trainer.pt")
    if not os.path.isfile(trainer):
        raise FileNotFoundError(f"{ckpt_dir} is not a training checkpoint (no trainer.pt); pass "
                                "<work_dir>/checkpoints/step_N or --ckpt auto")
    if use_ema:
        shadow = torch.load(trainer, map_location="cpu", weights_only=False)["ema"]["shadow"]
        missing = model.load_state_dict({k: v for k, v in shadow.items()}, strict=False).missing_keys
        if missing:
            raise KeyError(f"EMA lacks {len(missing)} weights of the model, e.g. {missing[:3]}")
        return "ema"
    states = torch.load(os.path.join(ckpt_dir, "engine", "mp_rank_00_model_states.pt"), map_location="cpu",
                        weights_only=False)["module"]
    model.load_state_dict(states, strict=True)
    return "model"


@torch.no_grad()
def write_codec_reference(bundle, out_dir: str, codec, indices=None, write_gt: bool = True,
                          fps: float = 12.0) -> dict:
    """The upper bound of any generation: every sample's ground truth through the codec
    (``decode(encode(video))``), written as ``gen_video/{token}_gen0`` beside ``gt_video``."""
    from .evaluation.video_io import write_video

    ds = bundle.dataset
    indices = list(range(len(ds))) if indices is None else list(indices)
    for i in indices:
        item = ds[i]
        token, cams = item["token"], item["camera_names"]
        video = codec.decode(codec.encode(item["video"][None]))[0]
        for c, cam in enumerate(cams):
            write_video(os.path.join(out_dir, "gen_video", f"{token}_gen0", f"{token}_{cam}.mp4"),
                        to_uint8_frames(video[c]), fps=fps)
            if write_gt:
                write_video(os.path.join(out_dir, "gt_video", token, f"{token}_{cam}.mp4"),
                            to_uint8_frames(item["video"][c]), fps=fps)
    summary = dict(out_dir=out_dir, samples=len(indices), generations=1, pruned=False, plan=None, mean_ratio=0.0,
                   weights="ground truth through the codec")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "generation.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


@torch.no_grad()
def generate(bundle, out_dir: str, rflow: RFlowConfig, prune_cfg=None, plan: Optional[str] = None,
             gens: int = 1, seed: int = 0, indices=None, write_gt: bool = True, fps: float = 12.0,
             codec=None, progress: bool = True, meta: Optional[dict] = None) -> dict:
    """Sample every dataset item ``gens`` times; ``plan=None`` runs dense. The unconditional input of
    classifier-free guidance is the bundle's ``drop_condition`` (what training drops with probability
    ``train.cond_drop``); without one, no guidance. Writes and returns a summary dict (plus ``meta``)."""
    from tqdm import tqdm

    from .evaluation.video_io import write_video

    model = bundle.model.eval()
    ctrl = None
    if plan is not None:
        ctrl = apply_pruning(model, prune_cfg, plan=plan)
    ds = bundle.dataset
    indices = list(range(len(ds))) if indices is None else list(indices)
    written = []
    for i in tqdm(indices, desc="generate", disable=not progress, file=sys.stderr):
        item = ds[i]
        batch = bundle.collate([item])
        x0 = bundle.latents(batch)
        h, w, f = (v[0].item() for v in bundle.frame_info(batch))
        token, cams = item["token"], item["camera_names"]
        if write_gt:
            for c, cam in enumerate(cams):
                p = os.path.join(out_dir, "gt_video", token, f"{token}_{cam}.mp4")
                write_video(p, to_uint8_frames(item["video"][c]), fps=fps)
        for k in range(gens):
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(item.get("index", i)) * 101 + k)
            noise = torch.randn(x0.shape, generator=g)
            null = None
            if bundle.drop_condition is not None:
                null = bundle.drop_condition(batch, torch.ones(x0.shape[0], dtype=torch.bool))
            z = sample(model, bundle.forward, noise, batch, null, rflow, h, w, int(f), controller=ctrl)
            video = codec.decode(z)[0] if codec is not None else z[0]
            for c, cam in enumerate(cams):
                p = os.path.join(out_dir, "gen_video", f"{token}_gen{k}", f"{token}_{cam}.mp4")
                write_video(p, to_uint8_frames(video[c]), fps=fps)
                written.append(p)
    if ctrl is not None:
        from .plugin import remove

        remove(model)
    summary = dict(out_dir=out_dir, samples=len(indices), generations=gens, videos=len(written),
                   pruned=plan is not None, plan=plan, mean_ratio=ctrl.mean_ratio if ctrl else 0.0, **(meta or {}))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "generation.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
