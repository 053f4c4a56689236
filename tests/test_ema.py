"""EMA: the warm-up rule against a hand-unrolled average."""
import torch

from coredit_video.training.ema import EMA


def test_warm_up_decay_against_a_hand_unrolled_average():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, decay=0.9)
    ref = torch.zeros(1, 2)
    for step in range(30):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        ref = d * ref + (1 - d) * float(step + 1)
        assert torch.allclose(ema.shadow["weight"], ref)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(1000) == 0.9 and ema.decay_at(None) == 0.9


def test_fixed_decay_without_a_step():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    assert float(ema.shadow["weight"]) == 2.0
