"""Block scope (``prune.scope="block"``) through the ``magicdrive_v2`` adapter on the real ``MagicDriveSTDiT3``
(``MAGICDRIVE_V2_ROOT``; skipped without a checkout, see ``tests/test_magicdrive_adapter.py``).

The adapter's ``block_args`` put ``x``, ``T`` and ``S`` at positions 0, 6 and 7 of
``MultiViewSTDiT3Block.forward(x, y, t, mask, x_mask, t0, T, S, NC, mv_order_map, t_order_map)``; a control block
returns ``(x, after_proj(x))`` (``block_args["derived"]``). References are written here: the block's own forward on
the retained tokens gathered in a loop, plus eq. 3 of its residual (``coredit_video.ops``).
"""
import re

import pytest
import torch

import coredit_video as cv
from coredit_video import ops
from tests.test_magicdrive_adapter import (CFG, assert_same_grads, build, forward, grads_of, inputs,
                                           md)  # noqa: F401  (md is a fixture)

RATIO = 0.3
BLOCKS = ["base_blocks_s.0", "base_blocks_s.1", "control_blocks_s.0"]  # the prunable spatial blocks, plan order
# MaskGenerator's "image_head": the first latent frame is a given condition frame (x_mask False -> t0 modulation)
FIRST_FRAME = torch.tensor([[False, True, True]])
BLOCK_PART = re.compile(r"(base|control)_blocks_([st])\.(\d+)\.(mlp|attn|cross_view_attn)$")


@pytest.fixture(scope="module")
def host(md):  # noqa: F811  (the real MagicDrive-V2 modules, or a skip)
    return md


def prune(model, ratio=RATIO, **extra):
    return cv.apply(model, dict(CFG, ratios=ratio, scope="block", **extra))


def retained(ctrl, name, ratio=RATIO):
    """Tokens per view-frame block ``name`` keeps (bands=1): ``N - sum(band budgets)``."""
    geo = ctrl.layouts[ctrl.names.index(f"{name}.attn")]
    N = ctrl.hw[0] * ctrl.hw[1]
    return N - sum(ops.band_budgets(ctrl.hw, ratio, geo.stride, geo.ordinal, 1))


def test_ratio_zero_is_dense_state_dict_unchanged_and_remove_restores(host):
    model, args = build(host), inputs()
    keys = list(model.state_dict())
    ref = forward(model, args)
    prune(model, 0.0)
    assert {n for n, m in model.named_modules() if "_coredit" in m.__dict__} == set(BLOCKS)  # whole blocks
    assert torch.equal(forward(model, args), ref)
    prune(model, RATIO)
    out = forward(model, args)
    assert torch.isfinite(out).all() and (out - ref).abs().max() > 1e-3
    assert list(model.state_dict()) == keys
    assert cv.remove(model) is True
    assert torch.equal(forward(model, args), ref)
    assert all("forward" not in m.__dict__ and "_coredit" not in m.__dict__ for m in model.modules())
    assert not model._forward_pre_hooks and not any(m._forward_pre_hooks for m in model.modules())


def test_spatial_blocks_see_retained_tokens_temporal_blocks_all(host):
    """Self-attention, cross-view attention and MLP of every spatial block (base and control) run on the
    ``R = N - K`` retained tokens of each view-frame; the temporal blocks on all ``T*N``."""
    model, args = build(host), inputs()
    ctrl = prune(model, RATIO)
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if BLOCK_PART.match(name):
            handles.append(mod.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, a[0].shape)))
    forward(model, args)
    for h in handles:
        h.remove()
    T, N = args["x"].shape[2], ctrl.hw[0] * ctrl.hw[1]
    assert ctrl.hw == (6, 7) and len(seen) == 14  # attn + mlp of 3 spatial and 3 temporal blocks, 2 cross-view
    for name, shape in seen.items():
        group, kind, i, part = BLOCK_PART.match(name).groups()
        if kind == "t":
            assert shape[1] == (T if part == "attn" else T * N), name
            continue
        R = retained(ctrl, f"{group}_blocks_s.{i}")
        assert 0 < R < N
        assert shape[1] == (T * R if part == "mlp" else R), f"{name}: {tuple(shape)}"


