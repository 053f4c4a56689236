"""The training-step seam both hosts share (coredit_video.training.step), against naive references."""
import pytest
import torch

import coredit_video as cv
from coredit_video.rflow import RFlowConfig
from coredit_video.schedule import ProgressiveSchedule, ScheduleConfig
from coredit_video.embedded.host.bundle import builtin_forward
from coredit_video.training.losses import DistillConfig, flow_loss
from coredit_video.training.step import (BlockCapture, begin_step, distill_terms, end_step, make_teacher,
                                         run_phases, take_rows)

from .conftest import SMALL_GRIDS

CFG = {"grids": SMALL_GRIDS, "stride": 2}


def test_take_rows_per_sample_and_per_view_layouts():
    B, V = 3, 2
    idx = torch.tensor([2, 0])
    per_view = torch.arange(B * V * 2).view(B * V, 2)  # rows laid out (B V)
    batch = dict(a=torch.arange(B * 4).view(B, 4), cams=per_view, names=["x", "y", "z"], t=torch.tensor(5.0),
                 const=torch.ones(7), nested=dict(b=torch.arange(B)), order={0: [1]})
    out = take_rows(batch, idx, B, V)
    assert out["a"].tolist() == [[8, 9, 10, 11], [0, 1, 2, 3]]
    assert out["cams"].tolist() == [per_view[4].tolist(), per_view[5].tolist(), per_view[0].tolist(),
                                    per_view[1].tolist()]
    assert out["names"] == ["z", "x"] and out["nested"]["b"].tolist() == [2, 0]
    assert out["t"] is batch["t"] and out["const"] is batch["const"] and out["order"] == batch["order"]
    assert take_rows(batch, None, B, V) is batch


class _Ctrl:
    def __init__(self):
        self.phase, self.calls = "main", []

    def set_phase(self, phase):
        self.phase = phase

    def collect_stats(self, delta):
        self.calls.append(("collect", delta))

    def pop_stats(self):
        self.calls.append(("pop",))
        return [0.5, None]

    def set_ratios(self, ratios):
        self.calls.append(("set_ratios", list(ratios)))


def test_run_phases_groups_and_restores_batch_order():
    ctrl = _Ctrl()
    seen = []

    def fn(phase, idx):
        seen.append((phase, ctrl.phase, None if idx is None else idx.tolist()))
        rows = torch.arange(4) if idx is None else idx
        return dict(v=rows.float() * 10 + (1 if phase == "late" else 0))

    out = run_phases(ctrl, torch.tensor([False, True, False, True]), fn)
    assert seen == [("main", "main", [0, 2]), ("late", "late", [1, 3])]
    assert out["v"].tolist() == [0.0, 11.0, 20.0, 31.0] and ctrl.phase == "main"
    seen.clear()
    run_phases(ctrl, torch.tensor([True] * 4), fn)  # one phase: the whole batch, unsliced
    assert seen == [("late", "late", None)] and ctrl.phase == "main"

    def boom(phase, idx):
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        run_phases(ctrl, torch.tensor([True, False]), boom)
    assert ctrl.phase == "main"


def test_begin_and_end_step_drive_the_schedule():
    ctrl = _Ctrl()
    sched = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=1, target_ratio=0.05), ["a", "b"],
                                max_ratio=0.5)
    begin_step(ctrl, sched, active=False)
    begin_step(ctrl, sched)
    decision = end_step(ctrl, sched)
    assert decision.name == "a" and sched.ratios == [0.1, 0.0] and sched.state.done
    assert ctrl.calls == [("collect", None), ("collect", 0.1), ("pop",), ("collect", None),
                          ("set_ratios", [0.1, 0.0])]
    ctrl.calls.clear()
    begin_step(ctrl, sched)  # target reached: no more statistics
    assert end_step(ctrl, sched) is None and ctrl.calls[0] == ("collect", None) and sched.state.step == 2


