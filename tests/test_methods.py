"""The restoration / reduction rules beyond the paper (``coredit_copy``, ``coredit_sharp``, ``coredit_merge``,
``coredit_kv``) and the ToDo baseline (``todo``) do what the spec says, against references written here with
Python loops and plain indexing. Only the already-tested selection (``spatial_coherence`` + ``select_tokens``)
and ``band_budgets`` are shared with the code under test; sub-grid cells, nearest retained cell-mates, merged
inputs, pooled cells, eq. 3 and the attention itself are rebuilt here from their definitions."""
import math

import pytest
import torch

import coredit_video as cv
from coredit_video.attention import BlockLayout, ViewPairs, pruned_cross_view_attention, pruned_self_attention
from coredit_video.attention.pruned import local_attend
from coredit_video.embedded.host import MultiViewSTDiT, host_config
from coredit_video.embedded.host.layers import Attention
from coredit_video.methods import REGISTRY, CallGeometry, Selection, build_method
from coredit_video.methods.coredit import CoReDiT
from coredit_video.methods.coredit_copy import CoReDiTCopy
from coredit_video.methods.coredit_sharp import CoReDiTSharp
from coredit_video.ops import band_budgets, select_tokens, spatial_coherence

NEW = ("coredit_copy", "coredit_sharp", "coredit_merge", "coredit_kv", "todo")
C = 32
# 10 x 11 tokens in 2 bands of 5 rows: grid cells 3 x 4 clipped at each band's last rows (2) and at the frame's last
# columns (3); sub-grid cells 2 x 3 clipped to their grid cell (1-row and 1-column remnants)
HW = (10, 11)
BANDS = 2
LAYOUT = BlockLayout(1, (3, 4), (2, 3), 2)
RATIO = 0.4


def _x(hw=HW, seed=0, frames=2, c=C):
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    # smooth rows plus noise: coherence scores and cosine similarities are far from uniform
    base = torch.randn(frames, H, 1, c, generator=g).expand(frames, H, W, c)
    return (base + 0.3 * torch.randn(frames, H, W, c, generator=g)).reshape(frames, -1, c).contiguous()


def _attn(seed=0):
    torch.manual_seed(seed)
    return Attention(C, 4)


# ---------------------------------------------------------------------------------------------- references


def _cells(hw, bands, grid, subgrid):
    """Per token: the tokens of its sub-grid cell, of its grid cell and of its band (lists), from the rule:
    bands of H/bands rows; grid cells gh x gw anchored at each band's first row and column 0, clipped at the band's
    last row and the frame's last column; sub-grid cells sh x sw tiling each grid cell from its origin, clipped to
    the grid cell."""
    H, W = hw
    (gh, gw), (sh, sw) = grid, subgrid
    hb = H // bands
    sub_of, cell_of, band_of = {}, {}, {}
    for b in range(bands):
        r0, r1 = b * hb, (b + 1) * hb
        band = [i * W + j for i in range(r0, r1) for j in range(W)]
        for gr in range(r0, r1, gh):
            for gc in range(0, W, gw):
                g_r1, g_c1 = min(gr + gh, r1), min(gc + gw, W)
                cell = [i * W + j for i in range(gr, g_r1) for j in range(gc, g_c1)]
                for sr in range(gr, g_r1, sh):
                    for scol in range(gc, g_c1, sw):
                        s_r1, s_c1 = min(sr + sh, g_r1), min(scol + sw, g_c1)
                        sub = [i * W + j for i in range(sr, s_r1) for j in range(scol, s_c1)]
                        for t in sub:
                            sub_of[t], cell_of[t], band_of[t] = sub, cell, band
    assert sorted(sub_of) == list(range(H * W))
    return sub_of, cell_of, band_of


def _cos(a, b):
    return float((a / a.norm()) @ (b / b.norm()))


