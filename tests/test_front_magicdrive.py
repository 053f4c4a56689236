"""The front (``tools/front.py --host magicdrive_v2``) on MagicDrive-V2, end to end on the tiny upstream
``MagicDriveSTDiT3`` with random weights.

Against the real checkout named by ``MAGICDRIVE_V2_ROOT`` (the stand-ins and fixtures of
``test_magicdrive_adapter`` / ``test_magicdrive_scheduler``; skipped without it): the tool's own command line, its
checks (checkout, config, checkpoint) and its run, with the model built by MagicDrive-V2's ``build_module(cfg.model,
MODELS)`` from a config file (a tiny model type registered here stands in for ``MagicDriveSTDiT3-XL/2``, loading
``from_pretrained`` as MagicDrive-V2's loader would) and sampled by ``coredit_rflow`` built from the config's
``scheduler``. What a CPU test cannot build is injected through the tool's ``host_factory``: the text encoder (the
scheduler test's ``FakeT5``, its null caption from ``y_embedder`` as MagicDrive-V2's T5 after the script's hack), two
collated batches made from ``inputs(...)`` in MagicDrive-V2's dataloader layout (instead of nuScenes), and no VAE
(fidelity on latents) or a stand-in VAE (fidelity on decoded frames).

The command-line checks at the end run without a checkout.
"""
import importlib
import json
import math
import os
import types

import pytest
import torch

from coredit_video.cli import UsageError
from coredit_video.front import ROW_FIELDS, flops_ratio
from tests.dist.common import load_tool
from tests.test_magicdrive_adapter import CAPTION, FRAMES, GRIDS, IN_CH, MV_ORDER_MAP, NC, TOKENS, build, inputs
from tests.test_magicdrive_adapter import md  # noqa: F401  (the module fixture: checkout + stand-ins)
from tests.test_magicdrive_scheduler import FakeT5
from tests.test_magicdrive_scheduler import rf  # noqa: F401  (MagicDrive-V2's registry, coredit_rflow registered)

TINY = "coredit-test/TinyMagicDriveSTDiT3"
STEPS, LATE_STEPS = 3, 1
LATENT = (IN_CH, 3, 12, 14)  # one view's latents: C, T (9 frames -> 3), H, W (96 x 112 pixels / 8)
XL = ("magicdrive-v2-xl", (848, 1600))

CONFIG = f"""
model = dict(type="{TINY}", qk_norm=True)
scheduler = dict(
    type="coredit_rflow", use_timestep_transform=True, cog_style_trans=True, num_sampling_steps=30, cfg_scale=2.0,
    prune=dict(plan="not/a/plan.json", grids={GRIDS!r}, stride=2, late_steps={LATE_STEPS}, late_factor=0.5),
    train_schedule=False,
)
mv_order_map = {MV_ORDER_MAP!r}
t_order_map = None
use_map0 = False
"""


class TextEncoder(FakeT5):
    """FakeT5 with the interface the test script reads (output_dim, model_max_length) and T5Encoder's ``null``:
    the caption embedder's null tokens, through the ``y_embedder`` the script hands it."""

    output_dim, model_max_length = CAPTION, TOKENS

    def __init__(self):
        super().__init__(torch.zeros(TOKENS, CAPTION))
        self.y_embedder = None

    def null(self, n):
        return self.y_embedder.y_embedding[None].repeat(n, 1, 1)[:, None]


