"""apply / remove on the built-in host: parity, round trips, isolation, errors."""
import functools
import json
import math

import pytest
import torch

import coredit_video as cv
from coredit_video.attention import BlockLayout, dense_self_attention, pruned_self_attention
from coredit_video.embedded.host import MultiViewSTDiT, host_config
from coredit_video.ops import reconstruct, select_tokens, spatial_coherence

from .conftest import SMALL_GRIDS

CFG = {"grids": SMALL_GRIDS, "stride": 2}


def naive_self_attention(attn, x):
    """``softmax(Q K^T / sqrt(d)) V`` written out on the module's weights (no project attention code):
    ``qkv`` rows are ``[q; k; v]`` split into heads, per-head LayerNorm on q and k, then ``proj``."""
    B, N, C = x.shape
    H = attn.num_heads
    d = C // H
    qkv = (x @ attn.qkv.weight.t() + attn.qkv.bias).reshape(B, N, 3, H, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, d]

    def layer_norm(t, norm):
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + norm.eps)
        return t * norm.weight + norm.bias

    q, k = layer_norm(q, attn.q_norm), layer_norm(k, attn.k_norm)
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)
    o = torch.einsum("bhnm,bmhd->bnhd", torch.softmax(scores, dim=-1), v).reshape(B, N, C)
    return o @ attn.proj.weight.t() + attn.proj.bias


def test_ratio_zero_equals_dense(tiny_host, tiny_inputs):
    ref = tiny_host(**tiny_inputs)
    cv.apply(tiny_host, dict(CFG, ratios=0.0))
    torch.testing.assert_close(tiny_host(**tiny_inputs), ref, rtol=1e-6, atol=1e-6)


def test_ratio_zero_equals_a_naive_reference(tiny_host, tiny_inputs):
    # the reference host runs its spatial self-attentions through code that shares nothing with the plugin
    spatial = [blk.attn for blk in list(tiny_host.base_blocks_s) + list(tiny_host.control_blocks_s)]
    for attn in spatial:
        attn.forward = functools.partial(naive_self_attention, attn)
    with torch.no_grad():
        ref = tiny_host(**tiny_inputs)
    for attn in spatial:
        del attn.forward
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.0))
    with torch.no_grad():
        torch.testing.assert_close(tiny_host(**tiny_inputs), ref, rtol=1e-5, atol=1e-5)
        ctrl.set_ratios(0.4)  # and the reference is sensitive to pruning
        assert (tiny_host(**tiny_inputs) - ref).abs().max() > 1e-3


def test_pruning_changes_output_and_round_trip_is_exact(tiny_host, tiny_inputs):
    ref = tiny_host(**tiny_inputs)
    keys = list(tiny_host.state_dict())
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.4))
    assert list(tiny_host.state_dict()) == keys
    out = tiny_host(**tiny_inputs)
    assert (out - ref).abs().max() > 1e-4 and torch.isfinite(out).all()
    assert ctrl.names == ["base_blocks_s.0.attn", "base_blocks_s.1.attn", "control_blocks_s.0.attn"]
    assert cv.remove(tiny_host) is True and cv.remove(tiny_host) is False
    assert torch.equal(tiny_host(**tiny_inputs), ref)
    assert list(tiny_host.state_dict()) == keys


def test_apply_is_idempotent(tiny_host, tiny_inputs):
    cv.apply(tiny_host, dict(CFG, ratios=0.3))
    once = tiny_host(**tiny_inputs)
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.3))
    assert cv.get_controller(tiny_host) is ctrl
    assert torch.equal(tiny_host(**tiny_inputs), once)
    cv.remove(tiny_host)
    assert cv.get_controller(tiny_host) is None
    assert all("forward" not in m.__dict__ for m in tiny_host.modules())


def test_checkpoint_saved_after_apply_loads_strictly(tiny_host, tiny_inputs, tmp_path):
    cv.apply(tiny_host, dict(CFG, ratios=0.3))
    torch.save(tiny_host.state_dict(), tmp_path / "ckpt.pt")
    fresh = MultiViewSTDiT(host_config("tiny")).eval()
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt"), strict=True)
    cv.remove(tiny_host)
    assert torch.equal(fresh(**tiny_inputs), tiny_host(**tiny_inputs))


