"""Block scope (``prune.scope="block"``) on the built-in host, against references written here."""
import pytest
import torch

import coredit_video as cv
from coredit_video import ops
from tests.test_cross_view import GRIDS, HX, WX, T, build, inputs
from tests.test_methods import _cells, _eq3, _merge_groups



def prune(model, ratio=0.3, **extra):
    return cv.apply(model, dict(ratios=ratio, grids=GRIDS, stride=2, scope="block", **extra))


def token_counts(model, inp):
    seen = {}

    def rec(name):
        def fn(module, args, out):
            seen[name] = args[0].shape[1]
        return fn

    hs = [m.register_forward_hook(rec(n)) for n, m in model.named_modules() if n.endswith(".mlp") and "blocks" in n]
    with torch.no_grad():
        model(**inp)
    for h in hs:
        h.remove()
    return seen


def test_ratio_zero_is_dense_and_remove_is_exact():
    model, inp = build(), inputs()
    keys = list(model.state_dict())
    with torch.no_grad():
        dense = model(**inp)
        prune(model, 0.0)
        assert torch.equal(model(**inp), dense)
        prune(model, 0.3)
        assert not torch.allclose(model(**inp), dense)
        assert list(model.state_dict()) == keys
        assert cv.remove(model)
        assert torch.equal(model(**inp), dense)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_spatial_blocks_see_fewer_tokens_temporal_blocks_all():
    model, inp = build(), inputs()
    N = (HX // 2) * (WX // 2)
    prune(model, 0.3)
    seen = token_counts(model, inp)
    for name, n in seen.items():
        if "_s." in name:
            assert n < T * N, name
        else:
            assert n == T * N, name


def test_block_output_against_a_reference():
    """One block in block scope = its own forward on the gathered retained tokens, plus eq. 3 of the residual."""
    model, inp = build(), inputs()
    ctrl = prune(model, 0.3)
    block = model.base_blocks_s[1]
    ordinal = ctrl.names.index("base_blocks_s.1.attn")
    captured = {}

    def grab(module, args, out):
        captured["args"], captured["out"] = args, out

    h = block.register_forward_hook(grab)
    with torch.no_grad():
        model(**inp)
    h.remove()
    x, y, t_mod, T_, S, NC_ = captured["args"]
    geo = ctrl.layouts[ordinal]
    hw = (HX // 2, WX // 2)
    frames = x.reshape(-1, S, x.shape[-1])
    sc = ops.spatial_coherence(frames, hw, geo.grid, 1)
    keep, skip = ops.select_tokens(sc, hw, 0.3, geo.stride, geo.ordinal, 1)
    kept = torch.stack([frames[f, keep[f]] for f in range(frames.shape[0])])  # loop gather
    R = kept.shape[1]
    with torch.no_grad():
        out_kept = type(block).forward(block, kept.reshape(x.shape[0], T_ * R, -1), y, t_mod, T_, R, NC_)
    res = ops.reconstruct(out_kept.reshape(-1, R, x.shape[-1]) - kept, keep, skip, sc, hw, geo.grid, geo.subgrid, 1)
    ref = (frames + res).reshape(x.shape)
    torch.testing.assert_close(captured["out"], ref)
    for f in range(frames.shape[0]):  # retained tokens carry the block's own output
        torch.testing.assert_close(captured["out"].reshape(frames.shape)[f, keep[f]],
                                   out_kept.reshape(-1, R, x.shape[-1])[f])


def test_merge_block_output_against_a_loop_reference():
    """coredit_merge in block scope: the block's own forward on the merged inputs (each retained token averaged with
    the skipped tokens whose nearest retained cell-mate it is), no attention bias; every token adds its target's
    residual (a skipped token without a retained cell-mate: eq. 3 of the residuals)."""
    model, inp = build(), inputs()
    ctrl = prune(model, 0.3, method="coredit_merge")
    block = model.base_blocks_s[1]
    geo = ctrl.layouts[ctrl.names.index("base_blocks_s.1.attn")]
    captured = {}
    h = block.register_forward_hook(lambda m, a, o: captured.update(args=a, out=o))
    with torch.no_grad():
        model(**inp)
    h.remove()
    x, y, t_mod, T_, S, NC_ = captured["args"]
    hw, C = (HX // 2, WX // 2), x.shape[-1]
    frames = x.reshape(-1, S, C)
    sc = ops.spatial_coherence(frames, hw, geo.grid, 1)
    keep, skip = ops.select_tokens(sc, hw, 0.3, geo.stride, geo.ordinal, 1)
    cells = _cells(hw, 1, geo.grid, geo.subgrid)
    targets, merged = [], []
    for f in range(frames.shape[0]):
        kept = keep[f].tolist()
        target, groups = _merge_groups(frames[f], kept, skip[f].tolist(), cells[0])
        merged.append(torch.stack([sum(frames[f, t] for t in groups[j]) / len(groups[j]) for j in kept]))
        targets.append(target)
    merged = torch.stack(merged)
    R = merged.shape[1]
    with torch.no_grad():
        out_kept = type(block).forward(block, merged.reshape(x.shape[0], T_ * R, C), y, t_mod, T_, R, NC_)
    res = out_kept.reshape(-1, R, C) - merged
    out = captured["out"].reshape(frames.shape)
    n_merged = 0
    for f in range(frames.shape[0]):
        kept = keep[f].tolist()
        row = {t: res[f, r] for r, t in enumerate(kept)}
        torch.testing.assert_close(out[f, kept], frames[f, kept] + res[f], atol=1e-5, rtol=1e-5)
        for i in skip[f].tolist():
            want = row[targets[f][i]] if i in targets[f] else _eq3(row, row, sc[f], i, cells)
            n_merged += i in targets[f]
            torch.testing.assert_close(out[f, i], frames[f, i] + want, atol=1e-5, rtol=1e-5)
    assert n_merged > 0 and max(len(t) for t in targets) > 0


@pytest.mark.parametrize("method", ["coredit_kv", "tome", "todo"])
def test_methods_without_a_block_scope_are_refused(method):
    with pytest.raises(ValueError, match="block scope"):
        prune(build(), 0.3, method=method)


@pytest.mark.parametrize("method", ["coredit", "coredit_copy", "coredit_sharp", "coredit_merge"])
def test_training_backward_and_gradient_checkpointing(method):
    inp = inputs()
    grads = []
    for ckpt in (False, True):
        model = build(grad_checkpoint=ckpt).train()
        ctrl = prune(model, 0.3, method=method)
        ctrl.collect_stats(0.1)
        x = inp["x"].clone().requires_grad_(True)
        model(**dict(inp, x=x)).square().mean().backward()
        assert all(v is not None for v in ctrl.pop_stats())  # the schedule's statistics are recorded
        grads.append((x.grad, model.base_blocks_s[0].mlp.fc1.weight.grad))
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)  # a checkpoint recompute selects the same tokens


def test_late_steps_prune_less():
    model, inp = build(), inputs()
    ctrl = prune(model, 0.4)
    main = token_counts(model, inp)
    ctrl.set_phase("late")
    late = token_counts(model, inp)
    assert late["base_blocks_s.0.mlp"] > main["base_blocks_s.0.mlp"]