class StandInVAE(torch.nn.Module):
    """The VAE interface the front uses (``out_channels``, ``get_latent_size``, ``decode``): CogVideoX's sizes,
    a fixed pointwise decoder to 3 channels in (-1, 1)."""

    out_channels = IN_CH

    def get_latent_size(self, size):
        T, H, W = size
        return [(T - 1) // 4 + 1, H // 8, W // 8]

    def decode(self, z, num_frames=None):
        w = torch.linspace(-1.0, 1.0, 3 * z.shape[1]).view(3, z.shape[1])
        return torch.tanh(torch.einsum("oc,bcthw->bothw", w, z))


def clip(seed):
    """A collated batch as MagicDrive-V2's dataloader yields it (batch 1, ``drop_ori_imgs``), from ``inputs``."""
    a = inputs(batch=1, seed=seed)

    def per_frame(t):  # [(B NC), T, ...] -> [T, NC, ...]
        return t.view(NC, *t.shape[1:]).transpose(0, 1)

    boxes = dict(bboxes=per_frame(a["bbox"]["bboxes"]), classes=per_frame(a["bbox"]["classes"]),
                 masks=per_frame(a["bbox"]["masks"]))
    return dict(
        captions=[[f"clip {seed}"]],
        bev_map_with_aux=a["maps"],
        bboxes_3d_data=[types.SimpleNamespace(data=boxes)],  # a DataContainer's .data
        camera_param=a["cams"].view(1, NC, FRAMES, 3, 7).transpose(1, 2),  # B T NC 3 7
        frame_emb=a["rel_pos"].view(1, NC, FRAMES, 4, 4)[:, 0],  # B T 4 4
        fps=a["fps"], height=a["height"], width=a["width"], num_frames=torch.full((1,), FRAMES),
        pixel_values_shape=torch.tensor([[FRAMES, NC, 3, int(a["height"][0]), int(a["width"][0])]]),
    )


@pytest.fixture(scope="module")
def tiny(md, rf):  # noqa: F811
    """The tiny model type in MagicDrive-V2's MODELS; records the build arguments the front passes."""
    registry = importlib.import_module("magicdrivedit.registry")
    calls = []

    def factory(from_pretrained=None, **kwargs):
        calls.append(dict(kwargs, from_pretrained=from_pretrained))
        model = build(md, seed=123, **kwargs)  # other weights than the checkpoint's
        if from_pretrained is not None:
            model.load_state_dict(torch.load(from_pretrained), strict=True)
        return model

    registry.MODELS.register_module(TINY, module=factory, force=True)
    return types.SimpleNamespace(calls=calls)


@pytest.fixture
def setup(md, tiny, tmp_path, monkeypatch):  # noqa: F811
    # a relative MAGICDRIVE_V2_ROOT names the checkout from where pytest started, not from tmp_path
    monkeypatch.setenv("MAGICDRIVE_V2_ROOT", os.path.abspath(os.environ["MAGICDRIVE_V2_ROOT"]))
    monkeypatch.chdir(tmp_path)  # the tool runs from the checkout: back here after the test
    config = tmp_path / "magicdrive_tiny_test.py"
    config.write_text(CONFIG)
    ckpt = tmp_path / "ckpt.pt"
    weights = build(md, seed=0).state_dict()
    torch.save(weights, ckpt)
    return types.SimpleNamespace(config=str(config), ckpt=str(ckpt), weights=weights, out=tmp_path / "front")


def argv(setup, methods, ratios, scenes=2, extra=()):
    return ["--host", "magicdrive_v2", "--config", setup.config, "--ckpt", setup.ckpt, "--seeds", "0",
            "--scenes", str(scenes), "--sampling-steps", str(STEPS), "--methods", methods,
            "--ratios", *[str(r) for r in ratios], "--out", str(setup.out), *extra]


def test_front_on_tiny_magicdrive_rows_dense_exact_and_resume(setup, tiny):
    from coredit_video.integrations.magicdrive_front import magicdrive_front_host

    conditions = [clip(1), clip(2)]
    hosts = []

    def factory(s):
        hosts.append(magicdrive_front_host(s, text_encoder=TextEncoder(), conditions=conditions,
                                           latent_shape=LATENT, device="cpu"))  # float32 on any machine
        return hosts[-1]

    tool = load_tool("front")
    args = argv(setup, "coredit,coredit_merge", [0, 0.4], extra=["--probe-scenes", "1", "--fewer-steps", "2"])
    assert tool.main(args, host_factory=factory) == 0
    host = hosts[0]
    # built by MagicDrive-V2's registry from the config, with the checkpoint's weights, one process
    call = tiny.calls[-1]
    assert call["from_pretrained"] == setup.ckpt and call["enable_sequence_parallelism"] is False
    assert call["caption_channels"] == CAPTION and call["model_max_length"] == TOKENS
    state = host.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in setup.weights.items())
    assert host.num_steps == STEPS and host.prune.late_steps == LATE_STEPS and host.prune.plan is None

    rows = json.loads((setup.out / "front.json").read_text())["rows"]
    by = {(r["method"], r["ratio"]): r for r in rows}
    assert set(by) == {("coredit", 0.0), ("coredit", 0.4), ("coredit_merge", 0.0), ("coredit_merge", 0.4),
                       ("fewer_steps", round(1 - 2 / STEPS, 4))}
    for r in rows:
        assert set(ROW_FIELDS) - {"time_ratio"} <= set(r) and r["seed"] == 0
        assert r["host"] == f"magicdrive_v2:{setup.config}"
        assert math.isfinite(r["fidelity_PSNR"]) and math.isfinite(r["fidelity_SSIM"])
    for m in ("coredit", "coredit_merge"):
        dense, pruned = by[(m, 0.0)], by[(m, 0.4)]
        # ratio 0: the dense model through the line's own path: the latents are equal (PSNR at the 100 dB clamp)
        assert dense["fidelity_PSNR"] == 100.0 and dense["fidelity_SSIM"] == pytest.approx(1.0, abs=1e-9)
        assert dense["flops_ratio"] == 1.0 and dense["cost_flops"] == 1.0 and dense["steps"] == STEPS
        assert pruned["scope"] == dense["scope"] == "attention" and pruned["steps"] == STEPS
        assert 0.0 < pruned["fidelity_PSNR"] < 100.0 and pruned["fidelity_SSIM"] < 1.0
        # 3 steps, the last one late (c = 0.5): the XL preset's counted FLOPs at 0.4, 0.4, 0.2
        expected = (2 * flops_ratio(*XL, 0.4, m) + flops_ratio(*XL, 0.2, m)) / 3
        assert pruned["cost_flops"] == pytest.approx(expected) and pruned["cost_flops"] < 1.0
        assert pruned["flops_ratio"] == pytest.approx(flops_ratio(*XL, 0.4, m))
        assert pruned["attn_error"] > 0.0 and dense["attn_error"] == pytest.approx(0.0, abs=1e-6)
    fewer = by[("fewer_steps", round(1 - 2 / STEPS, 4))]
    assert fewer["steps"] == 2 and fewer["cost_flops"] == pytest.approx(2 / STEPS) and fewer["scope"] == "dense"
    assert 0.0 < fewer["fidelity_PSNR"] < 100.0
    assert "| coredit | 0.4 | 0 |" in (setup.out / "front.md").read_text()
    assert (setup.out / "front.png").stat().st_size > 1000

    # the generator: per view float latents [C, T, H, W], the same noise for the same (seed, scene)
    a, b = host.generate(0, 1), host.generate(0, 1)
    assert len(a) == NC and tuple(a[0].shape) == LATENT and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], host.generate(1, 1)[0])

    # a second run resumes: nothing is sampled again, the rows are the same
    lines = (setup.out / "front_rows.jsonl").read_text()

    def no_sampling(s):
        h = factory(s)
        h.generate = lambda *a, **k: pytest.fail("a resumed front sampled again")
        return h

    assert tool.main(args, host_factory=no_sampling) == 0
    assert (setup.out / "front_rows.jsonl").read_text() == lines
    assert json.loads((setup.out / "front.json").read_text())["rows"] == rows
    # and a render from the rows alone builds no model (the host from the config, nothing injected)
    calls = len(tiny.calls)
    assert tool.main(args + ["--render-only"]) == 0 and len(tiny.calls) == calls
    assert json.loads((setup.out / "front.json").read_text())["rows"] == rows