def _record_io(model):
    io, handles = {}, []
    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_hook(
                lambda m, a, o, name=name: io.setdefault(name, []).append(
                    ([t.detach().clone() for t in a if torch.is_tensor(t)], o.detach().clone()))))
    return io, handles


def test_only_spatial_self_attention_changes(tiny_host, tiny_inputs):
    """Every module fed the same inputs gives the same output, except the patched spatial attentions."""
    dense_io, hs = _record_io(tiny_host)
    tiny_host(**tiny_inputs)
    [h.remove() for h in hs]
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.4))
    assert all("_coredit" not in blk.attn.__dict__ for blk in tiny_host.base_blocks_t)
    ctrl.set_frame(tiny_host.token_grid(tiny_inputs["x"]))
    # run each module of the pruned model on the dense run's recorded inputs
    changed = set()
    for name, mod in tiny_host.named_modules():
        if name not in dense_io or not isinstance(mod, torch.nn.Module):
            continue
        for args, out in dense_io[name]:
            if name.count(".") == 1 or len(args) != 1:  # whole blocks take extra non-tensor args
                continue
            if not torch.equal(mod(*args), out):
                changed.add(name)
    assert changed == set(ctrl.names)


def test_pruned_attention_matches_manual_composition():
    torch.manual_seed(0)
    attn = MultiViewSTDiT(host_config("tiny")).base_blocks_s[0].attn
    x = torch.randn(3, 6 * 7, 64)
    layout = BlockLayout(1, (4, 4), (2, 2), 2)
    y = pruned_self_attention(attn, x, (6, 7), 0.4, layout, bands=2).out
    sc = spatial_coherence(x, (6, 7), (4, 4), 2)
    keep, skip = select_tokens(sc, (6, 7), 0.4, 2, 1, 2)
    y_keep = attn(x.gather(1, keep[..., None].expand(-1, -1, 64)))  # host's own forward on retained tokens
    ref = reconstruct(y_keep, keep, skip, sc, (6, 7), (4, 4), (2, 2), 2)
    torch.testing.assert_close(y, ref)
    # ratio 0: the host's dense output, and an independent softmax(QK^T/sqrt d)V on the same weights
    torch.testing.assert_close(pruned_self_attention(attn, x, (6, 7), 0.0, layout).out, attn(x))
    torch.testing.assert_close(pruned_self_attention(attn, x, (6, 7), 0.0, layout).out, naive_self_attention(attn, x),
                               rtol=1e-5, atol=1e-5)
    y_keep_naive = naive_self_attention(attn, x.gather(1, keep[..., None].expand(-1, -1, 64)))
    torch.testing.assert_close(y, reconstruct(y_keep_naive, keep, skip, sc, (6, 7), (4, 4), (2, 2), 2),
                               rtol=1e-5, atol=1e-5)


def test_backends_agree():
    torch.manual_seed(0)
    attn = MultiViewSTDiT(host_config("tiny")).base_blocks_s[0].attn
    x = torch.randn(2, 30, 64)
    torch.testing.assert_close(dense_self_attention(attn, x, "sdpa"), dense_self_attention(attn, x, "math"),
                               rtol=1e-5, atol=1e-5)


def test_gradients_flow_and_checkpointing_is_deterministic(tiny_inputs):
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = MultiViewSTDiT(host_config("tiny", grad_checkpoint=ckpt)).train()
        cv.apply(model, dict(CFG, ratios=0.4))
        model(**tiny_inputs).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert grads[0]["base_blocks_s.0.attn.qkv.weight"].abs().sum() > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


