"""The attention-error probe (coredit_video.attention_probe) and tools/probe_token_reduction.py: each mechanism
computes what its name says, against loop references; the probe attaches and detaches cleanly; the tool and the
front measure the same error on the same dense trajectory."""
import json

import pytest
import torch

from coredit_video.attention import BlockLayout, pruned_self_attention
from coredit_video.attention.backends import dense_self_attention
from coredit_video.attention_probe import AttentionErrorProbe
from coredit_video.methods import CallGeometry
from coredit_video.embedded.host.layers import Attention
from coredit_video.ops import band_budgets
from coredit_video.ops.partition import partition
from tests.dist.common import load_tool

HW = (8, 12)
LAYOUT = BlockLayout(1, (4, 4), (2, 2), 2)
tool = load_tool("probe_token_reduction")


def _setup(seed=0, frames=2, c=32):
    torch.manual_seed(seed)
    attn = Attention(c, num_heads=4).eval()
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(frames, HW[0], 1, c, generator=g).expand(frames, HW[0], HW[1], c)
    x = (base + 0.3 * torch.randn(frames, HW[0], HW[1], c, generator=g)).reshape(frames, -1, c).contiguous()
    return attn, x


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def _outputs(ratio, methods=()):
    attn, x = _setup()
    with torch.no_grad():
        return attn, x, tool.build_probe(None, [ratio], methods).outputs(attn, x, CallGeometry.of(HW, ratio, LAYOUT, 2))


def test_ratio_zero_is_dense_for_every_mechanism():
    attn, x, out = _outputs(0.0, ("coredit_kv", "tome"))
    dense = dense_self_attention(attn, x)
    assert set(out) == {*tool.MECHANISMS, "coredit_kv", "tome"}
    for name, (y, reduced) in out.items():
        assert torch.equal(y, dense) and not reduced.any(), name