@pytest.mark.parametrize("name", ["base_blocks_s.1", "control_blocks_s.0"])
def test_block_against_a_reference_with_a_conditioning_first_frame(host, name):
    """With MagicDrive-V2's x_mask (first frame a condition, modulated with t0): the block's output = its own
    forward on the retained tokens + eq. 3 of the residual; a control block's skip = after_proj of that output."""
    model, args = build(host), inputs()
    args["x_mask"] = FIRST_FRAME.clone()
    ctrl = prune(model, RATIO)
    block = model.get_submodule(name)
    captured = {}
    h = block.register_forward_hook(lambda m, a, out: captured.update(args=a, out=out))
    forward(model, args)
    h.remove()
    x, y, t, mask, x_mask, t0, T, S, NC, mv_order_map, t_order_map = captured["args"]
    assert x_mask is not None and t0 is not None and not x_mask[:, 0].any() and x_mask[:, 1:].all()
    geo, hw, C = ctrl.layouts[ctrl.names.index(f"{name}.attn")], ctrl.hw, x.shape[-1]
    frames = x.reshape(-1, S, C)  # [B*NC*T, S, C]
    sc = ops.spatial_coherence(frames, hw, geo.grid, 1)
    keep, skip = ops.select_tokens(sc, hw, RATIO, geo.stride, geo.ordinal, 1)
    kept = torch.stack([frames[f, keep[f]] for f in range(frames.shape[0])])  # loop gather
    R = kept.shape[1]
    assert R == retained(ctrl, name) < S

    def own(x_mask, t0):
        with torch.no_grad():
            return type(block).forward(block, kept.reshape(x.shape[0], T * R, C), y, t, mask, x_mask, t0, T, R, NC,
                                       mv_order_map, t_order_map)

    out = own(x_mask, t0)
    control = name.startswith("control")
    assert isinstance(out, tuple) == control and isinstance(captured["out"], tuple) == control
    out_kept = (out[0] if control else out).reshape(-1, R, C)
    res = ops.reconstruct(out_kept - kept, keep, skip, sc, hw, geo.grid, geo.subgrid, 1)
    ref = (frames + res).reshape(x.shape)
    got = captured["out"][0] if control else captured["out"]
    torch.testing.assert_close(got, ref)
    flat = got.reshape(frames.shape)
    for f in range(frames.shape[0]):  # retained tokens carry the block's own output, skipped ones differ from x
        torch.testing.assert_close(flat[f, keep[f]], out_kept[f])
        assert not torch.equal(flat[f, skip[f]], frames[f, skip[f]])
    if control:
        with torch.no_grad():
            torch.testing.assert_close(captured["out"][1], block.after_proj(ref))
        torch.testing.assert_close(captured["out"][1].reshape(frames.shape)[0, keep[0]], out[1].reshape(-1, R, C)[0])
    # guard: the conditioning frame's modulation really changes the block on the retained tokens
    plain = own(None, None)
    plain = plain[0] if control else plain
    diff = (plain - out_kept.reshape(plain.shape)).reshape(x.shape[0], T, R, C).abs().amax(dim=(0, 2, 3))
    assert diff[0] > 1e-4 and diff[1:].max() <= 1e-6  # only the x_mask=False frame takes the t0 path


def test_control_branch_runs_pruned_and_feeds_the_base_blocks(host):
    model, args = build(host), inputs()
    names = ["control_blocks_s.0", "base_blocks_s.0", "base_blocks_t.0"]

    def run():
        seen = {}
        hs = [model.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: seen.__setitem__(n, (a[0], out)))
              for n in names]
        out = forward(model, args)
        for h in hs:
            h.remove()
        return out, seen

    dense_out, dense = run()
    prune(model, RATIO)
    _, pruned = run()
    c_in, (c, c_skip) = pruned["control_blocks_s.0"]
    assert torch.equal(c_in, dense["control_blocks_s.0"][0])  # same input: the difference is the block's own
    assert (c - dense["control_blocks_s.0"][1][0]).abs().max() > 1e-4
    assert (c_skip - dense["control_blocks_s.0"][1][1]).abs().max() > 1e-4
    with torch.no_grad():  # every token, retained or rebuilt: skip = after_proj(output)
        torch.testing.assert_close(c_skip, model.control_blocks_s[0].after_proj(c))
    # the pruned skip enters the base stream: base_blocks_t.0 reads base_blocks_s.0's output + the control skip
    torch.testing.assert_close(pruned["base_blocks_t.0"][0], pruned["base_blocks_s.0"][1] + c_skip)
    # pruning the control blocks alone changes the base output through that skip
    prune(model, RATIO, blocks=["control_blocks_s"])
    out, only = run()
    assert torch.equal(only["base_blocks_s.0"][1], dense["base_blocks_s.0"][1])
    assert torch.equal(only["control_blocks_s.0"][1][1], c_skip)
    assert (out - dense_out).abs().max() > 1e-4


