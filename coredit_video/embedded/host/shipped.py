"""The pre-trained embedded host that ships with the project (the stand-in for MagicDrive-V2's stage-3
checkpoint): EMA weights of ``configs/embedded_pretrain.py`` in fp16 with a JSON manifest.

``<name>.pt`` holds ``{parameter name: fp16 tensor}`` (the built-in host's own names); ``<name>.json``
holds the host config, the training run it came from and the file's sha256, which loading checks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
DEFAULT_NAME = "embedded_tiny"
REBUILD_COMMAND = "bash tools/pretrain_host.sh"
# Zero-initialised branches that a host may gain after its weights were trained: loading weights without them
# leaves them at zero (the host computes what it computed before); every other missing weight is an error.
GROWN_BRANCHES = ("view_layout_embedder.",)


class ShippedWeightsError(RuntimeError):
    """The shipped host file is missing, corrupted or made for another host config."""


def shipped_paths(name: str = DEFAULT_NAME, directory: Optional[str] = None):
    """``(weights .pt, manifest .json)`` of a shipped host."""
    d = directory or WEIGHTS_DIR
    return os.path.join(d, f"{name}.pt"), os.path.join(d, f"{name}.json")


def shipped_names(directory: Optional[str] = None) -> tuple:
    """Names of the shipped hosts (``<name>.pt`` with a ``<name>.json`` manifest), sorted."""
    d = directory or WEIGHTS_DIR
    if not os.path.isdir(d):
        return ()
    return tuple(sorted(f[:-3] for f in os.listdir(d)
                        if f.endswith(".pt") and os.path.isfile(os.path.join(d, f[:-3] + ".json"))))


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_host(weights: Dict[str, torch.Tensor], host_config, out_pt: str, meta: Optional[dict] = None) -> dict:
    """Write ``weights`` (fp32 EMA shadow) as fp16 ``out_pt`` plus its manifest; returns the manifest."""
    os.makedirs(os.path.dirname(os.path.abspath(out_pt)), exist_ok=True)
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in sorted(weights.items())}
    tmp = out_pt + ".tmp"
    torch.save(half, tmp)
    os.replace(tmp, out_pt)
    manifest = dict(file=os.path.basename(out_pt), sha256=sha256_of(out_pt), dtype="float16",
                    parameters=int(sum(v.numel() for v in half.values())),
                    host_config=dataclasses.asdict(host_config), **(meta or {}))
    with open(os.path.splitext(out_pt)[0] + ".json", "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def read_shipped(path: str) -> tuple:
    """``(state dict, manifest)`` of a shipped ``.pt`` after checking its sha256 against the manifest."""
    manifest_path = os.path.splitext(path)[0] + ".json"
    for p in (path, manifest_path):
        if not os.path.isfile(p):
            raise ShippedWeightsError(f"pre-trained host file {p} is missing; rebuild it with: {REBUILD_COMMAND}")
    with open(manifest_path) as f:
        manifest = json.load(f)
    digest = sha256_of(path)
    if digest != manifest.get("sha256"):
        raise ShippedWeightsError(
            f"pre-trained host file {path} is corrupted (sha256 {digest[:12]}... != {str(manifest.get('sha256'))[:12]}"
            f"... in {os.path.basename(manifest_path)}); restore it with `git checkout -- {path}` or rebuild it "
            f"with: {REBUILD_COMMAND}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the digest matched, so this is a file written by another torch
        raise ShippedWeightsError(f"cannot read {path} ({e}); rebuild it with: {REBUILD_COMMAND}") from None
    return state, manifest


def load_shipped_host(model: nn.Module, name_or_path: str = DEFAULT_NAME) -> Dict[str, Any]:
    """Load a shipped host into ``model`` (strict, its own dtype); returns the manifest."""
    path = name_or_path if name_or_path.endswith(".pt") else shipped_paths(name_or_path)[0]
    state, manifest = read_shipped(path)
    cfg = getattr(model, "config", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
        want = manifest.get("host_config", {})
        have = dataclasses.asdict(cfg)
        keys = ("hidden", "depth", "control_depth", "num_heads", "mlp_ratio", "in_channels", "patch", "cond_dim",
                "cam_dim", "map_channels", "views")
        if want.get("view_layout_channels"):  # weights with a layout branch need a host that has one
            keys += ("view_layout_channels",)
        diff = [k for k in keys if k in want and list(_seq(want[k])) != list(_seq(have[k]))]
        if diff:
            raise ShippedWeightsError(
                f"{os.path.basename(path)} was trained for another host: " + ", ".join(
                    f"model.{k}={have[k]} vs {want[k]}" for k in diff) + "; use the config it was made with "
                f"({manifest.get('config', 'see its manifest')}) or drop train.init_from")
    grown = load_growing(model, {k: v.float() for k, v in state.items()}, path)
    if grown:
        manifest = dict(manifest, grown=grown)
    return manifest


def load_growing(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> list:
    """``model.load_state_dict(state)``, strict except for the weights of ``GROWN_BRANCHES`` the state lacks
    (they keep their zero initialisation); returns the names of those."""
    res = model.load_state_dict(state, strict=False)
    grown = [k for k in res.missing_keys if k.startswith(GROWN_BRANCHES)]
    missing = [k for k in res.missing_keys if k not in grown]
    if missing or res.unexpected_keys:
        raise ShippedWeightsError(
            f"{source} does not fit this host: {len(missing)} weights missing (e.g. {missing[:3]}), "
            f"{len(res.unexpected_keys)} unexpected (e.g. {res.unexpected_keys[:3]})")
    return grown


def _seq(v):
    return v if isinstance(v, (list, tuple)) else [v]


def load_host_weights(model: nn.Module, source: str) -> str:
    """``train.init_from``: ``"embedded"`` (the shipped host), a shipped ``.pt`` file, or a training
    checkpoint directory (its EMA weights). Returns a short description for the log."""
    if source == "embedded" or source in shipped_names() or source.endswith(".pt"):
        manifest = load_shipped_host(model, DEFAULT_NAME if source == "embedded" else source)
        grown = f"; new zero-initialised: {', '.join(manifest['grown'])}" if manifest.get("grown") else ""
        return f"shipped host {manifest.get('file')} (step {manifest.get('step', '?')}, sha256 ok{grown})"
    if os.path.isdir(source):
        from ...generation import load_weights

        return f"{load_weights(model, source)} weights of {source}"
    raise ShippedWeightsError(f"train.init_from={source!r} is neither 'embedded', a shipped host "
                              f"{shipped_names()}, a .pt file nor a checkpoint directory")
