"""Pruned cross-view attention on the built-in host, against references written here.

The references compute the selection with the pure-torch ops, gather each neighbour view-frame's retained
tokens with Python loops, and run a plain softmax attention on the host's weights; none of the plugin's
attention helpers is used.
"""
import pytest
import torch

import coredit_video as cv
from coredit_video import ops
from coredit_video.embedded.host import MultiViewSTDiT, host_config

GRIDS = [((4, 4), (2, 2)), ((3, 4), (3, 2))]
STRIDE = 2
B, NC, T, HX, WX = 1, 6, 2, 16, 20  # 8 x 10 tokens per frame


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return MultiViewSTDiT(host_config("tiny", **overrides)).eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(B, NC, 4, T, HX, WX, generator=g), timestep=torch.tensor([300.0] * B),
                y=torch.randn(B, 5, 32, generator=g), cams=torch.randn(B, NC, 12, generator=g),
                bev_map=torch.randn(B, 3, 16, 16, generator=g))


def prune(model, mode, ratio=0.3, select="self", **extra):
    return cv.apply(model, dict(ratios=ratio, grids=GRIDS, stride=STRIDE, cross_view=mode,
                                cross_view_select=select, **extra))


def capture(model, names):
    """Inputs and outputs of the named modules during the next forward."""
    seen = {}

    def hook(name):
        def fn(module, args, out):
            seen[name] = ([a.detach() for a in args], out.detach())
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    return seen, handles


def plain_attention(attn, xq, keys):
    """``xq [n, C]`` attends to ``keys [m, C]`` with the cross-view weights (q from ``qkv[:C]``)."""
    C, h = xq.shape[-1], attn.num_heads
    d = C // h
    w, b = attn.qkv.weight, attn.qkv.bias
    q = attn.q_norm((xq @ w[:C].T + b[:C]).view(-1, h, d)).transpose(0, 1)  # [h, n, d]
    kv = (keys @ w[C:].T + b[C:]).view(-1, 2, h, d)
    k, v = attn.k_norm(kv[:, 0]).transpose(0, 1), kv[:, 1].transpose(0, 1)
    a = torch.softmax((q @ k.transpose(1, 2)) * d ** -0.5, dim=-1)
    return attn.proj((a @ v).transpose(0, 1).reshape(-1, C))


def selection(x, hw, ordinal, ratio):
    grid = GRIDS[ordinal % len(GRIDS)][0]
    sc = ops.spatial_coherence(x, hw, grid)
    keep, skip = ops.select_tokens(sc, hw, ratio, STRIDE, ordinal)
    return sc, keep, skip


def reference(attn, x, cond, keep, mode, S):
    """Rows ``f = (b*NC + v)*T + t``; neighbour chunks are views ``v-1`` then ``v+1`` of the same ``(b, t)``."""
    out = []
    for b in range(B):
        for v in range(NC):
            for t in range(T):
                f = (b * NC + v) * T + t
                keys = []
                for j, nv in enumerate(((v - 1) % NC, (v + 1) % NC)):
                    nf = (b * NC + nv) * T + t
                    keys.append(cond[f, j * S:(j + 1) * S][keep[nf]])
                xq = x[f] if mode == "kv" else x[f][keep[f]]
                out.append(plain_attention(attn, xq, torch.cat(keys)))
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["kv", "qkv"])
@pytest.mark.parametrize("select", ["self", "fresh"])
def test_pruned_cross_view_matches_the_reference(mode, select):
    model, args = build(), inputs()
    ratio, ordinal = 0.3, 1
    ctrl = prune(model, mode, ratio, select)
    names = ["base_blocks_s.1.attn", "base_blocks_s.1.cross_view_attn"]
    seen, handles = capture(model, names)
    with torch.no_grad():
        model(**args)
    for h in handles:
        h.remove()
    hw, S = ctrl.hw, ctrl.hw[0] * ctrl.hw[1]
    (x_self,), _ = seen[names[0]]
    (x, cond), got = seen[names[1]]
    sc, keep, skip = selection(x_self if select == "self" else x, hw, ordinal, ratio)
    assert 0 < skip.shape[1] < S
    with torch.no_grad():
        ref = reference(model.base_blocks_s[1].cross_view_attn, x, cond, keep, mode, S)
        if mode == "qkv":
            sub = GRIDS[ordinal % len(GRIDS)][1]
            ref = ops.reconstruct(ref, keep, skip, sc, hw, GRIDS[ordinal % len(GRIDS)][0], sub)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    if mode == "qkv":  # skipped outputs are exactly the reconstruction of the retained ones
        rows = torch.arange(got.shape[0]).view(-1, 1)
        grid, sub = GRIDS[ordinal % len(GRIDS)]
        assert torch.equal(ops.reconstruct(got[rows, keep], keep, skip, sc, hw, grid, sub), got)