@pytest.mark.parametrize("method", ["coredit", "coredit_merge"])
def test_grad_checkpointing_gives_the_same_gradients(host, method):
    """MagicDrive-V2's own gradient checkpointing (set_grad_checkpoint, as grad_checkpoint=True in its train config)
    with an x_mask: the recompute prunes as its forward did (the phase changes before backward) and every gradient
    equals the plain run's."""
    args = inputs()
    args["x_mask"] = FIRST_FRAME.clone()
    grads = []
    for ckpt in (False, True):
        model = build(host, grad_checkpoint=ckpt).train()
        ctrl = prune(model, 0.4, late_factor=0.5, method=method)
        calls = []
        h = model.base_blocks_s[0].register_forward_pre_hook(lambda m, a, calls=calls: calls.append(1))
        loss = model(**args).square().mean()
        ctrl.set_phase("late")  # prunes less: a recompute that followed it would select other tokens
        loss.backward()
        h.remove()
        assert len(calls) == (2 if ckpt else 1)  # checkpointing really recomputed the block
        grads.append(grads_of(model))
    for name in ("base_blocks_s.0.mlp.fc1.weight", "control_blocks_s.0.mlp.fc1.weight",
                 "control_blocks_s.0.after_proj.weight", "base_blocks_s.1.cross_view_attn.qkv.weight"):
        assert grads[1][name].abs().sum() > 0, name
    assert_same_grads(*grads)


def test_a_tuple_output_without_derived_is_refused(host, monkeypatch):
    """A control block returns ``(x, after_proj(x))``: without ``block_args["derived"]`` block scope cannot know the
    second output and says so instead of returning something else."""
    model = build(host)
    ctrl = prune(model, RATIO)
    args = {k: v for k, v in ctrl.adapter.block_args.items() if k != "derived"}
    monkeypatch.setattr(ctrl.adapter, "block_args", args)
    with pytest.raises(ValueError, match=r"control_blocks_s\.0\.attn: the block returns 2 outputs.*derived"):
        forward(model, inputs())


