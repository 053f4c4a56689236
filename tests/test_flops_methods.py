"""FLOPs of each token-reduction method's own work and of the block scope (coredit_video/flops.py, tools/flops.py
--method / --scope), against hand counts."""
import json

import pytest

from coredit_video import flops as F
from tests.dist.common import load_tool

XL = "magicdrive-v2-xl"
# one base spatial block (+ one temporal), one view: no cross-view; 6 x 6 tokens, sub-grid 3 x 3
SMALL = F.ModelSpec(hidden=8, depth=1, control_depth=0, num_heads=2, in_channels=4, out_channels=4,
                    cond_tokens=3, caption_channels=16, views=1)
GRIDS = [((6, 6), (3, 3))]
n, C, K, S, HEADS = 36, 8, 9, 9, 2  # r = 0.25 of 36 tokens, no forced tokens
R = n - K


def _small(method, **kw):
    return F.count_flops(SMALL, None, hw_tokens=(6, 6), latent_frames=1, ratios=0.25, stride=None, grids=GRIDS,
                         method=method, **kw)


# per frame by hand: (attention on what is left, overhead)
SA_R = 8 * R * C**2 + 4 * R**2 * C
KV_R = 4 * n * C**2 + 4 * R * C**2 + 4 * n * R * C
SCORE, NORM, SIM = 6 * n * C, 3 * n * C, 2 * K * S * C
BY_HAND = {
    "coredit": (SA_R, SCORE + 4 * n * C),
    "random": (SA_R, SCORE + 4 * n * C),
    "no_reconstruction": (SA_R, SCORE),
    "coredit_copy": (SA_R, SCORE + NORM + SIM + K * S + K * C),
    "coredit_sharp": (SA_R, SCORE + NORM + SIM + 5 * K * S + 2 * K * S * C),
    "coredit_merge": (SA_R, SCORE + NORM + SIM + K * S + (2 * K * C + R * C) + HEADS * R * R + K * C),
    "coredit_kv": (KV_R, SCORE),
    # ceil(9 / 3) = 3 cells of 2 x 2 pooled: 9 keys fewer, R' = 27; rank 4nC + pool nC
    "todo": (KV_R, 4 * n * C + n * C),
    # Nd = 3 * 3 = 9 destinations, Ns = 27; sort 27 * ceil(log2 27) = 27 * 5
    # tome adds ToMe's proportional attention: log(size) on each of the R x R logits per head; tomesd does not
    "tome": (SA_R, NORM + 2 * 27 * 9 * C + 27 * 9 + 27 * 5 + (K * C + R * C) + n * C + HEADS * R * R),
    "tomesd": (SA_R, NORM + 2 * 27 * 9 * C + 27 * 9 + 27 * 5 + (K * C + R * C) + n * C),
}


def test_every_method_has_a_hand_count():
    assert set(BY_HAND) == set(F.METHODS)


@pytest.mark.parametrize("method", F.METHODS)
def test_overhead_by_hand(method):
    attn, over = BY_HAND[method]
    res = _small(method)
    dense = F.count_flops(SMALL, None, hw_tokens=(6, 6), latent_frames=1)
    sa = 8 * n * C**2 + 4 * n**2 * C
    assert res["method"] == method == res["inputs"]["method"] and res["scope"] == "attention"
    assert res["overhead_flops"] == over == sum(res["overhead_terms"].values())
    assert res["kinds"]["spatial_self_attention"]["pruned"] == attn + over
    assert res["dense_total"] == dense["pruned_total"]
    assert res["pruned_total"] == res["dense_total"] - sa + attn + over
    assert res["total_reduction"] == pytest.approx((sa - attn - over) / res["dense_total"])
    assert res["self_attention_reduction"] == pytest.approx((sa - attn - over) / sa)
    assert res["blocks"][0]["overhead"] == over


def test_method_skipped_caps():
    assert F.method_skipped("coredit", (6, 6), 20) == 20
    assert F.tome_destinations((5, 7)) == 3 * 4
    assert F.method_skipped("tome", (5, 7), 30) == 35 - 12  # only sources merge
    assert F.method_skipped("todo", (6, 6), 1) == 3  # one whole cell
    assert F.method_skipped("todo", (5, 5), 20) == 12  # 4 whole cells only
    assert F.method_skipped("todo", (6, 6), 0) == 0
    assert F.tome_sort_flops(1) == 0 and F.tome_sort_flops(8) == 24 and F.tome_sort_flops(9) == 36


def test_coredit_unchanged_and_default():
    a = F.count_flops(XL, ratios=0.26, cross_view="qkv")
    b = F.count_flops(XL, ratios=0.26, cross_view="qkv", method="coredit", scope="attention", grids=F.DEFAULT_GRIDS)
    assert a == b
    assert a["overhead_flops"] > 0
    assert a["total_reduction"] == pytest.approx(0.2126, abs=5e-4)


