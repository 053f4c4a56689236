"""FLOPs of pruned cross-view attention (coredit_video/flops.py, tools/flops.py --cross-view) against hand counts."""
import json
import math

import pytest

from coredit_video import flops as F
from tests.dist.common import load_tool


def test_per_view_frame_counts_by_hand():
    n, k, C = 10, 7, 4
    # pairwise, 2 neighbours: per neighbour q 2nC^2 + kv 4kC^2 + 4nkC + out 2nC^2, then mva_proj 2nC^2
    assert F.pruned_cross_view_attention_flops(n, k, C, 2, "pairwise", "kv") == \
        2 * (2 * 10 * 16 + 4 * 7 * 16 + 4 * 10 * 7 * 4 + 2 * 10 * 16) + 2 * 10 * 16
    # qkv: queries on k tokens too, plus the reconstruction 4nC per neighbour call
    assert F.pruned_cross_view_attention_flops(n, k, C, 2, "pairwise", "qkv") == \
        2 * (2 * 7 * 16 + 4 * 7 * 16 + 4 * 7 * 7 * 4 + 2 * 7 * 16 + 4 * 10 * 4) + 2 * 10 * 16
    # concat (built-in host): one call over 2k keys; fresh scoring adds 6nC
    assert F.pruned_cross_view_attention_flops(n, k, C, 2, "concat", "qkv", fresh=True) == \
        2 * 7 * 16 + 4 * 14 * 16 + 4 * 7 * 14 * 4 + 2 * 7 * 16 + 4 * 10 * 4 + 6 * 10 * 4
    for mode in ("pairwise", "concat"):
        dense = F.cross_view_attention_flops(n, C, 2, mode)
        assert F.pruned_cross_view_attention_flops(n, n, C, 2, mode, "qkv") == dense  # nothing skipped
        assert F.pruned_cross_view_attention_flops(n, k, C, 2, mode, "off") == dense


@pytest.mark.parametrize("mode", ["kv", "qkv"])
def test_count_flops_breakdown_by_hand(mode):
    spec = F.PRESETS["tiny"]  # 2 base blocks with cross-view, 1 control block without
    H, W, T, V, r = 6, 6, 2, 6, 0.3
    res = F.count_flops(spec, None, views=V, ratios=r, hw_tokens=(H, W), latent_frames=T, cross_view=mode)
    n, C = H * W, spec.hidden
    kept = [n - sum(F.skip_budgets((H, W), r, 1, 3, l)) for l in range(spec.depth)]
    assert all(k < n for k in kept)
    expect = sum(F.pruned_cross_view_attention_flops(n, k, C, 2, "pairwise", mode) for k in kept) * T * V
    cv = res["kinds"]["cross_view_attention"]
    assert cv["pruned"] == expect
    assert cv["dense"] == spec.depth * F.cross_view_attention_flops(n, C, 2, "pairwise") * T * V
    assert res["cross_view_reduction"] == pytest.approx((cv["dense"] - expect) / cv["dense"])
    assert res["pruned_total"] == sum(v["pruned"] for v in res["kinds"].values())
    off = F.count_flops(spec, None, views=V, ratios=r, hw_tokens=(H, W), latent_frames=T)
    assert off["kinds"]["cross_view_attention"]["reduction"] == 0.0 == off["cross_view_reduction"]
    assert res["dense_total"] == off["dense_total"]
    assert res["saved_total"] - off["saved_total"] == cv["dense"] - expect
    assert [b["cross_view_pruned"] > 0 for b in res["blocks"]] == [True, True, False]


def test_xl_cross_view_reductions():
    """MagicDrive-V2-XL, 848x1600, 17 frames, r = 0.26: off -9%, kv -15.9%, qkv -21.3% of all FLOPs."""
    got = {m: F.count_flops("magicdrive-v2-xl", (848, 1600), ratios=0.26, cross_view=m)["total_reduction"]
           for m in ("off", "kv", "qkv")}
    assert got["off"] == pytest.approx(0.0898, abs=5e-4)
    assert got["kv"] == pytest.approx(0.1586, abs=5e-4)
    assert got["qkv"] == pytest.approx(0.2126, abs=5e-4)
    assert got["qkv"] >= 0.20
    # ratio 0: nothing changes
    assert F.count_flops("magicdrive-v2-xl", (848, 1600), ratios=0.0, cross_view="qkv")["total_reduction"] == 0.0


def test_cli_flag_and_json(capsys):
    tool = load_tool("flops")
    assert tool.main(["--ratio", "0.26", "--cross-view", "qkv", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["inputs"]["cross_view"] == "qkv" and res["inputs"]["cross_view_select"] == "self"
    assert math.isclose(res["cross_view_reduction"], res["kinds"]["cross_view_attention"]["reduction"])
    assert res["total_reduction"] > 0.2
    assert tool.main(["--ratio", "0.26", "--cross-view", "kv"]) == 0
    assert "cross-view FLOPs ( kv)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        tool.main(["--ratio", "0.26", "--cross-view", "q"])
    assert exc.value.code == 2