@pytest.mark.parametrize("mode", ["kv", "qkv"])
def test_ratio_zero_is_dense_exactly(mode):
    model, args = build(), inputs()
    with torch.no_grad():
        dense = model(**args)
        prune(model, mode, 0.0)
        assert torch.equal(model(**args), dense)
        prune(model, mode, 0.3)
        assert (model(**args) - dense).abs().max() > 1e-4  # the comparison above can fail


def test_cross_view_changes_the_output_beyond_self_attention():
    model, args = build(), inputs()
    with torch.no_grad():
        prune(model, "off")
        off = model(**args)
        prune(model, "kv")
        kv = model(**args)
        prune(model, "qkv")
        qkv = model(**args)
    assert (kv - off).abs().max() > 1e-4 and (qkv - kv).abs().max() > 1e-4


def test_only_base_cross_view_attention_is_patched_and_remove_is_exact():
    model, args = build(), inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        dense = model(**args)
        ctrl = prune(model, "qkv")
        once = model(**args)
        ctrl = prune(model, "qkv")  # apply twice == once
        assert torch.equal(model(**args), once)
    patched = {n for n, m in model.named_modules() if "_coredit" in m.__dict__}
    cross_view = {f"base_blocks_s.{i}.cross_view_attn" for i in range(model.config.depth)}
    assert patched == set(ctrl.names) | cross_view
    assert ctrl.cross_view_names == sorted(cross_view)
    assert list(model.state_dict()) == keys
    assert cv.remove(model) is True
    assert all("forward" not in m.__dict__ and "_coredit" not in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(**args), dense)
    prune(model, "off")
    assert {n for n, m in model.named_modules() if "_coredit" in m.__dict__} == set(ctrl.names)


def test_late_phase_decays_the_cross_view_ratio_too():
    model, args = build(), inputs()
    ctrl = prune(model, "kv", 0.4, late_factor=0.0)
    with torch.no_grad():
        ctrl.set_phase("late")  # c = 0: every block runs dense in the late phase, cross-view included
        late = model(**args)
        cv.remove(model)
        assert torch.equal(model(**args), late)


@pytest.mark.parametrize("mode", ["kv", "qkv"])
def test_gradient_checkpointing_gives_the_same_gradients(mode):
    args = inputs()
    grads = []
    for ckpt in (False, True):
        model = build(grad_checkpoint=ckpt).train()
        ctrl = prune(model, mode)
        ctrl.set_phase("main")
        model(**args).square().mean().backward()
        ctrl.set_phase("late")  # a recompute must keep the forward's phase (and its retained set)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)
    assert grads[0]["base_blocks_s.0.cross_view_attn.qkv.weight"].abs().sum() > 0


def test_config_rejects_unknown_modes():
    with pytest.raises(ValueError, match="cross_view must be one of"):
        cv.PruneConfig.build(cross_view="q")
    with pytest.raises(ValueError, match="cross_view_select must be one of"):
        cv.PruneConfig.build(cross_view_select="second")
    with pytest.raises(ValueError, match="or cross_view='off'") as e:
        cv.PruneConfig.build(cross_view="kv", method="random")
    for able in ("coredit", "coredit_copy", "coredit_sharp", "coredit_merge"):  # every method that supports it
        assert f"'{able}'" in str(e.value)
