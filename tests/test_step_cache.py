"""The step cache of block scope (``prune.step_cache``) on the built-in host, in a denoising loop written here:
``ctrl.set_step(i, n)``, the output fed back, as a sampler does."""
import warnings

import pytest
import torch

import coredit_video as cv
from coredit_video.config import PruneConfig
from coredit_video.ops import select_tokens
from coredit_video.ops.partition import forced_mask
from coredit_video.step_cache import cache_bytes_per_block, stale_first_selection
from tests.test_cross_view import GRIDS, HX, NC, STRIDE, WX, T, build, inputs

N = (HX // 2) * (WX // 2)
CACHE = {"scope": "block", "step_cache": True, "max_stale": 2, "dense_steps": 1}


def loop(model, cfg=None, steps=5, inp=None, calls=1, cache_trace=None):
    """``steps`` denoising steps of ``model``; ``calls`` model forwards per step (guidance's two calls: the second
    on other conditions). Returns each step's outputs (a list per call)."""
    inp = inp or inputs()
    other = dict(inp, y=torch.zeros_like(inp["y"]))
    ctrl = cv.apply(model, dict(dict(ratios=0.5, grids=GRIDS, stride=STRIDE, late_steps=0), **cfg)) if cfg else None
    x, outs = inp["x"], []
    with torch.no_grad():
        for i in range(steps):
            if ctrl is not None:
                ctrl.set_step(i, steps)
            ys = [model(**dict(inp if c == 0 else other, x=x)) for c in range(calls)]
            outs.append(ys)
            if cache_trace is not None:
                cache_trace.append({k: (e.residual.clone(), e.age.clone()) for k, e in ctrl.step_cache.entries.items()})
            x = x - 0.2 * ys[0]
    return outs, ctrl


def test_the_issue_loop_dense_first_then_close_to_dense_repeatable_and_remove_exact():
    model = build()
    keys = list(model.state_dict())
    dense, _ = loop(model)
    got, ctrl = loop(model, CACHE)
    assert torch.equal(got[0][0], dense[0][0])  # dense_steps=1: the first step is dense
    for i in range(1, 5):
        y, d = got[i][0], dense[i][0]
        assert torch.isfinite(y).all() and not torch.equal(y, d)
        assert float((y - d).norm() / d.norm()) < 0.05, i  # close: the cache keeps each token's own residual
    assert ctrl.step_cache.nbytes > 0 and list(model.state_dict()) == keys
    again, _ = loop(model, CACHE)  # set_step(0, n) starts a fresh cache: the same loop gives the same outputs
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again))
    zero, _ = loop(model, dict(CACHE, ratios=0.0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(zero, dense))  # ratio 0 is dense at every step
    ctrl = cv.get_controller(model)
    assert cv.remove(model)
    assert ctrl.step_cache.nbytes == 0 and not ctrl.step_cache.entries  # remove frees the cache
    assert not any("forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(**inputs()), dense[0][0])


def test_the_cache_beats_neighbour_rebuilt_residuals():
    model = build()
    dense, _ = loop(model)
    cached, _ = loop(model, CACHE)
    rebuilt, _ = loop(model, {"scope": "block", "dense_steps": 1})
    err = lambda outs: sum(float((o[0] - d[0]).norm() / d[0].norm()) for o, d in zip(outs[1:], dense[1:]))  # noqa
    assert err(cached) < err(rebuilt)


def test_a_skipped_token_keeps_its_own_cached_residual_and_ages():
    model = build()
    trace = []
    loop(model, dict(CACHE, max_stale=None), steps=4, cache_trace=trace)
    for prev, now in zip(trace[1:], trace[2:]):
        for key, (res, age) in now.items():
            res0, age0 = prev[key]
            skipped = age > 0
            assert skipped.any() and (~skipped).any()
            assert torch.equal(age[skipped], age0[skipped] + 1)  # one step older
            assert torch.equal(res[skipped], res0[skipped])  # its own residual, untouched
            assert not torch.equal(res[~skipped], res0[~skipped])  # computed tokens refresh theirs


@pytest.mark.parametrize("max_stale", [None, 1, 2])
def test_no_token_stays_stale_past_max_stale(max_stale):
    """The m-stride pattern rotates, so without a cap every token is computed at least every ``stride`` steps; a cap
    below that shrinks the skip budget rather than be broken."""
    model = build()
    trace = []
    loop(model, dict(CACHE, max_stale=max_stale, ratios=0.5), steps=7, cache_trace=trace)
    bound = STRIDE - 1 if max_stale is None else min(max_stale, STRIDE - 1)
    worst = max(int(age.max()) for entries in trace for _, age in entries.values())
    assert worst == bound
    realized = [f for step, _, f in cv.get_controller(model).step_cache.realized if step >= 1]
    assert max(realized) > 0.2
    cv.remove(model)


def test_guidance_calls_never_share_an_entry():
    """Two calls per step (conditional, then unconditional) equal two loops of one call each."""
    model = build()
    both, _ = loop(model, CACHE, calls=2)
    cond, _ = loop(model, CACHE, calls=1)
    inp = inputs()
    other = dict(inp, y=torch.zeros_like(inp["y"]))
    ctrl = cv.apply(model, dict(ratios=0.5, grids=GRIDS, stride=STRIDE, late_steps=0, **CACHE))
    x, uncond = inp["x"], []
    with torch.no_grad():
        for i in range(5):
            ctrl.set_step(i, 5)
            ctrl.begin_forward()  # the conditional call's slot, not run here
            uncond.append(model(**dict(other, x=x)))
            x = x - 0.2 * both[i][0]
    for i in range(5):
        assert torch.equal(both[i][0], cond[i][0])
        assert torch.equal(both[i][1], uncond[i])
    assert not torch.equal(both[3][0], both[3][1])


def test_a_step_out_of_order_or_a_new_shape_rebuilds_the_cache_with_one_warning():
    model = build()
    ctrl = cv.apply(model, dict(ratios=0.5, grids=GRIDS, stride=STRIDE, late_steps=0, **CACHE))
    inp = inputs()
    with torch.no_grad():
        for i in range(3):
            ctrl.set_step(i, 5)
            model(**inp)
        with pytest.warns(UserWarning, match="rebuilt"):
            ctrl.set_step(4, 5)  # step 3 skipped
        assert not ctrl.step_cache.entries
        model(**inp)
        ctrl.set_step(0, 5)
        model(**inp)
        ctrl.set_step(1, 5)
        small = dict(inp, x=inp["x"][:, :, :, :1])  # one latent frame: another shape
        with pytest.warns(UserWarning, match="rebuilt"):
            y = model(**small)
        assert torch.isfinite(y).all()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ctrl.set_step(2, 5)
            model(**small)  # the rebuilt cache fits the new shape: no second warning


def test_training_and_hand_set_phases_never_use_the_cache():
    model = build().train()
    ctrl = cv.apply(model, dict(ratios=0.5, grids=GRIDS, stride=STRIDE, **CACHE))
    ctrl.set_step(0, 3)
    ctrl.set_step(1, 3)
    ctrl.set_phase("main")  # a trainer sets phases by hand: no sampling loop, no cache
    inp = inputs()
    inp["x"].requires_grad_(True)
    model(**inp).square().mean().backward()
    assert inp["x"].grad is not None and not ctrl.step_cache.entries


def test_config_refuses_the_cache_outside_block_scope_and_bad_values():
    with pytest.raises(ValueError, match="scope='block'"):
        PruneConfig.build({"step_cache": True})
    for bad in ({"max_stale": 0}, {"dense_steps": -1}, {"cache_select": "oldest"}, {"step_cache": 1}):
        with pytest.raises(ValueError):
            PruneConfig.build({"scope": "block", "step_cache": True, **bad})


def test_stale_first_selection_against_a_reference():
    """Skipped: the freshest tokens outside the shifted m-stride pattern, the most coherent among equally fresh;
    tokens max_stale old are kept; budgets shrink to what every band of every frame can skip."""
    g = torch.Generator().manual_seed(0)
    H, W, F, bands = 4, 6, 3, 2
    sc = torch.rand(F, H * W, generator=g) * 2 - 1
    age = torch.randint(0, 3, (F, H * W), generator=g, dtype=torch.int16)
    for phase in (0, 1, 2):
        keep, skip = stale_first_selection(sc, age, (H, W), [5, 5], 3, phase, bands, max_stale=2)
        forced = forced_mask(H, W, 3, phase)
        half = H * W // bands
        # every band's budget: at most what the tightest band of the tightest frame has free
        cap = min(sum(1 for t in range(b * half, (b + 1) * half) if not forced[t] and age[f, t] < 2)
                  for f in range(F) for b in range(bands))
        k_band = [min(5, cap)] * bands
        for f in range(F):
            want = []
            for b in range(bands):
                cand = [t for t in range(b * half, (b + 1) * half) if not forced[t] and age[f, t] < 2]
                cand.sort(key=lambda t: (int(age[f, t]), -float(sc[f, t]), t))
                want += cand[:k_band[b]]
            assert sorted(want) == skip[f].tolist()
            assert sorted(set(range(H * W)) - set(want)) == keep[f].tolist()


def test_select_tokens_with_explicit_budgets_and_must_keep_matches_the_default_when_unused():
    g = torch.Generator().manual_seed(1)
    sc = torch.rand(2, 48, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(select_tokens(sc, (6, 8), 0.4, 3, 1, 2),
                                                 select_tokens(sc, (6, 8), 0.0, 3, 1, 2, budgets=[9, 9])))
    must = torch.zeros(2, 48, dtype=torch.bool)
    must[:, :24] = True  # band 0 entirely kept
    keep, skip = select_tokens(sc, (6, 8), 0.0, 3, 1, 2, budgets=[0, 9], must_keep=must)
    assert skip.shape[1] == 9 and bool((skip >= 24).all())


@pytest.mark.parametrize("select", ["change", "coherence"])
def test_cache_bytes_are_counted(select):
    model = build()
    _, ctrl = loop(model, dict(CACHE, cache_select=select), steps=2)
    # float32 residual (and inputs for "change"), int16 age
    per_block = cache_bytes_per_block(NC * T, N, model.config.hidden, dtype_bytes=4, select=select)
    assert ctrl.step_cache.nbytes == len(ctrl) * per_block
    cv.remove(model)


def test_flops_cli_counts_the_cache_memory():
    import json
    import subprocess
    import sys

    from tests.dist.common import REPO

    out = subprocess.run([sys.executable, f"{REPO}/tools/flops.py", "--resolution", "848x1600", "--ratio", "0.5",
                          "--scope", "block", "--bands", "8", "--pad-h-to-bands", "--step-cache", "--json"],
                         capture_output=True, text=True, check=True).stdout
    m = json.loads(out)["step_cache"]
    # XL: 6 views x 5 latent frames, 56 x 100 tokens over 8 ranks, width 1152, bf16 residual and inputs + int16 age
    assert (m["frames"], m["tokens_per_rank"]) == (30, 700)
    assert m["bytes_per_block_per_rank"] == 30 * 700 * (1152 * 2 * 2 + 2)
    assert m["bytes_per_rank"] == m["blocks"] * m["bytes_per_block_per_rank"]


def test_gated_form_regates_each_skipped_token_with_this_step_s_gates():
    """cache_form='gated' (ToCa): the cache holds each token's attention and MLP branches before their adaLN gates
    and the rest of its residual; re-gated with the gates of the step that computed them, they give that step's
    block residual exactly. A loop in this form stays close to dense."""
    from coredit_video.step_cache import regate

    model = build()
    dense, _ = loop(model)
    outs, ctrl = loop(model, dict(CACHE, cache_form="gated"))
    assert all(e.branches is not None for e in ctrl.step_cache.entries.values())
    for i in range(1, 5):
        assert float((outs[i][0] - dense[i][0]).norm() / dense[i][0].norm()) < 0.05
    ctrl.set_step(0, 3)  # a fresh loop: the dense step's entries against the block residuals it computed
    seen = {}
    ordinal_of = {id(b): i for i, b in enumerate(ctrl.blocks)}

    def grab(module, args, out):
        seen[ordinal_of[id(module)]] = (args[0], out, ctrl.adapter.block_gates(module, args, {}))

    hooks = [b.register_forward_hook(grab) for b in ctrl.blocks]
    with torch.no_grad():
        model(**inputs())
    for h in hooks:
        h.remove()
    assert len(seen) == len(ctrl)
    for ordinal, (x, out, gates) in seen.items():
        BN, L, C = x.shape
        got = regate(ctrl.step_cache.entries[(0, ordinal)], gates, T)
        torch.testing.assert_close(got, (out - x).reshape(BN * T, L // T, C), rtol=1e-5, atol=1e-5)
    cv.remove(model)


def test_gated_form_needs_an_adapter_that_knows_the_gates(monkeypatch):
    from coredit_video.adapters.base import HostAdapter
    from coredit_video.embedded.host.adapter import BuiltinHostAdapter

    monkeypatch.setattr(BuiltinHostAdapter, "block_gates", HostAdapter.block_gates)
    with pytest.raises(ValueError, match="cache_form='residual'"):
        cv.apply(build(), dict(ratios=0.3, **dict(CACHE, cache_form="gated")))


def test_full_context_queries_are_rows_of_the_full_attention():
    """cache_context='self' / 'all': the computed tokens' attention over every token's (cached) keys and values is
    the matching rows of full self-attention over those inputs."""
    from coredit_video.attention.backends import dense_self_attention
    from coredit_video.step_cache import full_context_attention

    model = build()
    attn = model.base_blocks_s[0].attn
    g = torch.Generator().manual_seed(0)
    h_all = torch.randn(3, 20, attn.qkv.in_features, generator=g)
    keep = torch.sort(torch.randperm(20, generator=g)[:12]).values.expand(3, -1).contiguous()
    stale = h_all + 0.3 * torch.randn(h_all.shape, generator=g)  # the computed rows' cached inputs are outdated
    h = h_all.gather(1, keep.unsqueeze(-1).expand(-1, -1, h_all.shape[-1]))
    skipped = torch.ones(3, 20, dtype=torch.bool).scatter(1, keep, False)
    cached = torch.where(skipped.unsqueeze(-1), h_all, stale)
    with torch.no_grad(), full_context_attention(attn, cached, keep) as seen:
        out = attn(h)
    want = dense_self_attention(attn, h_all).gather(1, keep.unsqueeze(-1).expand(-1, -1, h_all.shape[-1]))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(seen["inputs"], h_all)  # the fresh rows replace the cached ones
    assert "forward" not in attn.__dict__  # the patch is gone after the call


def test_full_context_cross_view_keys_are_the_neighbours_every_token():
    """cache_context='all': a cross-view call's keys and values become the neighbour frames' every token (the
    skipped ones cached, the computed ones fresh), as the host's own call on full frames would give for the
    computed queries."""
    from coredit_video.embedded.host.adapter import ring_pairs
    from coredit_video.step_cache import full_context_cross_view

    model = build()
    attn = model.base_blocks_s[0].cross_view_attn
    B, V, Tn, Nf, R = 1, 3, 2, 10, 6
    C = attn.proj.in_features
    pairs = ring_pairs(B, V, Tn)
    g = torch.Generator().manual_seed(1)
    full = torch.randn(B * V * Tn, Nf, C, generator=g)  # every frame's cross-view input now
    keep = torch.stack([torch.sort(torch.randperm(Nf, generator=g)[:R]).values for _ in range(B * V * Tn)])
    skipped = torch.ones(B * V * Tn, Nf, dtype=torch.bool).scatter(1, keep, False)
    cached = torch.where(skipped.unsqueeze(-1), full, full + 0.5)  # stale rows for the computed tokens
    idx = keep.unsqueeze(-1).expand(-1, -1, C)
    h = full.gather(1, idx)  # the block's rows: the computed tokens
    cond_reduced = torch.cat([h[pairs.kv[:, j]] for j in range(2)], dim=1)  # what the block would pass
    with torch.no_grad(), full_context_cross_view(attn, pairs, cached, keep) as seen:
        out = attn(h, cond_reduced)
    cond_full = torch.cat([full[pairs.kv[:, j]] for j in range(2)], dim=1)  # independent: neighbours, every token
    with torch.no_grad():
        want = type(attn).forward(attn, full, cond_full).gather(1, idx)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(seen["inputs"], full) and "forward" not in attn.__dict__


def test_full_context_loop_and_its_refusals():
    model = build()
    dense, _ = loop(model)
    retained, _ = loop(model, CACHE)
    runs = {}
    for context in ("self", "all"):
        full = dict(CACHE, cache_context=context)
        got, ctrl = loop(model, full)
        runs[context] = got
        assert torch.equal(got[0][0], dense[0][0])
        for i in range(1, 5):
            y, d = got[i][0], dense[i][0]
            assert torch.isfinite(y).all() and not torch.equal(y, retained[i][0])
            assert float((y - d).norm() / d.norm()) < 0.05, i
        entries = list(ctrl.step_cache.entries.values())
        assert all(e.attn_inputs is not None for e in entries)
        # "all": the blocks with a cross-view attention (the base blocks) cache its inputs; "self" never does
        assert sum(e.cross_view_inputs is not None for e in entries) == (len(model.base_blocks_s) if context == "all"
                                                                         else 0)
        again, _ = loop(model, full)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again))
        zero, _ = loop(model, dict(full, ratios=0.0))
        assert all(torch.equal(a[0], b[0]) for a, b in zip(zero, dense))
        assert cv.remove(model) and not any("forward" in m.__dict__ for m in model.modules())
    assert not torch.equal(runs["self"][2][0], runs["all"][2][0])  # the cross-view keys changed the outputs
    with pytest.raises(ValueError, match="dense_steps >= 1"):
        PruneConfig.build(dict(CACHE, cache_context="all", dense_steps=0))
    with pytest.raises(ValueError, match="cache_context must be one of"):
        PruneConfig.build(dict(CACHE, cache_context="every"))
    one = 2 * 10 * 8 * 2  # F N C in bf16
    base = cache_bytes_per_block(2, 10, 8, 2, "coherence", "residual")
    assert cache_bytes_per_block(2, 10, 8, 2, "coherence", "residual", "self") == base + one
    assert cache_bytes_per_block(2, 10, 8, 2, "coherence", "residual", "all") == base + one
    assert cache_bytes_per_block(2, 10, 8, 2, "coherence", "residual", "all", cross_view=True) == base + 2 * one
