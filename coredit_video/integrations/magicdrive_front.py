"""The quality-vs-cost front (:mod:`coredit_video.front`) on a MagicDrive-V2 checkpoint.

:func:`magicdrive_front_host` is the front's host seam (:class:`~coredit_video.front.FrontHost`) for
``FrontSettings.host = "magicdrive_v2"``: the user's MagicDrive-V2 config and checkpoint, sampled by the
``coredit_rflow`` scheduler (:mod:`.magicdrive_rflow`, MagicDrive-V2's ``RFLOW`` that tells the CoReDiT controller
each step), pruned through the ``magicdrive_v2`` adapter. Everything MagicDrive-V2 is built by MagicDrive-V2's own
registries from the config, as its ``scripts/test_magicdrive.py`` builds it (nothing of it is copied):

- the model: ``build_module(cfg.model, MODELS, ...)`` with ``from_pretrained`` = the checkpoint (what that script's
  ``--ckpt-path`` does; MagicDrive-V2's own loader reads it), one process (no sequence parallelism);
- the text encoder and the VAE: ``cfg.text_encoder`` / ``cfg.vae``;
- the scheduler: ``cfg.scheduler`` with its type forced to ``coredit_rflow``, its ``num_sampling_steps`` the
  front's; the pruning layout (grids, stride, bands, late steps, cap) is ``cfg.scheduler.prune`` without its
  ``plan`` (each front line sets a uniform ratio, method and scope);
- the held-out scenes: the config's validation set (``merge_dataset_cfg`` + ``build_module(..., DATASETS)`` as the
  script builds it; ``--scenes`` clips spread evenly over it), each one collated by MagicDrive-V2's
  ``collate_fn_default`` and turned into sampler inputs with its helpers the way the script does
  (``collate_bboxes_to_maxlen``, ``add_box_latent``, ``add_null_condition``, ``move_to``).

Every generation of scene ``i`` under seed ``s`` starts from the same latent noise and the same box latents (both
drawn from generators seeded by ``(s, i)``), so the dense reference and each front line differ only by the pruning.

Fidelity: with a VAE, each view's decoded frames (uint8, ``cut_length`` frames as the script cuts them, at the
generated resolution) against the dense ones: PSNR (peak 255, clamped at 100 dB) and SSIM, as on the built-in host.
Without one (or with ``FrontSettings.latents``), each view's latents ``[C, T, H, W]``, read as ``T`` images of ``C``
channels: PSNR with the peak = the dense latents' range (``max - min`` of that view), clamped at 100 dB, and SSIM with
the same data range (an 11-pixel window, smaller on smaller latents). Latent dB are not frame dB: compare lines with
each other on one host, not with a decoded front.

The pieces a small test cannot build (T5, the VAE, nuScenes) can be given instead: ``text_encoder``, ``vae``,
``conditions`` (collated batches, as MagicDrive-V2's dataloader yields them) and, without a VAE, ``latent_shape``.
Paths inside the MagicDrive-V2 config resolve from the working directory (``tools/front.py`` runs from the
checkout, as MagicDrive-V2's scripts do).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

HOST = "magicdrive_v2"


@dataclasses.dataclass
class SceneCondition:
    """One held-out scene as ``scripts/test_magicdrive.py`` has it before sampling: the prompts, the model
    arguments (on the device, in the dtype) and the boxes in ``[B, T, NC, ...]`` layout, without box latents."""

    prompts: List[str]
    args: Dict[str, Any]
    bbox: Optional[Dict[str, torch.Tensor]]
    B: int
    T: int
    NC: int
    pixel_size: Tuple[int, int, int]  # (T, H, W) of the frames


def batch_condition(batch: Dict[str, Any], device, dtype, mv_order_map=None, t_order_map=None) -> SceneCondition:
    """A collated MagicDrive-V2 batch (batch size 1) -> its :class:`SceneCondition`, with MagicDrive-V2's own
    helpers, in the order its ``scripts/test_magicdrive.py`` applies them."""
    from einops import rearrange, repeat
    from magicdrivedit.utils.misc import collate_bboxes_to_maxlen, move_to

    if batch.get("pixel_values") is not None:
        B, T, NC = batch["pixel_values"].shape[:3]
        hw = tuple(batch["pixel_values"].shape[-2:])
    else:  # ignore_ori_imgs / drop_ori_imgs: only the shape is loaded
        shape = batch["pixel_values_shape"][0].tolist()
        B, (T, NC), hw = 1, shape[:2], tuple(shape[-2:])
    if B != 1:
        raise ValueError(f"the front samples one clip at a time (batch size 1, as MagicDrive-V2's test script), "
                         f"got {B}")
    prompts = batch["captions"][0]  # B prompts: the first frame's caption
    bbox = collate_bboxes_to_maxlen([b.data for b in batch["bboxes_3d_data"]], device, dtype, NC, T)
    args = dict(
        maps=batch["bev_map_with_aux"].to(device, dtype),
        cams=rearrange(batch["camera_param"].to(device, dtype), "B T NC ... -> (B NC) T 1 ..."),
        rel_pos=repeat(batch["frame_emb"].to(device, dtype), "B T ... -> (B NC) T 1 ...", NC=NC),
        fps=batch["fps"], height=batch["height"], width=batch["width"], num_frames=batch["num_frames"],
    )
    args = move_to(args, device=device, dtype=dtype)
    args["mv_order_map"] = mv_order_map
    args["t_order_map"] = t_order_map
    return SceneCondition(list(prompts), args, bbox, int(B), int(T), int(NC), (int(T), int(hw[0]), int(hw[1])))


def latent_fidelity(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """PSNR (clamped at 100 dB) and SSIM of one view's latents ``a`` ``[C, T, H, W]`` to the dense ``b``, read as
    ``T`` images of ``C`` channels, with the data range = ``b.max() - b.min()``."""
    from ..evaluation.metrics_video import psnr, ssim

    peak = float(b.max() - b.min()) or 1.0
    x, y = a.permute(1, 2, 3, 0), b.permute(1, 2, 3, 0)
    window = min(11, y.shape[1], y.shape[2])
    window -= 1 - window % 2  # odd
    return (float(psnr(x, y, peak).clamp_max(100.0).mean()),
            float(ssim(x, y, peak, window=window).mean()))


def spread_indices(n_items: int, n: int) -> List[int]:
    """``n`` indices spread evenly over ``range(n_items)`` (the first is 0)."""
    if n > n_items:
        raise ValueError(f"--scenes {n}: the validation set has {n_items} clips")
    return [k * n_items // n for k in range(n)]


class _ValidationScenes:
    """The config's validation set as ``scripts/test_magicdrive.py`` builds it, read one clip at a time."""

    def __init__(self, cfg, n: int):
        from magicdrivedit.registry import DATASETS, build_module
        from magicdrivedit.utils.config_utils import merge_dataset_cfg

        if cfg.get("num_frames") is None:
            raise ValueError("the front samples one clip length: set num_frames (and data_cfg_name) in the config")
        _, dataset = merge_dataset_cfg(cfg, cfg.data_cfg_name, cfg.get("dataset_cfg_overrides", []), cfg.num_frames)
        dataset["img_collate_param"]["is_train"] = False
        dataset["drop_ori_imgs"] = True  # the front needs the frames' size only
        self.dataset = build_module(dataset, DATASETS)
        self.indices = spread_indices(len(self.dataset), n)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i: int):
        from magicdrivedit.datasets.dataloader import collate_fn_default

        try:  # as the script registers it: DataContainers pass the collate as they are
            from mmcv.parallel import DataContainer

            torch.utils.data._utils.collate.default_collate_fn_map.setdefault(
                DataContainer, lambda batch, *, collate_fn_map=None: batch)
        except ImportError:
            pass
        for index in range(self.indices[i], len(self.dataset)):  # a clip the dataset drops (None): the next one
            item = self.dataset[index]
            if item is not None:
                return collate_fn_default([item])
        raise ValueError(f"the validation set has no clip at or after index {self.indices[i]}")