def _nearest(xf, i, cands):
    """The candidate with the highest input cosine to token ``i`` (ties: the lower index)."""
    return max(sorted(cands), key=lambda j: (_cos(xf[i], xf[j]), -j))


def _select(x, hw=HW, ratio=RATIO, layout=LAYOUT, bands=BANDS):
    sc = spatial_coherence(x, hw, layout.grid, bands)
    keep, skip = select_tokens(sc, hw, ratio, layout.stride, layout.ordinal, bands)
    return keep, skip, sc


def _hand_attention(attn, xq, xkv=None, log_size=None):
    """``softmax((q k^T) * scale + log_size) v`` through ``proj``, one frame: ``xq [n, C]``, ``xkv [m, C]``."""
    xkv = xq if xkv is None else xkv
    h, d = attn.num_heads, attn.head_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    q = attn.q_norm((xq @ w[:C].t() + b[:C]).view(-1, h, d))
    k = attn.k_norm((xkv @ w[C:2 * C].t() + b[C:2 * C]).view(-1, h, d))
    v = (xkv @ w[2 * C:].t() + b[2 * C:]).view(-1, h, d)
    logits = torch.einsum("nhd,mhd->hnm", q, k) * attn.scale
    if log_size is not None:
        logits = logits + log_size.view(1, 1, -1)
    o = torch.einsum("hnm,mhd->nhd", logits.softmax(-1), v).reshape(xq.shape[0], C)
    return attn.proj(o)


def _merge_groups(xf, kept, skipped, sub_of):
    """Rule (c)'s merge of one frame: each skipped token's target, its nearest retained sub-grid cell-mate (none
    where its cell holds no retained token), ``{i: j}``; and each retained token's group, itself then the skipped
    tokens merged into it, ``{j: [j, ...]}``."""
    target = {}
    for i in skipped:
        cands = [j for j in sub_of[i] if j in kept]
        if cands:
            target[i] = _nearest(xf, i, cands)
    return target, {j: [j] + [i for i, t in target.items() if t == j] for j in kept}


def _eq3(y, keep, sc, t, cells):
    """Eq. 3 for token ``t``: ``max(sc, 1e-4)``-weighted mean of the retained outputs ``y`` (rows by token) of its
    sub-grid cell, else its grid cell, else its band."""
    for level in cells:
        cands = [j for j in level[t] if j in keep]
        if cands:
            w = [max(float(sc[j]), 1e-4) for j in cands]
            return sum(wj * y[j] for wj, j in zip(w, cands)) / sum(w)
    raise AssertionError("no retained token in the band")


# ---------------------------------------------------------------------------------------------- coredit_copy


def test_copy_matches_a_loop_reference_with_clipped_cells_bands_and_empty_cells():
    attn, x = _attn(), _x()
    out = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method="coredit_copy").out
    ref_eq3 = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method="coredit").out
    keep, skip, _ = _select(x)
    sub_of, _, _ = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    n_copy = n_fallback = n_choice = 0
    with torch.no_grad():
        for f in range(x.shape[0]):
            kept = keep[f].tolist()
            y_keep = _hand_attention(attn, x[f, kept])
            torch.testing.assert_close(out[f, kept], y_keep, atol=1e-5, rtol=1e-5)  # attention of the retained
            for i in skip[f].tolist():
                cands = [j for j in sub_of[i] if j in kept]
                if cands:
                    j = _nearest(x[f], i, cands)
                    assert torch.equal(out[f, i], out[f, j]), (f, i, j)  # an exact copy of its target's row
                    n_copy += 1
                    n_choice += len(cands) > 1
                else:
                    torch.testing.assert_close(out[f, i], ref_eq3[f, i])  # empty cell: eq. 3
                    n_fallback += 1
    assert n_copy and n_fallback and n_choice  # every branch ran, and some targets were a real choice