def test_default_grids_are_the_config_default():
    from coredit_video.config import PruneConfig
    from coredit_video.plan import parse_grids

    assert [tuple(g) for g in parse_grids(PruneConfig.grids)] == [tuple(g) for g in F.DEFAULT_GRIDS]


def test_tome_costs_more_than_coredit_on_xl():
    got = {m: F.count_flops(XL, (848, 1600), ratios=0.5, method=m) for m in ("coredit", "tome")}
    assert got["tome"]["overhead_flops"] > got["coredit"]["overhead_flops"] > 0
    assert got["tome"]["total_reduction"] < got["coredit"]["total_reduction"]
    assert got["tome"]["self_attention_reduction"] < got["coredit"]["self_attention_reduction"]


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("scope", F.SCOPES)
def test_kinds_sum_to_totals(method, scope):
    if scope == "block" and method not in F.BLOCK_SCOPE_METHODS:
        return
    res = F.count_flops("tiny", None, hw_tokens=(6, 8), latent_frames=2, ratios=[0.2, 0.4, 0.3],
                        method=method, scope=scope)
    assert sum(v["dense"] for v in res["kinds"].values()) == res["dense_total"]
    assert sum(v["pruned"] for v in res["kinds"].values()) == res["pruned_total"]
    assert sum(b["block_dense"] - b["block_pruned"] for b in res["blocks"]) == res["saved_total"]
    assert sum(b["overhead"] for b in res["blocks"]) == res["overhead_flops"] > 0
    json.dumps(res)


# ------------------------------------------------------------------------------------------ block scope
def test_block_scope_by_hand():
    spec = F.ModelSpec(hidden=8, depth=1, control_depth=0, num_heads=2, in_channels=4, out_channels=4,
                       cond_tokens=3, caption_channels=16, views=3, cross_view_mode="concat")
    res = F.count_flops(spec, None, hw_tokens=(6, 6), latent_frames=2, ratios=0.25, stride=None, grids=GRIDS,
                        scope="block", cross_view="off")
    L, fv = 3, 2 * 3
    over = 6 * n * C + R * C + n * C + 4 * n * C  # scoring, gather, residual, eq. 3
    k = res["kinds"]
    assert res["overhead_flops"] == over * fv
    assert res["overhead_terms"] == {"scoring": 6 * n * C * fv, "gather": R * C * fv, "residual": n * C * fv,
                                     "reconstruction": 4 * n * C * fv}
    assert k["spatial_self_attention"]["pruned"] == (SA_R + over) * fv
    assert k["cross_view_attention"]["pruned"] == (2 * R * C**2 + 4 * (2 * R) * C**2 + 4 * R * (2 * R) * C
                                                   + 2 * R * C**2) * fv
    assert k["cross_attention"]["pruned"] == (4 * R * C**2 + 4 * L * C**2 + 4 * R * L * C) * fv
    assert k["mlp"]["pruned"] == 16 * R * C**2 * fv
    for kind in ("temporal_self_attention", "temporal_cross_attention", "temporal_mlp", "other"):
        assert k[kind]["pruned"] == k[kind]["dense"]


def test_block_scope_merge_pays_the_merge_but_no_bias():
    spec = F.ModelSpec(hidden=8, depth=1, control_depth=0, num_heads=2, in_channels=4, out_channels=4,
                       cond_tokens=3, caption_channels=16, views=3)
    res = F.count_flops(spec, None, hw_tokens=(6, 6), latent_frames=1, ratios=0.25, stride=None, grids=GRIDS,
                        scope="block", method="coredit_merge")
    assert "proportional_attention" not in res["overhead_terms"]  # the block's own attention takes no bias
    assert res["overhead_terms"]["merge"] > 0 and res["overhead_terms"]["copy"] > 0
    attn = F.count_flops(spec, None, hw_tokens=(6, 6), latent_frames=1, ratios=0.25, stride=None, grids=GRIDS,
                         method="coredit_merge")
    assert attn["overhead_terms"]["proportional_attention"] == 2 * R * R * 3  # heads R^2, 3 views
    nrec = F.count_flops(spec, None, hw_tokens=(6, 6), latent_frames=1, ratios=0.25, stride=None, grids=GRIDS,
                         scope="block", method="no_reconstruction")
    assert nrec["overhead_terms"] == {"scoring": 6 * n * C * 3, "gather": R * C * 3}


@pytest.mark.parametrize("method", F.BLOCK_SCOPE_METHODS)
def test_block_scope_ratio_zero_is_dense(method):
    for ratios in (None, 0.0):
        res = F.count_flops(XL, ratios=ratios, method=method, scope="block", cross_view="qkv")
        assert res["pruned_total"] == res["dense_total"] and res["overhead_flops"] == 0
        assert res["total_reduction"] == 0.0