def test_step_cache_loop_on_the_real_host_with_guidance_and_the_first_frame_mask(host):
    """The step cache (``prune.step_cache``) on the real ``MagicDriveSTDiT3``: a 5-step loop with guidance in one
    batch and the ``x_mask`` first-frame path; the dense step equals dense, later steps stay close, a second loop
    repeats exactly, control blocks keep ``out[1] == after_proj(out[0])``, state-dict keys and ``remove`` exact."""
    from tests.test_magicdrive_adapter import cfg_batch, null_condition

    model = build(host)
    keys = list(model.state_dict())
    cond = inputs()
    cond["rel_pos"] = cond["rel_pos"][..., :-1, :]  # as the sampler's add_null_condition keeps it
    args = cfg_batch(cond, null_condition(model, cond))
    args["x"] = torch.cat([cond["x"], cond["x"]])  # z_in = cat([z, z])
    args["timestep"] = torch.cat([cond["timestep"], cond["timestep"]])
    args["x_mask"] = FIRST_FRAME.repeat(2, 1)

    def loop(cache):
        ctrl = prune(model, 0.5, late_steps=0, **cache) if cache is not None else None
        x, outs = args["x"], []
        for i in range(5):
            if ctrl is not None:
                ctrl.set_step(i, 5)
            y = forward(model, dict(args, x=x))
            outs.append(y)
            x = x - 0.2 * y[:, :x.shape[1]]  # one latent update for both halves, as guidance gives
        if ctrl is not None and ctrl.step_cache is not None:
            cached_cross_view.append({o for (_, o), e in ctrl.step_cache.entries.items()
                                      if e.cross_view_inputs is not None})
        cv.remove(model)
        return outs

    cached_cross_view = []

    checked = []

    def after_proj_holds(module, inp, out):
        checked.append(torch.equal(out[1], module.after_proj(out[0])))

    dense = loop(None)
    handle = model.control_blocks_s[0].register_forward_hook(after_proj_holds)
    cached = loop(dict(step_cache=True, max_stale=2, dense_steps=1))
    handle.remove()
    assert checked and all(checked)
    assert torch.equal(cached[0], dense[0])
    for i in range(1, 5):
        assert torch.isfinite(cached[i]).all() and not torch.equal(cached[i], dense[i])
        assert float((cached[i] - dense[i]).norm() / dense[i].norm()) < 0.1, i
    gated = loop(dict(step_cache=True, max_stale=2, dense_steps=1, cache_form="gated"))  # ToCa's form, per-frame gates
    assert torch.equal(gated[0], dense[0])
    for i in range(1, 5):
        assert torch.isfinite(gated[i]).all() and not torch.equal(gated[i], cached[i])
        assert float((gated[i] - dense[i]).norm() / dense[i].norm()) < 0.1, i
    for context in ("self", "all"):  # the full context; "all": the cross-view pairs from mv_order_map
        full = loop(dict(step_cache=True, max_stale=2, dense_steps=1, cache_context=context))
        # "all" caches the cross-view inputs of the blocks that have a cross-view attention (the base blocks)
        assert sorted(cached_cross_view[-1]) == ([0, 1] if context == "all" else []), context
        assert torch.equal(full[0], dense[0])
        for i in range(1, 5):
            assert torch.isfinite(full[i]).all() and not torch.equal(full[i], cached[i])
            assert float((full[i] - dense[i]).norm() / dense[i].norm()) < 0.1, (context, i)
    rebuilt = loop(dict(dense_steps=1))
    err = lambda outs: sum(float((o - d).norm() / d.norm()) for o, d in zip(outs[1:], dense[1:]))  # noqa: E731
    assert err(cached) < err(rebuilt)  # each token's own cached residual beats the one rebuilt from neighbours
    assert all(torch.equal(a, b) for a, b in zip(cached, loop(dict(step_cache=True, max_stale=2, dense_steps=1))))
    assert list(model.state_dict()) == keys
    assert all(torch.equal(a, b) for a, b in zip(dense, loop(None)))


def test_the_adapter_gives_the_blocks_adaln_gates_with_the_first_frame_path(host):
    """``block_gates`` of the MagicDrive-V2 adapter against the block's own formula (einops, as upstream writes it):
    ``gate_msa`` / ``gate_mlp`` of ``scale_shift_table + t`` per sample and view; with ``x_mask`` per frame, the
    condition frames taking ``t0``'s."""
    from einops import repeat

    model, args = build(host), inputs()
    ctrl = prune(model, RATIO)
    block = model.base_blocks_s[0]
    captured = {}
    for x_mask in (None, FIRST_FRAME.clone()):
        captured.clear()
        h = block.register_forward_pre_hook(lambda m, a, k: captured.update(a=a, k=k), with_kwargs=True)
        forward(model, dict(args, x_mask=x_mask) if x_mask is not None else args)
        h.remove()
        a, k = captured["a"], captured["k"]
        x, t, mask_, t0, T, NC = a[0], a[2], a[4], a[5], int(a[6]), int(a[8])
        C = x.shape[-1]
        mod = lambda tt, NC=NC: repeat(block.scale_shift_table[None] + tt.reshape(tt.shape[0], 6, -1),  # noqa: E731
                                       "b ... -> (b NC) ...", NC=NC).chunk(6, dim=1)
        got = ctrl.adapter.block_gates(block, a, k)
        for g, i in zip(got, (2, 5)):
            if x_mask is None:
                torch.testing.assert_close(g, mod(t)[i], rtol=0, atol=0)
            else:
                want = torch.where(mask_[:, :, None, None], mod(t)[i][:, None], mod(t0)[i][:, None]).reshape(-1, 1, C)
                assert g.shape == (x.shape[0] * T, 1, C) and not torch.equal(mod(t)[i], mod(t0)[i])
                torch.testing.assert_close(g, want, rtol=0, atol=0)
    cv.remove(model)
