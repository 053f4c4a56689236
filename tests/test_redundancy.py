"""Eq. 4's redundancy increment ``dR = R(K + dK) - R(K)`` against a naive per-band sum, on one process and
with the sequence-parallel rescaling the controller applies (each rank sees ``bands / P`` bands)."""
import math

import pytest
import torch

import coredit_video as cv
from coredit_video.ops import redundancy_increment, spatial_coherence

from .conftest import SMALL_GRIDS


def naive_increment(sc, hw, ratio, delta, stride, l, bands):
    """Per frame and band: sort the non-forced scores (``(i + j - l) % m != 0``) descending, sum ranks
    ``[K, K + dK)`` with ``K = floor(r * band_tokens)``, ``dK = max(1, floor(delta * band_tokens))``; sum the
    bands, average the frames. Plain Python loops."""
    H, W = hw
    rows = H // bands
    band_tokens = rows * W
    K = math.floor(ratio * band_tokens)
    dK = max(1, math.floor(delta * band_tokens))
    per_frame = []
    for f in range(sc.shape[0]):
        total = 0.0
        for b in range(bands):
            vals = [float(sc[f, i * W + j]) for i in range(b * rows, (b + 1) * rows) for j in range(W)
                    if (i + j - l) % stride != 0]
            vals.sort(reverse=True)
            total += sum(vals[K:K + dK])
        per_frame.append(total)
    return sum(per_frame) / len(per_frame)


CASES = [  # (H, W, ratio, delta, stride, l, bands)
    (8, 6, 0.0, 0.1, 3, 0, 1),
    (8, 6, 0.25, 0.05, 3, 1, 2),
    (12, 5, 0.4, 0.1, 2, 3, 4),
    (6, 4, 0.6, 0.3, 2, 0, 2),  # K + dK runs past the non-forced tokens: the sum stops there
]


@pytest.mark.parametrize("H, W, ratio, delta, stride, l, bands", CASES)
def test_matches_naive_sum(H, W, ratio, delta, stride, l, bands):
    g = torch.Generator().manual_seed(H * 100 + W)
    sc = torch.rand(3, H * W, generator=g) * 2 - 1
    got = redundancy_increment(sc, (H, W), ratio, delta, stride, l, bands)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert float(got) == pytest.approx(naive_increment(sc, (H, W), ratio, delta, stride, l, bands), abs=1e-5)


@pytest.mark.parametrize("P", [2, 4])
def test_sp_rescaling_gives_the_frame_value(P):
    # what the controller records under SP: rank p holds rows [p*h, (p+1)*h) = bands/P whole bands, the stride
    # pattern shifted to frame coordinates (ordinal l - p*h); each rank scales its value by P and the
    # schedule averages over ranks
    H, W, ratio, delta, stride, l, bands = 16, 6, 0.3, 0.1, 3, 2, 8
    sc = torch.rand(2, H * W, generator=torch.Generator().manual_seed(P)) * 2 - 1
    h = H // P
    per_rank = [P * float(redundancy_increment(sc.view(2, H, W)[:, p * h:(p + 1) * h].reshape(2, -1), (h, W),
                                               ratio, delta, stride, l - p * h, bands // P)) for p in range(P)]
    assert sum(per_rank) / P == pytest.approx(naive_increment(sc, (H, W), ratio, delta, stride, l, bands), abs=1e-5)


def test_controller_records_eq4_of_each_block_input(tiny_host, tiny_inputs):
    ctrl = cv.apply(tiny_host, {"grids": SMALL_GRIDS, "stride": 2, "ratios": [0.1, 0.3, 0.0], "bands": 2})
    seen = {}
    for l, attn in enumerate(ctrl.modules):
        attn.register_forward_pre_hook(lambda m, args, l=l: seen.__setitem__(l, args[0].detach()))
    ctrl.collect_stats(0.1)
    with torch.no_grad():
        tiny_host(**tiny_inputs)
    stats = ctrl.pop_stats()
    hw = ctrl.hw
    for l, x in seen.items():
        (grid, _), stride = ctrl.cfg.grid_specs[l % 2], ctrl.cfg.stride
        sc = spatial_coherence(x, hw, grid, 2)
        assert stats[l] == pytest.approx(naive_increment(sc, hw, ctrl.ratios[l], 0.1, stride, l, 2), abs=1e-5)