def test_block_scope_saves_in_every_spatial_kind_only():
    res = F.count_flops(XL, ratios=0.3, scope="block")
    k = res["kinds"]
    for kind in ("spatial_self_attention", "cross_view_attention", "cross_attention", "mlp"):
        assert k[kind]["saved"] > 0, kind
    for kind in ("temporal_self_attention", "temporal_cross_attention", "temporal_mlp", "other"):
        assert k[kind]["saved"] == 0, kind
    assert k["mlp"]["reduction"] == pytest.approx(res["blocks"][0]["skipped_per_frame"] / 5300)


@pytest.mark.parametrize("method", F.BLOCK_SCOPE_METHODS)
@pytest.mark.parametrize("cross_view", F.CROSS_VIEW_PRUNING)
def test_block_scope_saves_at_least_attention_scope(method, cross_view):
    from coredit_video.methods import REGISTRY

    if cross_view != "off" and not REGISTRY[method].supports_cross_view:  # apply refuses it, so does the count
        with pytest.raises(ValueError, match="--cross-view off"):
            F.count_flops(XL, ratios=0.3, method=method, cross_view=cross_view)
        cross_view = "off"
    for r in (0.1, 0.26, 0.5):
        att = F.count_flops(XL, ratios=r, method=method, cross_view=cross_view)
        blk = F.count_flops(XL, ratios=r, method=method, cross_view=cross_view, scope="block")
        assert blk["total_reduction"] >= att["total_reduction"]
        assert blk["dense_total"] == att["dense_total"]


def test_xl_block_scope_numbers():
    """MagicDrive-V2-XL 848x1600, --cross-view qkv: attention scope -30.6% / -36.4%, block scope -38.4% / -46.1%
    at r = 0.4 / 0.5 (all net of the overhead)."""
    got = {(s, r): F.count_flops(XL, (848, 1600), ratios=r, cross_view="qkv", scope=s)["total_reduction"]
           for s in F.SCOPES for r in (0.4, 0.5)}
    assert got[("attention", 0.4)] == pytest.approx(0.306, abs=5e-4)
    assert got[("attention", 0.5)] == pytest.approx(0.3638, abs=5e-4)
    assert got[("block", 0.4)] >= 0.37
    assert got[("block", 0.5)] >= 0.45


# ------------------------------------------------------------------------------------ unsupported combos
@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(method="tome", scope="block"), ("tome", "--scope attention")),
        (dict(method="todo", scope="block"), ("todo", "block scope")),
        (dict(method="coredit_kv", scope="block"), ("coredit_kv", "block scope")),
        (dict(method="tome", cross_view="kv"), ("tome", "--cross-view off")),
        (dict(method="todo", cross_view="qkv"), ("todo", "--cross-view off")),
        (dict(scope="block", cross_view_select="fresh"), ("fresh", "--cross-view-select self")),
        (dict(method="tomee"), ("method", "coredit_merge")),
        (dict(scope="layer"), ("scope", "attention")),
    ],
)
def test_unsupported_combinations_raise(kwargs, words):
    with pytest.raises(ValueError) as ei:
        F.count_flops(XL, ratios=0.3, **kwargs)
    msg = str(ei.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_the_count_refuses_what_apply_refuses():
    """coredit_kv keeps every query, so its selection cannot prune cross-view attention: apply refuses, and so does
    the count (it once counted a setup apply refuses)."""
    import coredit_video as cv
    from tests.test_cross_view import build

    with pytest.raises(ValueError, match="cross_view"):
        cv.apply(build(), dict(ratios=0.3, method="coredit_kv", cross_view="kv"))
    with pytest.raises(ValueError, match="--cross-view off"):
        F.count_flops(XL, ratios=0.3, cross_view="kv", method="coredit_kv")


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_method_scope(capsys):
    tool = load_tool("flops")
    out = {}
    for m in ("coredit", "tome"):
        assert tool.main(["--preset", XL, "--resolution", "848x1600", "--ratio", "0.5", "--method", m, "--json"]) == 0
        out[m] = json.loads(capsys.readouterr().out)
    assert out["tome"]["method"] == "tome" and out["tome"]["overhead_flops"] > 0
    assert out["tome"]["total_reduction"] < out["coredit"]["total_reduction"]
    assert tool.main(["--ratio", "0.4", "--cross-view", "qkv", "--scope", "block", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["scope"] == "block" and res["total_reduction"] >= 0.37
    assert tool.main(["--ratio", "0.3", "--method", "coredit_copy", "--scope", "block"]) == 0
    table = capsys.readouterr().out
    assert "method coredit_copy, scope block" in table and "of which overhead" in table
    with pytest.raises(SystemExit) as exc:
        tool.main(["--ratio", "0.3", "--method", "tome", "--scope", "block"])
    assert exc.value.code == 2
    assert "block scope" in capsys.readouterr().err