class MagicDriveFront:
    """Samples held-out scenes with a MagicDrive-V2 model and the ``coredit_rflow`` scheduler (the front's
    ``generate``); see the module doc."""

    def __init__(self, cfg, model, scheduler, text_encoder, conditions: Sequence[Any], vae=None,
                 latent_shape: Optional[Sequence[int]] = None, decode: bool = True, device="cpu",
                 dtype=torch.float32, dense_prune=None, keys: Optional[Sequence[int]] = None):
        self.cfg, self.model, self.scheduler, self.text_encoder = cfg, model, scheduler, text_encoder
        self.conditions, self.vae, self.device, self.dtype = conditions, vae, device, dtype
        self.decode = bool(decode and vae is not None)
        if vae is None and latent_shape is None:
            raise ValueError("without a VAE give latent_shape (C, T, H, W of one view's latents)")
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else None
        self.dense_prune = dense_prune
        self.keys = list(keys) if keys is not None else list(range(len(conditions)))
        self._scenes: Dict[int, SceneCondition] = {}
        text_encoder.y_embedder = model.y_embedder  # MagicDrive-V2's hack for classifier-free guidance (null y)

    def scene(self, i: int) -> SceneCondition:
        if i not in self._scenes:
            self._scenes[i] = batch_condition(self.conditions[i], self.device, self.dtype,
                                              self.cfg.get("mv_order_map"), self.cfg.get("t_order_map"))
        return self._scenes[i]

    def latent(self, c: SceneCondition) -> Tuple[int, ...]:
        if self.vae is not None:
            size = self.vae.get_latent_size(c.pixel_size)
            return (c.B, self.vae.out_channels * c.NC, *size)
        C, *size = self.latent_shape
        return (c.B, C * c.NC, *size)

    def generate(self, seed: int, i: int, ctrl=None, steps: Optional[int] = None) -> List[Any]:
        """Scene ``i`` under ``seed``: per view, uint8 frames ``[T, H, W, 3]`` (decoding) or float latents
        ``[C, T, H, W]``. Sampled with the controller applied to the model (dense at ratio 0 when none is)."""
        from einops import rearrange
        from magicdrivedit.utils.inference_utils import add_null_condition
        from magicdrivedit.utils.misc import add_box_latent, move_to

        from .. import apply, get_controller, remove
        from ..generation import to_uint8_frames

        c = self.scene(i)
        key = seed * 1_000_003 + int(self.keys[i]) * 101
        z = torch.randn(self.latent(c), generator=torch.Generator().manual_seed(key)).to(self.device, self.dtype)
        args = dict(c.args)
        if c.bbox is not None:
            sample = functools.partial(self.model.sample_box_latent, generator=torch.Generator().manual_seed(key + 1))
            bbox = add_box_latent({k: v for k, v in c.bbox.items()}, c.B, c.NC, c.T, sample)
            args["bbox"] = move_to({k: rearrange(v, "B T NC ... -> (B NC) T ...") for k, v in bbox.items()},
                                   device=self.device, dtype=self.dtype)
        args = add_null_condition(copy.deepcopy(args), self.model.camera_embedder.uncond_cam.to(self.device),
                                  self.model.frame_embedder.uncond_cam.to(self.device),
                                  use_map0=self.cfg.get("use_map0", False))
        own = get_controller(self.model) is None
        if own:  # no front line applied: the dense model, through the same path as the references
            apply(self.model, self.dense_prune)
        saved = self.scheduler.num_sampling_steps
        self.scheduler.num_sampling_steps = int(steps or saved)
        try:
            with torch.no_grad():
                out = self.scheduler.sample(self.model, self.text_encoder, z=z, prompts=c.prompts, device=self.device,
                                            additional_args=args, progress=False, mask=None)
                out = rearrange(out, "B (C NC) T ... -> (B NC) C T ...", NC=c.NC)
                if self.decode:
                    out = self.vae.decode(out.to(self.dtype), num_frames=args["num_frames"])
                    out = out[:, :, slice(None, (self.cfg.get("post") or {}).get("cut_length"))]
        finally:
            self.scheduler.num_sampling_steps = saved
            if own:
                remove(self.model)
        views = out[:c.NC]  # batch size 1
        if self.decode:
            return [to_uint8_frames(v.cpu()) for v in views]
        return [v.detach().float().cpu() for v in views]


