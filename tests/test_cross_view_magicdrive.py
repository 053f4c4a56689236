"""Cross-view pruning through the ``magicdrive_v2`` adapter on the real ``MagicDriveSTDiT3``
(``MAGICDRIVE_V2_ROOT``; skipped without a checkout, see ``tests/test_magicdrive_adapter.py``).

References are written here: MagicDrive-V2's own ``_construct_attn_input_from_map`` for the row layout, and
a plain softmax attention over neighbour tokens gathered by index for the pruned outputs.
"""
import pytest
import torch

import coredit_video as cv
from coredit_video import ops
from coredit_video.adapters.magicdrive import order_map_pairs
from tests.test_magicdrive_adapter import (CFG, GRIDS, MV_ORDER_MAP, NC, SPATIAL, assert_same_grads, build, forward,
                                           grads_of, inputs, md)  # noqa: F401  (md is a fixture)

CROSS_VIEW = ["base_blocks_s.0.cross_view_attn", "base_blocks_s.1.cross_view_attn"]
RATIO = 0.4


@pytest.fixture(scope="module")
def host(md):  # noqa: F811  (the real MagicDrive-V2 modules, or a skip)
    return md


def prune(model, mode, ratio=RATIO, select="self", **extra):
    return cv.apply(model, dict(CFG, ratios=ratio, cross_view=mode, cross_view_select=select, **extra))


def test_row_layout_matches_magicdrives_own(host):
    """``order_map_pairs`` names the frames MagicDrive-V2 puts in each cross-view row."""
    model = build(host)
    B, T, S, C = 2, 3, 1, 1
    frame = torch.arange(B * NC * T, dtype=torch.float32).view(B, NC, T).permute(0, 2, 1)  # [B, T, NC] ids
    h = frame.reshape(B * T, NC, S, C)  # "(B T) NC S C" with every token holding its frame id
    targets, neighbours, _ = model.base_blocks_s[0]._construct_attn_input_from_map(h, MV_ORDER_MAP, cat_seq=False)
    pairs = order_map_pairs(B, NC, T, MV_ORDER_MAP)
    assert torch.equal(targets[:, 0, 0].long(), pairs.q)
    assert torch.equal(neighbours[:, 0, 0].long(), pairs.kv[:, 0])
    assert torch.equal(pairs.q[pairs.first], torch.arange(B * NC * T))


def test_only_base_cross_view_attention_is_added(host):
    model = build(host)
    keys = list(model.state_dict())
    ctrl = prune(model, "qkv")
    patched = {n for n, m in model.named_modules() if "_coredit" in m.__dict__}
    assert patched == set(SPATIAL) | set(CROSS_VIEW)  # no control, temporal or cross-attention
    assert ctrl.cross_view_names == CROSS_VIEW
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("mode", ["kv", "qkv"])
def test_ratio_zero_dense_apply_twice_and_remove(host, mode):
    model, args = build(host), inputs()
    ref = forward(model, args)
    prune(model, mode, 0.0, backend="math")  # MagicDrive-V2's own float32 softmax path for self-attention
    assert torch.equal(forward(model, args), ref)
    prune(model, mode)
    once = forward(model, args)
    assert (once - ref).abs().max() > 1e-4
    prune(model, mode)
    assert torch.equal(forward(model, args), once)
    cv.remove(model)
    assert torch.equal(forward(model, args), ref)
    assert all("forward" not in m.__dict__ and "_coredit" not in m.__dict__ for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())


def _plain_attention(attn, xq, keys):
    C, h = xq.shape[-1], attn.num_heads
    d = C // h
    w, b = attn.qkv.weight, attn.qkv.bias
    q, kv = xq @ w[:C].T, keys @ w[C:].T
    if b is not None:
        q, kv = q + b[:C], kv + b[C:]
    kv = kv.view(-1, 2, h, d)
    q = attn.q_norm(q.view(-1, h, d)).transpose(0, 1)
    k, v = attn.k_norm(kv[:, 0]).transpose(0, 1), kv[:, 1].transpose(0, 1)
    a = torch.softmax((q @ k.transpose(1, 2)) * attn.scale, dim=-1)
    return attn.proj((a @ v).transpose(0, 1).reshape(-1, C))


@pytest.mark.parametrize("mode", ["kv", "qkv"])
def test_pruned_cross_view_matches_the_reference(host, mode):
    model, args = build(host), inputs(batch=2)
    ctrl = prune(model, mode)
    seen = {}
    names = ["base_blocks_s.1.attn", "base_blocks_s.1.cross_view_attn"]
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, a, out, n=n: seen.__setitem__(n, ([t.detach() for t in a], out.detach()))) for n in names]
    forward(model, args)
    for hd in handles:
        hd.remove()
    (x_self,), _ = seen[names[0]]
    (x, cond), got = seen[names[1]]
    hw, ordinal = ctrl.hw, 1
    grid, sub = GRIDS[ordinal % len(GRIDS)]
    sc = ops.spatial_coherence(x_self, hw, grid)
    keep, skip = ops.select_tokens(sc, hw, RATIO, CFG["stride"], ordinal)
    B, T = args["x"].shape[0], x_self.shape[0] // (args["x"].shape[0] * NC)
    attn = model.base_blocks_s[1].cross_view_attn
    ref, rows_q = [], []
    with torch.no_grad():
        row = 0
        for target, neighbours in MV_ORDER_MAP.items():
            for nb in neighbours:
                for b in range(B):
                    for t in range(T):
                        fq, fk = (b * NC + target) * T + t, (b * NC + nb) * T + t
                        xq = x[row] if mode == "kv" else x[row][keep[fq]]
                        ref.append(_plain_attention(attn, xq, cond[row][keep[fk]]))
                        rows_q.append(fq)
                        row += 1
        ref = torch.stack(ref)
        if mode == "qkv":
            fq = torch.tensor(rows_q)
            ref = ops.reconstruct(ref, keep[fq], skip[fq], sc[fq], hw, grid, sub)
    assert row == x.shape[0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("select", ["self", "fresh"])
def test_grad_checkpointing_gives_the_same_gradients(host, select):
    args = inputs()
    args["x_mask"] = torch.tensor([[True, False, True]])
    grads = []
    for ckpt in (False, True):
        model = build(host, grad_checkpoint=ckpt).train()
        ctrl = prune(model, "qkv", select=select, late_factor=0.5)
        model(**args).square().mean().backward()
        ctrl.set_phase("late")  # the recompute keeps its forward's phase and retained set
        grads.append(grads_of(model))
    assert grads[1]["base_blocks_s.0.cross_view_attn.qkv.weight"].abs().sum() > 0
    assert_same_grads(*grads)