def _restore_inputs():
    """A hand-made selection on a 4 x 6 frame, grid 4 x 6, sub-grid 2 x 3 (four cells of six tokens):
    cell 0 = {0, 1, 2, 6, 7, 8}: retained 0, 2 and 7 where x_2 = 2 x_0 (an exact cosine tie: 0 must win);
    cell 1 = {3, 4, 5, 9, 10, 11}: no retained token (eq. 3: grid cell);
    cell 2 = {12, 13, 14, 18, 19, 20}: retained 13 only; cell 3 = {15, 16, 17, 21, 22, 23}: retained 16 and 23."""
    hw, layout = (4, 6), BlockLayout(0, (4, 6), (2, 3), 1)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 24, C, generator=g)
    x[0, 1] = x[0, 0] + 0.05 * torch.randn(C, generator=g)  # nearest to 0 / 2 (tie), not to 7
    x[0, 2] = 2 * x[0, 0]
    keep = torch.tensor([[0, 2, 7, 13, 16, 23]])
    skip = torch.tensor([[t for t in range(24) if t not in keep[0].tolist()]])
    sc = torch.rand(1, 24, generator=g)
    y_keep = torch.randn(1, 6, C, generator=g)
    geo = CallGeometry(hw, 0.75, layout, 1, (18,))
    return x, Selection(keep, skip, sc), y_keep, geo


def test_copy_restore_on_a_hand_made_selection_ties_to_the_lower_index_and_falls_back_to_eq3():
    x, sel, y_keep, geo = _restore_inputs()
    out = CoReDiTCopy().restore(y_keep, x, sel, None, geo)
    eq3 = CoReDiT().restore(y_keep, x, sel, None, geo)
    kept = sel.keep[0].tolist()
    row = {t: y_keep[0, r] for r, t in enumerate(kept)}
    sub_of, cell_of, band_of = _cells(geo.hw, 1, geo.layout.grid, geo.layout.subgrid)
    assert _cos(x[0, 1], x[0, 0]) == _cos(x[0, 1], x[0, 2])  # the tie is exact
    for t in range(24):
        if t in row:
            assert torch.equal(out[0, t], row[t])
            continue
        cands = [j for j in sub_of[t] if j in row]
        if cands:
            assert torch.equal(out[0, t], row[_nearest(x[0], t, cands)]), t
        else:
            torch.testing.assert_close(out[0, t], _eq3(row, row, sel.sc[0], t, (sub_of, cell_of, band_of)))
            torch.testing.assert_close(out[0, t], eq3[0, t])
    assert torch.equal(out[0, 1], row[0])  # the tie went to the lower index
    assert torch.equal(out[0, 12], row[13]) and torch.equal(out[0, 20], row[13])  # one candidate: copied


# ---------------------------------------------------------------------------------------------- coredit_sharp


def _sharp_reference(attn, x, keep, skip, sc, temperature, sub_of, cells):
    """Frame by frame: retained rows = attention of the retained tokens; a skipped row = sum_j softmax_j(cos / T)
    y_j over the retained tokens of its sub-grid cell, else eq. 3. Differentiable in ``x``."""
    frames = []
    for f in range(x.shape[0]):
        kept = keep[f].tolist()
        y_keep = _hand_attention(attn, x[f, kept])
        row = {t: y_keep[r] for r, t in enumerate(kept)}
        xn = x[f] / x[f].norm(dim=-1, keepdim=True)
        rows = []
        for t in range(x.shape[1]):
            if t in row:
                rows.append(row[t])
                continue
            cands = [j for j in sub_of[t] if j in row]
            if cands:
                w = torch.softmax(torch.stack([xn[t] @ xn[j] for j in cands]) / temperature, 0)
                rows.append(sum(w[k] * row[j] for k, j in enumerate(cands)))
            else:
                rows.append(_eq3(row, row, sc[f], t, cells))
        frames.append(torch.stack(rows))
    return torch.stack(frames)


