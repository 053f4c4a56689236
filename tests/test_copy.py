"""A patched model survives ``copy.deepcopy`` (an EMA made after ``apply`` prunes with its own controller) and
``torch.save`` / ``torch.load``."""
import copy
import io

import torch

import coredit_video as cv

from .conftest import SMALL_GRIDS

CFG = {"grids": SMALL_GRIDS, "stride": 2, "ratios": 0.4}


def _out(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def _smaller(inputs):
    return dict(inputs, x=inputs["x"][..., :8, :8])  # another frame size: 4x4 tokens


def test_deepcopy_prunes_with_its_own_controller(tiny_host, tiny_inputs):
    dense = _out(tiny_host, tiny_inputs)
    ctrl = cv.apply(tiny_host, CFG)
    ema = copy.deepcopy(tiny_host)
    ema_ctrl = cv.get_controller(ema)
    assert ema_ctrl is not ctrl and ema_ctrl.model is ema and ctrl.model is tiny_host
    assert all(a.forward.controller is ema_ctrl for a in ema_ctrl.modules)
    assert ema_ctrl.modules[0] is ema.base_blocks_s[0].attn
    pruned = _out(tiny_host, tiny_inputs)
    assert (pruned - dense).abs().max() > 1e-4  # ratio 0.4 prunes
    torch.testing.assert_close(_out(ema, tiny_inputs), pruned, rtol=0, atol=0)
    # the copy's hooks tell the copy's controller its frame, never the original's
    _out(ema, _smaller(tiny_inputs))
    assert ema_ctrl.hw == (4, 4) and ctrl.hw == (6, 6)
    # set_step / ratios of the copy drive the copy only
    ctrl.set_step(0, 10)
    assert ema_ctrl.set_step(9, 10) == "late" and ctrl.phase == "main"
    late = _out(ema, tiny_inputs)
    ctrl.set_step(9, 10)
    torch.testing.assert_close(late, _out(tiny_host, tiny_inputs), rtol=0, atol=0)
    assert (late - pruned).abs().max() > 1e-5  # c * r differs from r
    ctrl.set_step(0, 10)
    ema_ctrl.set_ratios(0.0)
    torch.testing.assert_close(_out(ema, tiny_inputs), dense, rtol=0, atol=0)
    torch.testing.assert_close(_out(tiny_host, tiny_inputs), pruned, rtol=0, atol=0)
    # removing the copy's patch leaves the original patched, and the copy exactly as before
    assert cv.remove(ema) and cv.get_controller(tiny_host) is ctrl
    assert all("forward" not in m.__dict__ for m in ema.modules())
    assert not ema._forward_pre_hooks and all(not m._forward_pre_hooks for m in ema.modules())
    torch.testing.assert_close(_out(ema, tiny_inputs), dense, rtol=0, atol=0)
    assert len(tiny_host._forward_pre_hooks) == 1
    torch.testing.assert_close(_out(tiny_host, tiny_inputs), pruned, rtol=0, atol=0)


def test_torch_save_and_load_a_patched_model(tiny_host, tiny_inputs):
    dense = _out(tiny_host, tiny_inputs)
    cv.apply(tiny_host, dict(CFG, ratios=[0.1, 0.4, 0.3]))
    pruned = _out(tiny_host, tiny_inputs)
    buf = io.BytesIO()
    torch.save(tiny_host, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    ctrl = cv.get_controller(loaded)
    assert ctrl is not None and ctrl.model is loaded and ctrl.ratios == [0.1, 0.4, 0.3]
    torch.testing.assert_close(_out(loaded, tiny_inputs), pruned, rtol=0, atol=0)
    assert loaded.state_dict().keys() == tiny_host.state_dict().keys()
    assert cv.remove(loaded)
    torch.testing.assert_close(_out(loaded, tiny_inputs), dense, rtol=0, atol=0)


def test_deepcopy_prunes_cross_view_with_its_own_controller(tiny_host, tiny_inputs):
    dense = _out(tiny_host, tiny_inputs)
    off_host = copy.deepcopy(tiny_host)
    cv.apply(off_host, dict(CFG, cross_view="off"))
    off = _out(off_host, tiny_inputs)  # self-attention pruned only
    ctrl = cv.apply(tiny_host, dict(CFG, cross_view="kv"))
    kv = _out(tiny_host, tiny_inputs)
    assert (kv - off).abs().max() > 1e-4  # cross-view pruning changes the output
    ema = copy.deepcopy(tiny_host)
    ema_ctrl = cv.get_controller(ema)
    assert ema_ctrl is not ctrl and ema_ctrl.context is None  # a copy holds none of the original's forwards
    cross_view = [blk.cross_view_attn for blk in ema.base_blocks_s]
    assert ema_ctrl.cross_view_modules == cross_view
    assert all(m.forward.controller is ema_ctrl and m.forward.attn is m for m in cross_view)
    ctx = ctrl.context
    torch.testing.assert_close(_out(ema, tiny_inputs), kv, rtol=0, atol=0)
    assert ctrl.context is ctx and ema_ctrl.context is not ctx  # the copy's forward opened the copy's context
    ema_ctrl.set_ratios(0.0)
    torch.testing.assert_close(_out(ema, tiny_inputs), dense, rtol=0, atol=0)
    torch.testing.assert_close(_out(tiny_host, tiny_inputs), kv, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(tiny_host, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(_out(loaded, tiny_inputs), kv, rtol=0, atol=0)
