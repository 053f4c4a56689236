"""The trainer's :class:`~coredit_video.host_bundle.HostBundle` for the built-in host on the synthetic world
(``model.type="builtin"``): model, forward, dataset, codec latents, FLOPs spec, condition dropout, shipped weights."""
from __future__ import annotations

from typing import Dict

import torch

from ...flops import ModelSpec
from ...host_bundle import HostBundle
from ..codec import ToyCodec
from ..world import SyntheticDrivingDataset, collate
from .mv_stdit import MultiViewSTDiT, host_config
from .shipped import load_host_weights


def builtin_forward(model, x_t, t, batch):
    return model(x_t, t, batch["y"], batch.get("cams"), batch.get("bev_map"), batch.get("view_layout"))


def builtin_spec(model, cond_tokens: int) -> ModelSpec:
    c = model.config
    return ModelSpec(hidden=c.hidden, depth=c.depth, control_depth=c.control_depth, num_heads=c.num_heads,
                     mlp_ratio=c.mlp_ratio, patch=tuple(c.patch), in_channels=c.in_channels,
                     out_channels=c.in_channels, cond_tokens=cond_tokens, caption_channels=c.cond_dim,
                     cross_view_mode="concat", views=c.views, control_cross_view=False, x_control_embedder=False,
                     layout_channels=c.view_layout_channels)


def synthetic_dataset(data_cfg: Dict):
    """``(SyntheticDrivingDataset, codec settings)`` from a ``data`` config section (left unchanged)."""
    data_cfg = dict(data_cfg)
    codec_cfg = dict(data_cfg.pop("codec", {}) or {})
    data_type = data_cfg.pop("type", "synthetic")
    if data_type != "synthetic":
        raise ValueError(f"data.type={data_type!r}: the built-in host trains on data.type='synthetic'")
    return SyntheticDrivingDataset(**data_cfg), codec_cfg


def build_builtin(model_cfg: Dict, data_cfg: Dict, seed: int) -> HostBundle:
    model_cfg = dict(model_cfg)
    model_cfg.pop("type", None)
    preset = model_cfg.pop("preset", "tiny")
    dataset, codec_cfg = synthetic_dataset(data_cfg)
    codec = ToyCodec(**codec_cfg)
    probe = dataset[0]
    cfg = host_config(preset, **model_cfg)
    if cfg.in_channels != codec.latent_channels:
        raise ValueError(f"model.in_channels={cfg.in_channels} must equal data.codec latent_channels="
                         f"{codec.latent_channels}")
    if cfg.cond_dim != probe["y"].shape[-1]:
        raise ValueError(
            f"model.cond_dim={cfg.cond_dim} must equal the dataset's condition width {probe['y'].shape[-1]}")
    if cfg.view_layout_channels and cfg.view_layout_channels != probe["view_layout"].shape[1]:
        raise ValueError(f"model.view_layout_channels={cfg.view_layout_channels} must equal the dataset's "
                         f"{probe['view_layout'].shape[1]} (or be 0: no layout input)")
    if cfg.views != probe["video"].shape[0]:
        raise ValueError(f"model.views={cfg.views} must equal data.views={probe['video'].shape[0]}")
    torch.manual_seed(seed)
    model = MultiViewSTDiT(cfg)

    def latents(batch):
        with torch.no_grad():
            return codec.encode(batch["video"])

    def frame_info(batch):
        B, _, _, T, H, W = batch["video"].shape
        return (torch.full((B,), float(H)), torch.full((B,), float(W)), torch.full((B,), float(T)))

    def token_grid(x0):
        return model.token_grid(x0)

    def drop_condition(batch, drop):
        """Zero the box/text tokens, the map and the view layout of the samples in ``drop`` (for
        classifier-free guidance)."""
        out = dict(batch)
        keep = (~drop).to(batch["y"].dtype)
        out["y"] = batch["y"] * keep.view(-1, 1, 1)
        out["bev_map"] = batch["bev_map"] * keep.view(-1, 1, 1, 1)
        if "view_layout" in batch:
            out["view_layout"] = batch["view_layout"] * keep.view(-1, 1, 1, 1, 1, 1)
        return out

    return HostBundle(model=model, forward=builtin_forward, dataset=dataset, collate=collate, latents=latents,
                      frame_info=frame_info, spec=builtin_spec(model, cond_tokens=probe["y"].shape[0] + 1),
                      token_grid=token_grid, codec=codec, drop_condition=drop_condition,
                      init_weights=load_host_weights)