@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_sharp_matches_a_loop_reference(temperature):
    attn, x = _attn(), _x()
    out = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method=CoReDiTSharp(temperature)).out
    keep, skip, sc = _select(x)
    cells = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    with torch.no_grad():
        ref = _sharp_reference(attn, x, keep, skip, sc, temperature, cells[0], cells)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the temperature matters: 0.05 and 1.0 give different rows where a cell offers a choice
    other = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method=CoReDiTSharp(3.0 - temperature)).out
    assert not torch.allclose(out, other)


def test_sharp_at_a_tiny_temperature_approaches_copy():
    attn, x = _attn(), _x()
    copy = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method="coredit_copy").out
    diff = {}
    for t in (1.0, 1e-2, 1e-3, 1e-4):
        sharp = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method=CoReDiTSharp(t)).out
        diff[t] = (sharp - copy).abs().amax(-1)  # [F, N]
    assert diff[1.0].max() > diff[1e-2].max() > diff[1e-3].max() > diff[1e-4].max()
    # at 1e-4 every row whose best retained cell-mate wins by a cosine margin >= 2e-3 (weight <= e^-20 for the
    # others) is copy's row; rows with a closer runner-up still carry a little of it
    keep, skip, _ = _select(x)
    sub_of, _, _ = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    n_clear = 0
    for f in range(x.shape[0]):
        kept = keep[f].tolist()
        for i in skip[f].tolist():
            cos = sorted(_cos(x[f, i], x[f, j]) for j in sub_of[i] if j in kept)
            if len(cos) > 1 and cos[-1] - cos[-2] >= 2e-3:
                assert diff[1e-4][f, i] < 1e-5, (f, i)
                n_clear += 1
    assert n_clear > 20
    assert diff[1e-4].max() < 1e-3