def test_front_on_decoded_frames(setup, tiny):
    from coredit_video.integrations.magicdrive_front import magicdrive_front_host

    hosts = []

    def factory(s):
        hosts.append(magicdrive_front_host(s, text_encoder=TextEncoder(), conditions=[clip(3)], vae=StandInVAE(),
                                           device="cpu"))
        return hosts[-1]

    assert load_tool("front").main(argv(setup, "coredit", [0, 0.4], scenes=1), host_factory=factory) == 0
    assert tiny.calls[-1]["in_channels"] == IN_CH  # the VAE's channels, as the test script passes them
    frames = hosts[0].generate(0, 0)
    assert len(frames) == NC and frames[0].dtype.name == "uint8" and frames[0].shape == (3, 12, 14, 3)
    by = {r["ratio"]: r for r in json.loads((setup.out / "front.json").read_text())["rows"]}
    assert by[0.0]["fidelity_PSNR"] == 100.0 and by[0.0]["fidelity_SSIM"] == pytest.approx(1.0, abs=1e-9)
    assert 0.0 < by[0.4]["fidelity_PSNR"] < 100.0


# ---------------------------------------------------------------------------------------------------- command line
def test_help_names_the_magicdrive_host(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_tool("front").main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--host {builtin,magicdrive_v2}" in out and "MAGICDRIVE_V2_ROOT" in out and "--ckpt" in out


def test_usage_errors_are_one_line(tmp_path, monkeypatch):
    tool = load_tool("front")
    config = tmp_path / "md.py"
    config.write_text("model = dict(type='x')\nscheduler = dict(num_sampling_steps=3)\n")
    base = ["--host", "magicdrive_v2", "--config", str(config), "--out", str(tmp_path / "out")]
    monkeypatch.delenv("MAGICDRIVE_V2_ROOT", raising=False)
    with pytest.raises(UsageError, match="set MAGICDRIVE_V2_ROOT"):
        tool.main(base + ["--ckpt", str(config)])
    (tmp_path / "checkout" / "magicdrivedit").mkdir(parents=True)
    monkeypatch.setenv("MAGICDRIVE_V2_ROOT", str(tmp_path / "checkout"))
    with pytest.raises(UsageError, match="give --ckpt"):
        tool.main(base)
    with pytest.raises(UsageError, match="not found") as err:
        tool.main(base + ["--ckpt", str(tmp_path / "missing.pt")])
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="magicdrive_v2"):
        tool.main(["--ckpt", str(config), "--out", str(tmp_path / "out")])  # the built-in host has no --ckpt
