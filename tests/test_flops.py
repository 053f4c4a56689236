"""Tests of the analytic FLOPs model (coredit_video/flops.py) and its CLI (tools/flops.py)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from coredit_video import flops as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XL = "magicdrive-v2-xl"


# ------------------------------------------------------------------------ XL preset, paper numbers
def test_xl_tokens_and_frames():
    assert F.tokens_for_resolution(XL, (848, 1600)) == (53, 100)
    assert F.tokens_for_resolution(XL, "848x1600", bands=8, pad_h_to_bands=True) == (56, 100)
    assert F.latent_frames_for(XL, 17) == 5
    assert F.latent_frames_for(XL, 16) == 4
    assert F.latent_frames_for(XL, 1) == 1
    assert F.PRESETS[XL].prunable_blocks == 41


def test_xl_paper_row():
    res = F.count_flops(XL, resolution=(848, 1600), ratios=0.26)
    assert res["inputs"]["hw_tokens"] == [53, 100]
    assert res["inputs"]["latent_frames"] == 5
    assert res["inputs"]["views"] == 6
    assert abs(res["self_attention_reduction"] - 0.39) < 0.01  # paper: -39%
    assert 0.06 <= res["total_reduction"] <= 0.10  # paper: -8%; spec: between -6% and -10%
    for b in res["blocks"]:
        assert b["skipped_per_frame"] == math.floor(0.26 * 5300) == 1378


@pytest.mark.parametrize("frames", [1, 9, 17, 33])
@pytest.mark.parametrize("bands,pad", [(1, False), (8, True)])
def test_xl_paper_row_is_robust(frames, bands, pad):
    res = F.count_flops(XL, "848x1600", frames=frames, ratios=0.26, bands=bands, pad_h_to_bands=pad)
    assert 0.38 <= res["self_attention_reduction"] <= 0.40
    assert 0.06 <= res["total_reduction"] <= 0.10


# ------------------------------------------------------------------------------------ properties
def test_ratio_zero_is_dense():
    for ratios in (None, 0.0, 0, [0.0] * 41):
        res = F.count_flops(XL, ratios=ratios)
        assert res["self_attention_reduction"] == 0.0
        assert res["total_reduction"] == 0.0
        assert res["pruned_total"] == res["dense_total"]
        assert res["overhead_flops"] == 0
        assert res["overhead_terms"] == {}


def test_monotonic_in_ratio():
    prev_sa, prev_tot = -1.0, -1.0
    for i in range(0, 66, 5):
        r = i / 100
        res = F.count_flops(XL, ratios=r)
        assert res["self_attention_reduction"] >= prev_sa
        assert res["total_reduction"] >= prev_tot
        prev_sa, prev_tot = res["self_attention_reduction"], res["total_reduction"]
    assert prev_sa > 0.5


def test_equal_plan_equals_uniform():
    a = F.count_flops(XL, ratios=0.3, bands=8, pad_h_to_bands=True)
    b = F.count_flops(XL, ratios=[0.3] * 41, bands=8, pad_h_to_bands=True)
    c = F.count_flops(XL, ratios={"ratios": [0.3] * 41}, bands=8, pad_h_to_bands=True)
    assert a == b == c


def test_kinds_sum_to_totals():
    plan = [(i % 6) / 10 for i in range(41)]
    res = F.count_flops(XL, ratios=plan)
    kinds = res["kinds"]
    assert tuple(kinds) == F.KINDS
    assert sum(v["dense"] for v in kinds.values()) == res["dense_total"]
    assert sum(v["pruned"] for v in kinds.values()) == res["pruned_total"]
    assert res["saved_total"] == res["dense_total"] - res["pruned_total"]
    assert kinds["spatial_self_attention"]["dense"] == res["self_attention_dense"]
    assert kinds["spatial_self_attention"]["pruned"] == res["self_attention_pruned"]
    assert sum(b["dense"] for b in res["blocks"]) == res["self_attention_dense"]
    assert sum(b["pruned"] for b in res["blocks"]) == res["self_attention_pruned"]
    for kind in F.KINDS[1:]:  # only the spatial self-attention is pruned
        assert kinds[kind]["dense"] == kinds[kind]["pruned"]
        assert kinds[kind]["reduction"] == 0.0
    json.dumps(res)  # serialisable


def test_only_pruned_blocks_change():
    plan = [0.0] * 41
    plan[3] = 0.4
    res = F.count_flops(XL, ratios=plan)
    changed = [b["block"] for b in res["blocks"] if b["pruned"] != b["dense"]]
    assert changed == [3]
    assert res["blocks"][28]["name"] == "control_blocks_s.0"


def test_bands_budget_per_band():
    # 56 x 100 tokens, 8 bands of 7 x 100 = 700: K = floor(0.26 * 700) = 182 per band
    res = F.count_flops(XL, ratios=0.26, bands=8, pad_h_to_bands=True)
    assert res["blocks"][0]["skipped_per_frame"] == 8 * 182
    # the forced (m-stride) tokens cap K: with m = 3 at most 2/3 of a band can be skipped
    assert F.skip_budgets((6, 6), 0.9, bands=1, stride=3) == [24]
    assert F.skip_budgets((6, 6), 0.9, bands=1, stride=None) == [32]
    assert F.skip_budgets((6, 6), 0.9, bands=1, stride=1) == [0]


# ------------------------------------------------------------------------- hand-computed formula
def test_single_block_by_hand():
    spec = F.ModelSpec(
        hidden=8, depth=1, control_depth=0, num_heads=2, mlp_ratio=4.0, patch=(1, 2, 2),
        in_channels=4, out_channels=4, cond_tokens=3, caption_channels=16,
        cross_view_neighbours=2, cross_view_mode="concat", views=3, temporal=True,
    )
    # 4 x 4 tokens/frame, 2 latent frames, 3 views, r = 0.25: K = 4, k = 12, no forced tokens
    res = F.count_flops(spec, hw_tokens=(4, 4), latent_frames=2, ratios=0.25, stride=None)
    n, C, L, T, fv, k = 16, 8, 3, 2, 6, 12
    sa_dense = 8 * n * C**2 + 4 * n**2 * C
    sa_pruned = 8 * k * C**2 + 4 * k**2 * C + (6 + 4) * n * C
    cv = 2 * n * C**2 + 4 * (2 * n) * C**2 + 4 * n * (2 * n) * C + 2 * n * C**2
    ca = 2 * n * C**2 + 4 * L * C**2 + 4 * n * L * C + 2 * n * C**2
    mlp = 2 * 2 * n * C * (4 * C)
    tsa = 8 * n * C**2 + 4 * n * T * C
    other = 2 * n * 4 * 4 * C * fv + 2 * n * C * 4 * 4 * fv + 2 * L * (16 * C + C * C) + 2 * C * 6 * C
    kinds = res["kinds"]
    assert kinds["spatial_self_attention"]["dense"] == sa_dense * fv
    assert kinds["spatial_self_attention"]["pruned"] == sa_pruned * fv
    assert kinds["cross_view_attention"]["dense"] == cv * fv
    assert kinds["cross_attention"]["dense"] == ca * fv
    assert kinds["mlp"]["dense"] == mlp * fv
    assert kinds["temporal_self_attention"]["dense"] == tsa * fv
    assert kinds["temporal_cross_attention"]["dense"] == ca * fv
    assert kinds["temporal_mlp"]["dense"] == mlp * fv
    assert kinds["other"]["dense"] == other
    dense = (sa_dense + cv + 2 * ca + 2 * mlp + tsa) * fv + other
    assert res["dense_total"] == dense
    assert res["pruned_total"] == dense - (sa_dense - sa_pruned) * fv
    assert res["self_attention_reduction"] == pytest.approx((sa_dense - sa_pruned) / sa_dense, abs=0)
    assert res["overhead_flops"] == 10 * n * C * fv
    # temporal attention over the whole clip is per column 8TC^2 + 4T^2C
    assert tsa * T == n * (8 * T * C**2 + 4 * T**2 * C)
    # MagicDrive-V2's pairwise cross-view: per neighbour q, kv, attention, out; then mva_proj
    pair = F.cross_view_attention_flops(n, C, 2, "pairwise")
    assert pair == 2 * (2 * n * C**2 + 4 * n * C**2 + 4 * n * n * C + 2 * n * C**2) + 2 * n * C**2


def test_views_limit_neighbours():
    spec = replace(F.PRESETS["tiny"], views=1)
    res = F.count_flops(spec, hw_tokens=(4, 4), latent_frames=1)
    assert res["kinds"]["cross_view_attention"]["dense"] == 0


def test_flops_saved_fraction():
    full = F.count_flops(XL, hw_tokens=(53, 100), latent_frames=5, ratios=0.26)
    assert F.flops_saved_fraction(XL, (53, 100), 5, ratios=0.26) == full["total_reduction"]
    assert F.flops_saved_fraction(XL, (53, 100), 5, ratios=0.26, which="self_attention") == (
        full["self_attention_reduction"]
    )
    assert F.flops_saved_fraction(XL, (53, 100), 5) == 0.0


# ------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(ratios=1.0), "ratios"),
        (dict(ratios=-0.1), "ratios"),
        (dict(ratios=float("nan")), "ratios"),
        (dict(ratios=[0.1] * 40), "length 40"),
        (dict(ratios=[0.1] * 40 + [1.5]), "ratios[40]"),
        (dict(ratios="0.2"), "ratios"),
        (dict(ratios={"rat": [0.1]}), "ratios"),
        (dict(spec="magicdrive-v3"), "magicdrive-v2-xl"),
        (dict(resolution="848by1600"), "resolution"),
        (dict(resolution=(848, 0)), "resolution"),
        (dict(frames=0), "frames"),
        (dict(views=0), "views"),
        (dict(bands=0), "bands"),
        (dict(bands=8), "pad_h_to_bands"),
        (dict(hw_tokens=(53,)), "hw_tokens"),
        (dict(latent_frames=0), "latent_frames"),
    ],
)
def test_bad_inputs(kwargs, word):
    kw = dict(spec=XL)
    kw.update(kwargs)
    spec = kw.pop("spec")
    with pytest.raises(ValueError) as ei:
        F.count_flops(spec, **kw)
    assert word in str(ei.value)



def test_query_normalises_the_call_once():
    """count_flops validates its arguments once into a FlopsQuery; the result echoes it."""
    kw = dict(hw_tokens=None, latent_frames=None, pad_h_to_bands=True, stride=3, cross_view="off",
              cross_view_select="self", method="coredit", scope="attention", grids=None)
    q = F.FlopsQuery.from_args(XL, "848x1600", 17, None, 0.26, 8, **kw)
    assert (q.hw, q.resolution, q.frames, q.latent_frames, q.views) == ((56, 100), (848, 1600), 17, 5, 6)
    assert q.ratios == (0.26,) * 41 and q.frame_views == 30 and q.tokens == 5600 and q.neighbours == 2
    assert [q.subgrid(b) for b in range(3)] == [(4, 4), (3, 3), (4, 4)]
    assert q.has_cross_view(27) and not q.has_cross_view(28)  # control blocks skip cross-view
    inputs = F.count_flops(XL, "848x1600", ratios=0.26, bands=8, pad_h_to_bands=True)["inputs"]
    assert inputs["hw_tokens"] == list(q.hw) and inputs["ratios"] == list(q.ratios)
    with pytest.raises(ValueError, match="views"):
        F.FlopsQuery.from_args(XL, "848x1600", 17, 0, 0.26, 8, **kw)

def test_bad_spec_and_preset_message():
    with pytest.raises(ValueError) as ei:
        F.get_spec("nope")
    assert "nope" in str(ei.value) and XL in str(ei.value) and "tiny" in str(ei.value)
    with pytest.raises(ValueError, match="hidden"):
        F.ModelSpec(hidden=0, depth=1, control_depth=0, num_heads=1)
    with pytest.raises(ValueError, match="cross_view_mode"):
        F.ModelSpec(hidden=8, depth=1, control_depth=0, num_heads=1, cross_view_mode="full")
    with pytest.raises(ValueError, match="which"):
        F.flops_saved_fraction(XL, (53, 100), 5, which="attn")


def test_load_plan(tmp_path):
    from coredit_video.plan import read_plan

    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"ratios": [0.25] * 41, "target_ratio": 0.26}))
    assert read_plan(str(p)).ratios == [0.25] * 41
    assert F.count_flops(XL, ratios=read_plan(str(p)))["inputs"]["ratios"] == [0.25] * 41
    p.write_text(json.dumps({"blocks": []}))
    with pytest.raises(ValueError, match="ratios"):
        read_plan(str(p))


# ------------------------------------------------------------------------------------------- CLI
def _cli(*args):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the script must find the package on its own
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "flops.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_json():
    out = _cli("--preset", XL, "--resolution", "848x1600", "--ratio", "0.26", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    keys = ("self_attention_reduction", "total_reduction", "kinds", "inputs", "dense_total", "pruned_total",
            "overhead_flops", "method", "scope")
    for key in keys:
        assert key in res
    assert abs(res["self_attention_reduction"] - 0.39) < 0.01
    assert 0.06 <= res["total_reduction"] <= 0.10
    assert set(res["kinds"]["mlp"]) >= {"dense", "pruned", "reduction"}
    assert res["inputs"]["preset"] == XL and res["inputs"]["ratios"] == [0.26] * 41
    assert res["method"] == "coredit" and res["scope"] == "attention"
    assert res["overhead_flops"] == 41 * 10 * 5300 * 1152 * 30  # scoring 6nC + eq. 3 4nC, 41 blocks, 30 view-frames


def test_cli_plan_and_table(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"ratios": [0.26] * 41}))
    args = ("--plan", str(p), "--frames", "17", "--views", "6", "--bands", "8", "--pad-h-to-bands")
    out = _cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["inputs"]["hw_tokens"] == [56, 100] and res["inputs"]["bands"] == 8
    table = _cli("--ratio", "0.26")
    assert table.returncode == 0, table.stderr
    assert "self-attention" in table.stdout and "total" in table.stdout


def test_cli_bad_ratio():
    out = _cli("--ratio", "1.5", "--json")
    assert out.returncode != 0
    assert "ratio" in out.stderr


def test_view_layout_embedder_counts_what_torch_counts():
    """The embedded host's view-layout embedder: the FLOPs model's extra equals torch's FlopCounterMode's."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from coredit_video.embedded.host.bundle import builtin_spec
    from coredit_video.embedded.host.mv_stdit import MultiViewSTDiT, host_config

    model = MultiViewSTDiT(host_config("tiny")).eval()
    x, t = torch.randn(1, 6, 4, 2, 16, 28), torch.tensor([500.0])
    y, cams, bev = torch.randn(1, 9, 32), torch.randn(1, 6, 12), torch.rand(1, 3, 16, 16)
    L = model.config.view_layout_channels
    layout = torch.rand(1, 6, L, 2, 16, 28)
    measured = []
    for lay in (None, layout):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, t, y, cams, bev, lay)
        measured.append(fc.get_total_flops())
    spec = builtin_spec(model, cond_tokens=10)
    counts = [F.count_flops(F.with_overrides(spec, layout_channels=c), hw_tokens=(8, 14), latent_frames=2)
              for c in (0, L)]
    assert counts[1]["dense_total"] - counts[0]["dense_total"] == measured[1] - measured[0] > 0