def test_distill_terms_against_loops():
    g = torch.Generator().manual_seed(0)
    n = 2
    pred, teach = torch.randn(n, 3, 4, generator=g), torch.randn(n, 3, 4, generator=g)
    cap = BlockCapture(torch.nn.Identity(), None, None)
    outs = [(torch.randn(n * 5, 7, generator=g), torch.randn(n * 5, 7, generator=g)) for _ in range(2)]
    cap.student, cap.teacher = [a for a, _ in outs], [b for _, b in outs]
    terms = distill_terms(pred, teach, cap)
    for i in range(n):
        sq = [(float(pred[i].flatten()[k]) - float(teach[i].flatten()[k])) ** 2 for k in range(12)]
        assert terms["pred"][i].item() == pytest.approx(sum(sq) / 12, rel=1e-5)
        per_forward = []
        for a, b in outs:
            rows_a, rows_b = a[i * 5:(i + 1) * 5].flatten().tolist(), b[i * 5:(i + 1) * 5].flatten().tolist()
            per_forward.append(sum((x - y) ** 2 for x, y in zip(rows_a, rows_b)) / 35)
        assert terms["attn"][i].item() == pytest.approx(sum(per_forward) / 2, rel=1e-5)
    cap.student, cap.teacher = [torch.zeros(3, 7)], [torch.zeros(3, 7)]
    with pytest.raises(ValueError, match="3 rows for 2 samples"):
        distill_terms(pred, teach, cap)


def test_make_teacher_of_a_pruned_model(tiny_host, tiny_inputs):
    dense = tiny_host(**tiny_inputs)
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.3))
    pruned = tiny_host(**tiny_inputs)
    teacher = make_teacher(tiny_host)
    assert cv.get_controller(teacher) is None and not any(p.requires_grad for p in teacher.parameters())
    assert cv.get_controller(tiny_host).ratios == [0.3] * 3 and not teacher.training
    assert cv.get_controller(tiny_host) is ctrl  # the student keeps its controller
    torch.testing.assert_close(teacher(**tiny_inputs), dense)
    torch.testing.assert_close(tiny_host(**tiny_inputs), pruned)


def test_flow_loss_equals_one_sample_at_a_time(tiny_host):
    """The built-in loss with both phases and distillation: the mean over samples of each sample's terms,
    every sample run alone in its own phase with hooks set by hand."""
    g = torch.Generator().manual_seed(3)
    B, NC, T, H, W = 3, 6, 2, 12, 12
    x0 = torch.randn(B, NC, 4, T, H, W, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    batch = dict(y=torch.randn(B, 5, 32, generator=g), cams=torch.randn(B, NC, 12, generator=g),
                 bev_map=torch.randn(B, 3, 16, 16, generator=g))
    t = torch.tensor([700.0, 90.0, 400.0])
    late = torch.tensor([False, True, False])
    rflow = RFlowConfig()
    teacher = make_teacher(tiny_host)
    ctrl = cv.apply(tiny_host, dict(CFG, ratios=0.4, late_factor=0.5))
    block = ctrl.names[1]
    got = flow_loss(tiny_host, x0, batch, t, noise, late, builtin_forward, rflow, ctrl, teacher,
                    DistillConfig(enabled=True, alpha=0.5, beta=0.5), block)
    assert ctrl.phase == "main"

    ori, pred, attn = [], [], []
    for i in range(B):
        s = t[i] / rflow.num_timesteps
        x_t = ((1 - s) * x0[i] + s * noise[i])[None]
        sub = {k: v[i:i + 1] for k, v in batch.items()}
        ctrl.set_phase("late" if late[i] else "main")
        kept = {}
        hs = tiny_host.get_submodule(block).register_forward_hook(lambda m, a, o, k=kept: k.setdefault("s", o))
        ht = teacher.get_submodule(block).register_forward_hook(lambda m, a, o, k=kept: k.setdefault("t", o))
        with torch.no_grad():
            v = builtin_forward(tiny_host, x_t, t[i:i + 1], sub)
            v_t = builtin_forward(teacher, x_t, t[i:i + 1], sub)
        hs.remove()
        ht.remove()
        ctrl.set_phase("main")
        ori.append(((v - (x0[i] - noise[i])[None]) ** 2).mean())
        pred.append(((v - v_t) ** 2).mean())
        attn.append(((kept["s"] - kept["t"]) ** 2).mean())
    ref = {k: torch.stack(v).mean() for k, v in (("loss_ori", ori), ("loss_pred", pred), ("loss_attn", attn))}
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")
    assert ref["loss_attn"] > 0 and ref["loss_pred"] > 0
    torch.testing.assert_close(got["loss"], ref["loss_ori"] + 0.5 * ref["loss_pred"] + 0.5 * ref["loss_attn"],
                               rtol=1e-4, atol=1e-7)
    # the late sample really ran at c * r: in the main phase its prediction differs
    with torch.no_grad():
        s = t[1] / rflow.num_timesteps
        x_t = ((1 - s) * x0[1] + s * noise[1])[None]
        v_main = builtin_forward(tiny_host, x_t, t[1:2], {k: v[1:2] for k, v in batch.items()})
    assert ((v_main - (x0[1] - noise[1])[None]) ** 2).mean() != pytest.approx(ori[1].item(), rel=1e-6)