def test_checkpoint_recompute_keeps_each_forwards_phase(tiny_inputs):
    """Training runs the main-phase group and the late-phase group as two forwards, then one backward;
    the recompute of the first forward must prune with the first forward's phase, not the current one."""
    half = {k: v[:1] for k, v in tiny_inputs.items()}
    other = {k: v[1:] for k, v in tiny_inputs.items()}
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = MultiViewSTDiT(host_config("tiny", grad_checkpoint=ckpt)).train()
        ctrl = cv.apply(model, dict(CFG, ratios=0.4, late_factor=0.25))
        ctrl.set_phase("main")
        a = model(**half)
        ctrl.set_phase("late")
        b = model(**other)
        ctrl.set_phase("main")  # as the training loss leaves it before backward
        (a.square().mean() + b.abs().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for n in grads[0]:
        err = (grads[0][n] - grads[1][n]).abs().max().item()
        assert err <= 1e-6 + 1e-5 * grads[0][n].abs().max().item(), f"{n}: gradients differ by {err:.2e}"


def test_phase_uses_late_factor(tiny_host):
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.4, late_factor=0.25))
    assert [ctrl.set_step(i, 30) for i in (0, 25, 26, 29)] == ["main", "main", "late", "late"]
    assert ctrl.effective_ratio(0) == pytest.approx(0.1)
    ctrl.set_phase("main")
    assert ctrl.effective_ratio(0) == pytest.approx(0.4)


def test_plan_round_trip(tiny_host, tmp_path):
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=[0.1, 0.2, 0.3]))
    ctrl.save_plan(str(tmp_path / "plan.json"))
    assert json.loads((tmp_path / "plan.json").read_text())["ratios"] == [0.1, 0.2, 0.3]
    ctrl2 = cv.apply(tiny_host, dict(CFG, plan=str(tmp_path / "plan.json")))
    assert ctrl2.ratios == [0.1, 0.2, 0.3]
    with pytest.raises(FileNotFoundError, match="save_plan"):
        cv.apply(tiny_host, dict(CFG, plan=str(tmp_path / "missing.json")))


def test_stats_collection(tiny_host, tiny_inputs):
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.0))
    ctrl.collect_stats(0.1)
    tiny_host(**tiny_inputs)
    stats = ctrl.pop_stats()
    assert len(stats) == 3 and all(s is not None and s > 0 for s in stats)
    assert ctrl.pop_stats() == [None, None, None]


@pytest.mark.parametrize(
    "cfg,match",
    [
        (dict(ratios=0.7), "max_ratio"),
        (dict(ratios=0.3, stride=3, grids=[((4, 4), (2, 2))]), "stride m=3 is larger than the sub-grid"),
        (dict(grids=[((2, 2), (3, 3))]), "larger than its grid"),
        (dict(ratio=0.3), "unknown pruning config key"),
        (dict(ratios=[0.1, 0.1]), "3 prunable blocks"),
    ],
)
def test_bad_config_errors(tiny_host, cfg, match):
    with pytest.raises(ValueError, match=match):
        cv.apply(tiny_host, cfg)


def test_ratio_above_cap_at_runtime(tiny_host):
    ctrl = cv.apply(tiny_host, dict(CFG, max_ratio=0.5))
    with pytest.raises(ValueError, match="max_ratio"):
        ctrl.set_ratio(0, 0.6)


def test_bands_must_divide_rows(tiny_host, tiny_inputs):
    cv.apply(tiny_host, dict(CFG, ratios=0.3, bands=4))  # 12 latent rows -> 6 token rows
    with pytest.raises(ValueError, match="force_pad_h_for_sp_size"):
        tiny_host(**tiny_inputs)


def test_wrong_token_count_is_reported(tiny_host):
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.3))
    ctrl.set_frame((5, 5))
    with pytest.raises(ValueError, match="expected \\[frames, 25 tokens, C\\]"):
        tiny_host.base_blocks_s[0].attn(torch.randn(2, 24, 64))


def test_heads_must_divide_sp_size(tiny_host, monkeypatch):
    from coredit_video import plugin

    monkeypatch.setattr(plugin, "sp_size_of", lambda group: 3)
    monkeypatch.setattr(type(plugin.find_adapter(tiny_host)), "sp_group", lambda self, m: object())
    with pytest.raises(ValueError, match="heads do not divide by the SP size 3"):
        cv.apply(tiny_host, dict(CFG, bands=3))


def test_unknown_model_has_clear_error():
    with pytest.raises(TypeError, match="no registered host adapter"):
        cv.apply(torch.nn.Linear(2, 2))