def _load_config(path: str):
    from mmengine.config import Config

    return Config.fromfile(path)


def prune_settings(cfg):
    """The host's :class:`~coredit_video.config.PruneConfig`: ``cfg.scheduler.prune`` without ``plan``."""
    from ..config import PruneConfig

    prune = dict((cfg.get("scheduler") or {}).get("prune") or {})
    prune.pop("plan", None)
    prune.pop("ratios", None)
    return PruneConfig.build(prune)


def magicdrive_front_host(s, cfg=None, *, text_encoder=None, vae=None, conditions: Optional[Sequence[Any]] = None,
                          latent_shape: Optional[Sequence[int]] = None, device=None, dtype=None):
    """The :class:`~coredit_video.front.FrontHost` of a MagicDrive-V2 config ``s.config`` and checkpoint ``s.ckpt``
    (``FrontSettings``); ``magicdrivedit`` must be importable. ``text_encoder`` / ``vae`` / ``conditions``: given
    instead of built from the config (``vae``: from ``cfg.vae`` when the config has one; ``conditions``:
    collated batches, default the validation set's); ``latent_shape``: one view's ``(C, T, H, W)`` without a VAE."""
    from ..front import FrontHost, frame_fidelity

    cfg = cfg if cfg is not None else _load_config(s.config)
    label = f"{HOST}:{s.config}"
    steps = int(s.sampling_steps or (cfg.get("scheduler") or {}).get("num_sampling_steps") or 0)
    if steps < 1:
        raise ValueError(f"{s.config}: no scheduler.num_sampling_steps; give --sampling-steps")
    prune = prune_settings(cfg)
    fidelity = latent_fidelity
    if s.render_only:
        def nothing(*_a, **_k):
            raise RuntimeError("render_only: nothing is sampled")

        return FrontHost(label=label, model=None, prune=prune, num_steps=steps, generate=nothing, fidelity=fidelity)

    from magicdrivedit.registry import MODELS, SCHEDULERS, build_module
    from magicdrivedit.utils.misc import to_torch_dtype

    from .magicdrive_rflow import register

    register()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (to_torch_dtype(cfg.get("dtype", "bf16")) if str(device).startswith("cuda") else torch.float32)
    if text_encoder is None:
        text_encoder = build_module(cfg.text_encoder, MODELS, device=device)
    if vae is None and cfg.get("vae") is not None:
        vae = build_module(cfg.vae, MODELS).to(device, dtype).eval()
    extra = {}
    if vae is not None:
        extra["in_channels"] = vae.out_channels
    for name, attr in (("caption_channels", "output_dim"), ("model_max_length", "model_max_length")):
        if getattr(text_encoder, attr, None) is not None:
            extra[name] = getattr(text_encoder, attr)
    model_cfg = dict(cfg.model)
    if s.ckpt:
        model_cfg["from_pretrained"] = s.ckpt
    model = build_module(model_cfg, MODELS, input_size=(None, None, None), enable_sequence_parallelism=False,
                         **extra).to(device, dtype).eval()
    dense = dataclasses.replace(prune, ratios=0.0, plan=None)
    sched_cfg = dict(cfg.scheduler)
    sched_cfg.update(type="coredit_rflow", num_sampling_steps=steps, prune=None, distill=None,
                     schedule=dict(delta_ratio=1e-3, target_ratio=0.0), train_schedule=False,
                     # never read (nothing trains; the front applies each line itself): no saved schedule state
                     state_dir=os.path.join(os.path.abspath(s.out), "_no_schedule_state"))
    scheduler = build_module(sched_cfg, SCHEDULERS)
    keys = None
    if conditions is None:
        conditions = _ValidationScenes(cfg, s.scenes)
        keys = conditions.indices
    elif len(conditions) < s.scenes:
        raise ValueError(f"--scenes {s.scenes}: {len(conditions)} conditions given")
    front = MagicDriveFront(cfg, model, scheduler, text_encoder, conditions, vae=vae, latent_shape=latent_shape,
                            decode=not s.latents, device=device, dtype=dtype, dense_prune=dense, keys=keys)
    fidelity = frame_fidelity if front.decode else latent_fidelity
    return FrontHost(label=label, model=model, prune=prune, num_steps=steps, generate=front.generate,
                     fidelity=fidelity)


__all__ = ["HOST", "MagicDriveFront", "SceneCondition", "batch_condition", "latent_fidelity",
           "magicdrive_front_host", "prune_settings", "spread_indices"]