def test_sharp_differentiates_the_weights_copy_does_not():
    attn, x0 = _attn(), _x()
    keep, skip, sc = _select(x0)
    sub_of, _, _ = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    f = 0
    kept = keep[f].tolist()
    # a skipped token whose cell holds two retained tokens with different outputs: its weights depend on x_i
    i = next(t for t in skip[f].tolist() if len([j for j in sub_of[t] if j in kept]) >= 2)
    g = torch.randn(C, generator=torch.Generator().manual_seed(5))
    grads = {}
    for name in ("coredit_sharp", "coredit_copy"):
        x = x0.clone().requires_grad_(True)
        out = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method=name).out
        (out[f, i] @ g).backward()
        grads[name] = x.grad[f, i]
    assert torch.count_nonzero(grads["coredit_copy"]) == 0  # attention never sees x_i; the argmax is not differentiated
    assert torch.count_nonzero(grads["coredit_sharp"]) > 0
    # and it is the gradient of the reference's softmax weights
    x = x0.clone().requires_grad_(True)
    cells = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    ref = _sharp_reference(attn, x, keep, skip, sc, 0.05, sub_of, cells)
    (ref[f, i] @ g).backward()
    torch.testing.assert_close(grads["coredit_sharp"], x.grad[f, i], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- coredit_merge


def test_merge_matches_a_loop_reference():
    attn, x = _attn(), _x()
    seen = []

    def attend(a, red):
        seen.append(red)
        return local_attend()(a, red)

    out = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, attend=attend, method="coredit_merge").out
    keep, skip, sc = _select(x)
    cells = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
    sub_of = cells[0]
    (red,) = seen
    n_merged = n_fallback = 0
    with torch.no_grad():
        for f in range(x.shape[0]):
            kept = keep[f].tolist()
            target, groups = _merge_groups(x[f], kept, skip[f].tolist(), sub_of)
            size = torch.tensor([float(len(groups[j])) for j in kept])
            x_red = torch.stack([sum(x[f, t] for t in groups[j]) / len(groups[j]) for j in kept])
            torch.testing.assert_close(red.q[f], x_red, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(red.log_size[f], size.log())
            y_keep = _hand_attention(attn, x_red, log_size=size.log())
            row = {t: y_keep[r] for r, t in enumerate(kept)}
            torch.testing.assert_close(out[f, kept], y_keep, atol=1e-5, rtol=1e-5)
            for i in skip[f].tolist():
                if i in target:
                    assert torch.equal(out[f, i], out[f, target[i]])
                    n_merged += 1
                else:  # not merged: eq. 3 on the merged attention's outputs
                    torch.testing.assert_close(out[f, i], _eq3(row, row, sc[f], i, cells), atol=1e-5, rtol=1e-5)
                    n_fallback += 1
            assert size.max() > 2  # some target took several tokens: the log-size bias is not uniform
    assert n_merged and n_fallback


def test_merge_cross_view_copies_each_skipped_query_from_its_nearest_retained_cell_mate():
    """Cross-view attention under coredit_merge reuses the selection: keys from the neighbour's retained tokens,
    queries from the target's, and a skipped query takes the output of its nearest retained cell-mate (eq. 3
    where its cell holds none); nothing is merged there."""
    attn, x, cond_frames = _attn(), _x(frames=3), _x(seed=1, frames=3)
    keep, skip, sc = _select(x)
    pairs = ViewPairs.build(torch.arange(3), (torch.arange(3) + 1) % 3, 3)  # one neighbour (J = 1) per row
    cond = cond_frames[pairs.kv[:, 0]]
    geo = CallGeometry(HW, RATIO, LAYOUT, BANDS, tuple(band_budgets(HW, RATIO, LAYOUT.stride, LAYOUT.ordinal, BANDS)))
    method = build_method("coredit_merge")
    with torch.no_grad():
        out = pruned_cross_view_attention(attn, x, cond, pairs, Selection(keep, skip, sc), "qkv", HW, LAYOUT, BANDS,
                                          restore=lambda y, xq, s: method.restore_cross_view(y, xq, s, geo))
        cells = _cells(HW, BANDS, LAYOUT.grid, LAYOUT.subgrid)
        n_copied = n_fallback = 0
        for f in range(3):
            kept = keep[f].tolist()
            y = _hand_attention(attn, x[f, kept], cond[f, keep[(f + 1) % 3]])
            row = {t: y[r] for r, t in enumerate(kept)}
            torch.testing.assert_close(out[f, kept], y, atol=1e-5, rtol=1e-5)
            for i in skip[f].tolist():
                cands = [j for j in cells[0][i] if j in kept]
                if cands:
                    want, n_copied = row[_nearest(x[f], i, cands)], n_copied + 1
                else:
                    want, n_fallback = _eq3(row, row, sc[f], i, cells), n_fallback + 1
                torch.testing.assert_close(out[f, i], want, atol=1e-5, rtol=1e-5)
    assert n_copied and n_fallback


# ---------------------------------------------------------------------------------------------- coredit_kv


def test_kv_attends_every_query_over_the_retained_keys():
    attn, x = _attn(), _x()
    out = pruned_self_attention(attn, x, HW, RATIO, LAYOUT, BANDS, method="coredit_kv").out
    keep, _, _ = _select(x)
    with torch.no_grad():
        for f in range(x.shape[0]):
            ref = _hand_attention(attn, x[f], x[f, keep[f].tolist()])
            torch.testing.assert_close(out[f], ref, atol=1e-5, rtol=1e-5)
        dense = _hand_attention(attn, x[0])
    assert not torch.allclose(out[0], dense, atol=1e-3)


# ---------------------------------------------------------------------------------------------- todo


def _todo_reference(attn, x, hw, ratio, layout, bands):
    """Per band: pool the min(ceil(K_b / 3), whole 2x2 cells) whole cells with the largest |mean xhat| (ties: the
    lower cell); every query attends over the unpooled tokens and the pooled cells' means."""
    H, W = hw
    hb = H // bands
    budgets = band_budgets(hw, ratio, layout.stride, layout.ordinal, bands)
    frames, counts = [], []
    for f in range(x.shape[0]):
        xn = x[f] / x[f].norm(dim=-1, keepdim=True)
        pooled = []
        for b in range(bands):
            whole = []  # whole cells of the band, in row-major (cell id) order
            for r in range(b * hb, (b + 1) * hb, 2):
                for c in range(0, W, 2):
                    if r + 2 <= (b + 1) * hb and c + 2 <= W:
                        whole.append([r * W + c, r * W + c + 1, (r + 1) * W + c, (r + 1) * W + c + 1])
            n_pool = min(math.ceil(budgets[b] / 3), len(whole))
            score = [float(sum(xn[t] for t in cell).norm() / 4) for cell in whole]
            order = sorted(range(len(whole)), key=lambda k: (-score[k], k))
            pooled += [whole[k] for k in order[:n_pool]]
            counts.append(n_pool)
        gone = {t for cell in pooled for t in cell}
        kv = [x[f, t] for t in range(H * W) if t not in gone] + [sum(x[f, t] for t in cell) / 4 for cell in pooled]
        frames.append(_hand_attention(attn, x[f], torch.stack(kv)))
    return torch.stack(frames), counts, pooled


@pytest.mark.parametrize("hw, bands", [((7, 10), 1), ((6, 7), 2)])  # odd band heights and widths: clipped cells
def test_todo_matches_a_loop_reference(hw, bands):
    attn, x = _attn(), _x(hw)
    layout = BlockLayout(1, (3, 4), (2, 2), 2)
    seen = []

    def attend(a, red):
        seen.append(red)
        return local_attend()(a, red)

    budgets = band_budgets(hw, 0.25, layout.stride, layout.ordinal, bands)
    assert all(k % 3 for k in budgets)  # ceil(K_b / 3) != K_b // 3
    out = pruned_self_attention(attn, x, hw, 0.25, layout, bands, attend=attend, method="todo").out
    with torch.no_grad():
        ref, counts, _ = _todo_reference(attn, x, hw, 0.25, layout, bands)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    P = sum(counts[:bands])
    assert seen[0].kv.shape == (x.shape[0], hw[0] * hw[1] - 3 * P, C) and seen[0].q is x
    assert P > 0


def test_todo_ties_go_to_the_lower_cell_and_the_count_caps_at_the_whole_cells():
    hw, layout, attn = (4, 6), BlockLayout(0, (2, 2), (2, 2), 2), _attn()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 24, C, generator=g)  # incoherent cells (|mean xhat| ~ 0.5)
    base = torch.randn(C, generator=g)
    a = [0, 1, 6, 7]  # cell 0 and cell 2 = {4, 5, 10, 11}: the same directions (cell 2 = 2 x cell 0)
    for k, t in enumerate(a):
        x[0, t] = base + 0.05 * torch.randn(C, generator=g)
        x[0, [4, 5, 10, 11][k]] = 2 * x[0, t]
    seen = []

    def attend(a_, red):
        seen.append(red)
        return local_attend()(a_, red)

    ratio = 0.05  # K = 1: one pooled cell
    assert band_budgets(hw, ratio, layout.stride, layout.ordinal, 1) == [1]
    out = pruned_self_attention(attn, x, hw, ratio, layout, 1, attend=attend, method="todo").out
    torch.testing.assert_close(seen[0].kv[0, -1], x[0, a].mean(0))  # the lower of the two tied cells
    with torch.no_grad():
        ref, _, pooled = _todo_reference(attn, x, hw, ratio, layout, 1)
    assert pooled == [a]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # a budget above 3 x the whole cells pools every whole cell: 3 x 5 frame, K = 7 (ceil(7 / 3) = 3), but only
    # 2 whole cells (the last row and column are clipped)
    assert band_budgets((3, 5), 0.49, 2, 0, 1) == [7]
    seen.clear()
    pruned_self_attention(attn, x[:, :15], (3, 5), 0.49, layout, 1, attend=attend, method="todo")
    assert seen[0].kv.shape[1] == 15 - 3 * 2


