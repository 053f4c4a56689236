"""Pins the built-in host's pruned outputs and gradients, bit for bit, for a fixed seed and plan.

``tests/data/behaviour_pin.pt`` was written by ``python tests/test_behaviour_pin.py --write`` with the code
*before* the restructure (methods behind one table, the controller split); it must hold unchanged after
every later move. Cases: self-only CoReDiT, cross-view ``qkv`` (self and fresh selection), cross-view
``kv``, and every method the restructure started from, in both denoising phases, with a training-mode
backward (gradients of the input latents and of three parameters).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import coredit_video as cv
from coredit_video.embedded.host import MultiViewSTDiT, host_config

DATA = Path(__file__).parent / "data" / "behaviour_pin.pt"
GRIDS = [((4, 4), (2, 2)), ((3, 4), (3, 2))]
CASES = {
    "coredit": dict(),
    "cross_view_qkv": dict(cross_view="qkv"),
    "cross_view_qkv_fresh": dict(cross_view="qkv", cross_view_select="fresh"),
    "cross_view_kv": dict(cross_view="kv"),
    "random": dict(method="random"),
    "no_reconstruction": dict(method="no_reconstruction"),
    "tome": dict(method="tome"),
}
PARAMS = ("base_blocks_s.0.attn.qkv.weight", "base_blocks_s.1.cross_view_attn.qkv.weight",
          "base_blocks_s.1.mlp.fc1.weight", "control_blocks_s.0.attn.proj.weight")


def _inputs():
    g = torch.Generator().manual_seed(1)
    B, NC, T, H, W = 1, 6, 2, 16, 20  # 8 x 10 tokens per frame
    return dict(x=torch.randn(B, NC, 4, T, H, W, generator=g), timestep=torch.tensor([300.0]),
                y=torch.randn(B, 5, 32, generator=g), cams=torch.randn(B, NC, 12, generator=g),
                bev_map=torch.randn(B, 3, 16, 16, generator=g))


def run_case(extra: dict) -> dict:
    torch.manual_seed(0)
    model = MultiViewSTDiT(host_config("tiny"))
    ctrl = cv.apply(model, dict(ratios=0.35, grids=GRIDS, stride=2, **extra))
    out = {}
    for phase in ("main", "late"):
        ctrl.set_phase(phase)
        model.eval()
        with torch.no_grad():
            out[f"{phase}/eval"] = model(**_inputs())
    ctrl.set_phase("main")
    model.train()
    inp = _inputs()
    inp["x"].requires_grad_(True)
    torch.manual_seed(2)  # dropout, if any
    y = model(**inp)
    (y.square().mean() + y.mean()).backward()
    out["train/out"] = y.detach()
    out["train/grad_x"] = inp["x"].grad
    params = dict(model.named_parameters())
    for name in PARAMS:
        out[f"train/grad/{name}"] = params[name].grad
    cv.remove(model)
    return out


THREADS = 2  # the recording's intra-op threads: another count changes float reduction order (1e-8, not bit-equal)


def collect() -> dict:
    torch.set_num_threads(THREADS)
    return {case: run_case(extra) for case, extra in CASES.items()}


def test_outputs_and_gradients_are_bit_equal_to_the_pinned_run():
    ref = torch.load(DATA)
    assert set(ref) == set(CASES)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        got_all = {case: run_case(extra) for case, extra in CASES.items()}
    finally:
        torch.set_num_threads(threads)
    for case in CASES:
        got = got_all[case]
        assert set(got) == set(ref[case])
        for key, want in ref[case].items():
            assert got[key] is not None, f"{case} {key}: no gradient"
            assert torch.equal(got[key], want), (
                f"{case} {key}: max |diff| {float((got[key] - want).abs().max()):.3g} (must be bit-equal)")


if __name__ == "__main__" and "--write" in sys.argv:
    DATA.parent.mkdir(exist_ok=True)
    torch.save(collect(), DATA)
    print(f"wrote {DATA}")