def test_mechanisms_against_loop_references():
    attn, x, out = _outputs(0.4)
    Fr, N, _ = x.shape
    K = sum(band_budgets(HW, 0.4, LAYOUT.stride, LAYOUT.ordinal, 2))
    part = partition(HW, LAYOUT.grid, LAYOUT.subgrid, 2)
    local_differs = False
    with torch.no_grad():
        y_co, red_co = out["coredit"]
        assert torch.equal(y_co, pruned_self_attention(attn, x, HW, 0.4, LAYOUT, 2).out)
        y_nn, red_nn = out["coredit_nearest"]
        assert torch.equal(red_nn, red_co) and int(red_co[0].sum()) == K
        dst = [(t // HW[1]) % 2 == 0 and (t % HW[1]) % 2 == 0 for t in range(N)]
        y_ln, red_ln = out["coredit_local_nearest"]
        assert torch.equal(red_ln, red_co)
        y_td, red_td = out["tome_drop"]
        y_tm, red_tm = out["tomesd"]
        assert torch.equal(red_td, red_tm)
        assert torch.equal(y_tm, pruned_self_attention(attn, x, HW, 0.4, LAYOUT, 2, method="tomesd").out)
        for f in range(Fr):
            keep = [t for t in range(N) if not red_co[f, t]]
            ref_keep = dense_self_attention(attn, x[f:f + 1, keep])[0]
            torch.testing.assert_close(y_nn[f, keep], ref_keep)  # retained rows: attention over the retained
            torch.testing.assert_close(y_ln[f, keep], ref_keep)
            for t in range(N):
                if red_co[f, t]:  # skipped: the output of the most similar retained token ...
                    j = max(keep, key=lambda k: float(_cos(x[f, t], x[f, k])))
                    torch.testing.assert_close(y_nn[f, t], ref_keep[keep.index(j)])
                    # ... of the finest level holding one: sub-grid cell, grid cell, band
                    for ids in (part.sub, part.cell, part.band):
                        near = [k for k in keep if ids[k] == ids[t]]
                        if near:
                            break
                    j = max(near, key=lambda k: float(_cos(x[f, t], x[f, k])))
                    torch.testing.assert_close(y_ln[f, t], ref_keep[keep.index(j)])
                    local_differs |= not torch.equal(y_ln[f, t], y_nn[f, t])
            own = [t for t in range(N) if not red_td[f, t]]
            merged = [t for t in range(N) if red_td[f, t]]
            assert len(merged) == K and not any(dst[t] for t in merged)  # only sources merge
            ref_own = dense_self_attention(attn, x[f:f + 1, own])[0]
            torch.testing.assert_close(y_td[f, own], ref_own)  # unmerged tokens attend over the unmerged set
            dsts = [t for t in range(N) if dst[t]]
            for t in merged:  # a merged source reads its best destination's (un-averaged) output ...
                d = max(dsts, key=lambda k: float(_cos(x[f, t], x[f, k])))
                torch.testing.assert_close(y_td[f, t], ref_own[own.index(d)])
                torch.testing.assert_close(y_tm[f, t], y_tm[f, d])  # ... and in ToMe the averaged one's
            assert not torch.allclose(y_tm[f, merged], y_td[f, merged])  # averaging changes what they get
    assert local_differs  # the restriction to the cell matters for some token


def test_probe_attaches_removably_and_splits_where_the_rows_are_known():
    import coredit_video as cv
    from tests.test_cross_view import build, inputs

    model, inp = build(), inputs()
    ctrl = cv.apply(model, dict(ratios=0.0))
    before = [m.__dict__["forward"] for m in ctrl.modules]
    probe = AttentionErrorProbe(ctrl, ["coredit", "coredit_kv", "tome"], [0.3], every=1,
                                mechanisms={"copy_dense": lambda attn, x, geo: (dense_self_attention(attn, x), None)})
    with torch.no_grad():
        ref = model(**inp)
        assert probe.apply() is probe.apply() and probe.applied  # idempotent
        assert all(m.__dict__["forward"] is not b for m, b in zip(ctrl.modules, before))
        assert torch.equal(model(**inp), ref)  # the generation stays dense
    assert probe.remove() and not probe.remove()
    assert [m.__dict__["forward"] for m in ctrl.modules] == before  # the controller's own patches, the same objects
    assert probe.calls == len(ctrl.modules) and probe.energy > 0
    rows = {r["name"]: r for r in probe.rows()}
    co = rows["coredit"]
    assert co["error_reduced_rows"] + co["error_attending_rows"] == pytest.approx(co["error"])
    assert co["error_reduced_rows"] > co["error_attending_rows"] > 0 and 0.2 < co["reduced_fraction"] < 0.4
    assert rows["coredit_kv"]["reduced_fraction"] == 0.0  # every query attends
    assert rows["tome"]["error_reduced_rows"] is None and rows["tome"]["error"] > 0  # no rows rule given
    assert rows["copy_dense"]["error"] == 0.0 and rows["copy_dense"]["reduced_fraction"] is None
    assert probe.errors()[("coredit", 0.3)] == pytest.approx(100 * co["error"])
    with pytest.raises(ValueError, match="registered method's name"):
        AttentionErrorProbe(ctrl, ["tome"], [0.3], mechanisms={"tome": None})
    with probe:  # the controller removed meanwhile: its modules stay unpatched
        cv.remove(model)
    assert all("forward" not in m.__dict__ for m in ctrl.modules)


def test_tool_and_front_measure_the_same_error(tmp_path):
    """One sampling setting: the tool's total error of a registered method at a ratio is the front's attn_error."""
    from coredit_video.front import FrontSettings, run_front

    rc = tool.main(["--scenes", "1", "--sampling-steps", "2", "--ratios", "0.3", "--methods", "",
                    "--out", str(tmp_path / "probe")])
    assert rc == 0
    got = {r["mechanism"]: r for r in json.loads((tmp_path / "probe" / "probe.json").read_text())["rows"]}
    assert set(got) == set(tool.MECHANISMS) and got["coredit"]["error"] > 0
    run_front(FrontSettings(seeds=(0,), scenes=1, probe_scenes=1, sampling_steps=2, methods=("coredit",),
                            probe_methods=("tomesd",), ratios=(0.3,), out=str(tmp_path / "front")), progress=False)
    front = {e["method"]: e["attn_error"]
             for e in json.loads((tmp_path / "front" / "attn_error_seed0.json").read_text())}
    for m in ("coredit", "tomesd"):
        assert 100 * got[m]["error"] == pytest.approx(front[m], rel=1e-12, abs=0), m