# ---------------------------------------------------------------------------------------------- every method


@pytest.mark.parametrize("name", NEW)
def test_every_method_ratio_zero_is_dense_shape_gradients_and_determinism(name):
    attn, x = _attn(), _x()
    with torch.no_grad():
        dense = torch.stack([_hand_attention(attn, x[f]) for f in range(x.shape[0])])
        zero = pruned_self_attention(attn, x, HW, 0.0, LAYOUT, BANDS, method=name).out
    torch.testing.assert_close(zero, dense, atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_(True)
    out = pruned_self_attention(attn, xg, HW, RATIO, LAYOUT, BANDS, method=name).out
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, dense, atol=1e-4)  # it did reduce something
    attn.zero_grad()
    (out.square().mean() + out.mean()).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    for p in attn.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    with torch.no_grad():
        again = [pruned_self_attention(attn, x.clone(), HW, RATIO, LAYOUT, BANDS, method=name).out
                 for _ in range(2)]
    assert torch.equal(again[0], again[1]) and torch.equal(again[0], out.detach())


# ---------------------------------------------------------------------------------------------- through the plugin

GRIDS = [((4, 4), (2, 2)), ((3, 4), (3, 2))]


def _host_inputs():
    g = torch.Generator().manual_seed(1)
    B, NC, T, H, W = 1, 6, 2, 16, 20  # 8 x 10 tokens per frame
    return dict(x=torch.randn(B, NC, 4, T, H, W, generator=g), timestep=torch.tensor([300.0]),
                y=torch.randn(B, 5, 32, generator=g), cams=torch.randn(B, NC, 12, generator=g),
                bev_map=torch.randn(B, 3, 16, 16, generator=g))


