"""Pins the built-in host's pruned outputs and gradients for a fixed seed and plan.

``tests/data/behaviour_pin.pt`` holds the run (``python tests/test_behaviour_pin.py --write``) and the
fingerprint of the machine that wrote it (torch version, CPU capability, CPU model, intra-op threads). Cases:
self-only CoReDiT, cross-view ``qkv`` (self and fresh selection), cross-view ``kv``, and the study's baselines,
in both denoising phases, with a training-mode backward (gradients of the input latents and of four parameters).

Where the fingerprint matches, every tensor must be bit-equal. Elsewhere float32 kernels round differently
(seen: 1.6e-6 on outputs of scale 2.5, 7e-7 of each tensor's largest entry), so each tensor must agree within
``REL_TOL`` of its largest entry: 14x that noise. The planted changes below (one more token skipped per frame,
restoration weights shifted by +0.1, the weights' gradient path cut) must fail that tolerance; the shifted
weights move the outputs by 3.8e-5 of their scale, the smallest of the three.
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
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
    "tomesd": dict(method="tomesd"),  # the pin's first "tome" (tomesd's form), bit-equal since
    "tome": dict(method="tome"),  # ToMe with proportional attention (added with tomesd)
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
REL_TOL = 1e-5  # of a tensor's largest |entry|, off the recording machine


def fingerprint() -> dict:
    """What decides float32 rounding here: a pin is bit-equal only on a machine with the same fingerprint."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(torch=str(torch.__version__), capability=torch.backends.cpu.get_cpu_capability(), cpu=model,
                threads=THREADS)


def collect() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return {case: run_case(extra) for case, extra in CASES.items()}
    finally:
        torch.set_num_threads(threads)


def mismatches(got_all: dict, ref: dict, exact: bool) -> list:
    """One line per tensor of ``ref`` that ``got_all`` misses, lacks a gradient for, or differs in: bit for bit
    when ``exact``, else by more than ``REL_TOL`` of the tensor's largest entry."""
    bad = []
    for case, want_case in ref.items():
        got = got_all.get(case, {})
        if set(got) != set(want_case):
            bad.append(f"{case}: keys {sorted(set(got) ^ set(want_case))} differ")
            continue
        for key, want in want_case.items():
            if got[key] is None:
                bad.append(f"{case} {key}: no gradient")
                continue
            diff = float((got[key] - want).abs().max()) if got[key].shape == want.shape else float("inf")
            bound = 0.0 if exact else REL_TOL * float(want.abs().max())
            if not (torch.equal(got[key], want) if exact else diff <= bound):
                bad.append(f"{case} {key}: max |diff| {diff:.3g} > {bound:.3g}"
                           + (" (same machine fingerprint: must be bit-equal)" if exact else ""))
    return bad


def load_pin() -> dict:
    pin = torch.load(DATA)
    assert set(pin) == {"fingerprint", "cases"} and set(pin["cases"]) == set(CASES)
    return pin


def test_outputs_and_gradients_match_the_pinned_run():
    pin = load_pin()
    exact = pin["fingerprint"] == fingerprint()
    bad = mismatches(collect(), pin["cases"], exact)
    assert not bad, "\n".join(bad[:10])


def _plant_one_more_skip(monkeypatch):
    import coredit_video.methods.coredit as mod

    real = mod.select_tokens

    def one_more(*args, **kw):
        keep, skip = real(*args, **kw)
        if keep.shape[1] < 2:
            return keep, skip
        return keep[:, :-1].contiguous(), torch.cat([skip, keep[:, -1:]], 1).contiguous()

    monkeypatch.setattr(mod, "select_tokens", one_more)


def _plant_restoration_weights(monkeypatch):
    import coredit_video.kernels as kernels

    real = kernels.reconstruct
    monkeypatch.setattr(kernels, "reconstruct", lambda y, keep, skip, sc, *a, **kw: real(y, keep, skip, sc + 0.1,
                                                                                       *a, **kw))


def _plant_cut_weight_gradient(monkeypatch):
    import coredit_video.kernels as kernels

    real = kernels.reconstruct
    monkeypatch.setattr(kernels, "reconstruct", lambda y, keep, skip, sc, *a, **kw: real(y, keep, skip, sc.detach(),
                                                                                       *a, **kw))


@pytest.mark.parametrize("plant, moves", [(_plant_one_more_skip, "eval"), (_plant_restoration_weights, "eval"),
                                          (_plant_cut_weight_gradient, "grad")])
def test_the_tolerance_still_fails_a_planted_change(plant, moves, monkeypatch):
    """Off the recording machine the pin compares within REL_TOL: a small change of behaviour must still fail."""
    ref = {"coredit": load_pin()["cases"]["coredit"]}
    plant(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        got = {"coredit": run_case(CASES["coredit"])}
    finally:
        torch.set_num_threads(threads)
    bad = mismatches(got, ref, exact=False)
    assert bad, "the planted change passed the cross-machine tolerance"
    assert any(moves in line for line in bad)


if __name__ == "__main__" and "--write" in sys.argv:
    DATA.parent.mkdir(exist_ok=True)
    torch.save(dict(fingerprint=fingerprint(), cases=collect()), DATA)
    print(f"wrote {DATA} on {fingerprint()}")
