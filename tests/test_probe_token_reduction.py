"""tools/probe_token_reduction.py: each mechanism computes what its name says, against loop references."""
import importlib.util
import os

import torch

from coredit_video.attention import BlockGeometry, pruned_self_attention
from coredit_video.attention.backends import dense_self_attention
from coredit_video.embedded.host.layers import Attention
from coredit_video.ops import band_budgets
from coredit_video.ops.partition import partition
from tests.dist.common import REPO

HW = (8, 12)
LAYOUT = BlockGeometry(1, (4, 4), (2, 2), 2)
spec = importlib.util.spec_from_file_location("probe", os.path.join(REPO, "tools", "probe_token_reduction.py"))
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def _setup(seed=0, frames=2, c=32):
    torch.manual_seed(seed)
    attn = Attention(c, num_heads=4).eval()
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(frames, HW[0], 1, c, generator=g).expand(frames, HW[0], HW[1], c)
    x = (base + 0.3 * torch.randn(frames, HW[0], HW[1], c, generator=g)).reshape(frames, -1, c).contiguous()
    return attn, x


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_ratio_zero_is_dense_for_every_mechanism():
    attn, x = _setup()
    dense = dense_self_attention(attn, x)
    for name, (y, reduced) in probe.reduced_outputs(attn, x, HW, 0.0, LAYOUT, 2).items():
        assert torch.equal(y, dense) and not reduced.any(), name


def test_mechanisms_against_loop_references():
    attn, x = _setup()
    Fr, N, _ = x.shape
    K = sum(band_budgets(HW, 0.4, LAYOUT.stride, LAYOUT.ordinal, 2))
    out = probe.reduced_outputs(attn, x, HW, 0.4, LAYOUT, 2)
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
        y_tm, red_tm = out["tome"]
        assert torch.equal(red_td, red_tm)
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