@pytest.fixture(scope="module")
def host():
    torch.manual_seed(0)
    model = MultiViewSTDiT(host_config("tiny")).train()
    with torch.no_grad():
        dense = model(**_host_inputs())
    return model, dense


@pytest.mark.parametrize("name", NEW)
def test_plugin_runs_each_method_forward_and_backward(host, name):
    model, dense = host
    ctrl = cv.apply(model, dict(ratios=0.3, grids=GRIDS, stride=2, method=name))
    try:
        assert ctrl.method.name == name
        model.zero_grad()
        inp = _host_inputs()
        inp["x"].requires_grad_(True)
        y = model(**inp)
        assert y.shape == dense.shape and torch.isfinite(y).all()
        assert not torch.allclose(y, dense, atol=1e-5)  # the method pruned
        (y.square().mean() + y.mean()).backward()
        assert torch.isfinite(inp["x"].grad).all() and inp["x"].grad.abs().sum() > 0
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads)
    finally:
        cv.remove(model)


@pytest.mark.parametrize("name", NEW)
def test_plugin_cross_view_qkv_only_for_methods_that_support_it(host, name):
    model, dense = host
    cfg = dict(ratios=0.3, grids=GRIDS, stride=2, method=name, cross_view="qkv")
    if not REGISTRY[name].supports_cross_view:
        assert name in ("coredit_kv", "todo")
        with pytest.raises(ValueError, match="cross_view") as err:
            cv.apply(model, cfg)
        assert "\n" not in str(err.value) and repr(name) in str(err.value)
        assert cv.get_controller(model) is None
        return
    assert name in ("coredit_copy", "coredit_sharp", "coredit_merge")
    ctrl = cv.apply(model, cfg)
    try:
        assert ctrl.cross_view_names
        with torch.no_grad():
            y = model(**_host_inputs())
        assert y.shape == dense.shape and torch.isfinite(y).all()
    finally:
        cv.remove(model)


def test_block_scope_refuses_a_method_whose_keys_differ_from_its_queries():
    """Block scope runs the block on one token set (Reduced.q): a method giving Reduced.kv that claims block scope
    is refused at its first call, naming the flag to clear."""
    import coredit_video as cv
    from coredit_video.methods import REGISTRY, register
    from coredit_video.methods.coredit_kv import CoReDiTKV
    from tests.test_cross_view import build, inputs

    class KVBlock(CoReDiTKV):
        name, supports_block_scope = "kv_block", True

    register(KVBlock)
    try:
        model = build()
        cv.apply(model, dict(ratios=0.3, method="kv_block", scope="block"))
        with torch.no_grad(), pytest.raises(ValueError, match="supports_block_scope = False"):
            model(**inputs())
        cv.remove(model)
    finally:
        REGISTRY.pop("kv_block", None)


def test_a_fine_tuning_config_refuses_a_method_that_passes_no_gradients():
    from coredit_video.methods import REGISTRY, register
    from coredit_video.methods.coredit import CoReDiT
    from coredit_video.training.config import build_train_config

    class Frozen(CoReDiT):
        name, trainable = "frozen_rule", False

    register(Frozen)
    try:
        base = dict(work_dir="w", model={}, data={})
        assert build_train_config(dict(base, prune=dict(method="coredit"))).prune.method == "coredit"
        with pytest.raises(ValueError, match=r"frozen_rule.*cannot be fine-tuned.*'coredit'"):
            build_train_config(dict(base, prune=dict(method="frozen_rule")))
    finally:
        REGISTRY.pop("frozen_rule", None)


def test_a_method_registered_at_run_time_runs_everywhere_the_table_reaches():
    """A new method is one class and one registry line: a renamed subclass of coredit_merge, registered now, runs
    through apply, count_flops (the same total as the class it renames), the front's cost and the probe."""
    import coredit_video as cv
    from coredit_video import flops as F
    from coredit_video.front import AttentionErrorProbe, flops_ratio, run_cost_flops
    from coredit_video.methods import REGISTRY, register
    from coredit_video.methods.coredit_merge import CoReDiTMerge
    from tests.test_cross_view import build, inputs

    class MyMerge(CoReDiTMerge):
        name = "my_merge"

    register(MyMerge)
    try:
        model, inp = build(), inputs()
        with torch.no_grad():
            cv.apply(model, dict(ratios=0.3, method="coredit_merge"))
            ref = model(**inp)
            ctrl = cv.apply(model, dict(ratios=0.3, method="my_merge"))
            assert torch.equal(model(**inp), ref)
            for scope in ("attention", "block"):
                mine = F.count_flops("magicdrive-v2-xl", ratios=0.4, method="my_merge", scope=scope)
                theirs = F.count_flops("magicdrive-v2-xl", ratios=0.4, method="coredit_merge", scope=scope)
                assert mine["pruned_total"] == theirs["pruned_total"] and mine["overhead_terms"]
            assert "my_merge" in F.METHODS and "my_merge" in F.BLOCK_SCOPE_METHODS
            xl = ("magicdrive-v2-xl", (848, 1600))
            assert run_cost_flops(*xl, "my_merge", [0.4, 0.1]) == run_cost_flops(*xl, "coredit_merge", [0.4, 0.1])
            assert flops_ratio(*xl, 0.4, "my_merge@block") == flops_ratio(*xl, 0.4, "coredit_merge@block") < 1
            cv.apply(model, dict(ratios=0.0))
            ctrl = cv.get_controller(model)
            probe = AttentionErrorProbe(ctrl, ["my_merge", "coredit_merge"], [0.3], temperature=0.05)
            probe.apply()
            model(**inp)
            err = probe.errors()
            assert err[("my_merge", 0.3)] == err[("coredit_merge", 0.3)] > 0
            cv.remove(model)
    finally:
        REGISTRY.pop("my_merge", None)
