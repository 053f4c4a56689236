"""The rectified-flow sampler: exact with an oracle velocity, CFG arithmetic, last-4-step phase."""
import pytest
import torch

import coredit_video as cv
from coredit_video.rflow import RFlowConfig
from coredit_video.sampling import sample


def oracle(x0):
    def forward(model, z, t, batch):
        s = (t / 1000).view(-1, *([1] * (z.dim() - 1)))
        x = x0.repeat(z.shape[0] // x0.shape[0], *([1] * (z.dim() - 1)))
        n = (z - (1 - s) * x) / s
        return x - n
    return forward


@pytest.mark.parametrize("transform", [False, True])
def test_oracle_velocity_recovers_the_data(transform):
    x0 = torch.randn(2, 3, 4, dtype=torch.float64)
    noise = torch.randn(2, 3, 4, dtype=torch.float64)
    cfg = RFlowConfig(num_sampling_steps=7, use_timestep_transform=transform, frame_rule="clamp")
    out = sample(None, oracle(x0), noise, {}, None, cfg, 848, 1600, 33)
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)  # float32 timesteps, like MagicDrive-V2


def test_guidance_combines_conditional_and_unconditional():
    calls = []

    def forward(model, z, t, batch):
        calls.append(batch["c"].clone())
        return batch["c"].view(-1, 1).expand_as(z)

    cfg = RFlowConfig(num_sampling_steps=1, use_timestep_transform=False)
    z = torch.zeros(2, 3)
    out = sample(None, forward, z, {"c": torch.tensor([1.0, 2.0])}, {"c": torch.tensor([0.0, 0.0])}, cfg, 1, 1, 1,
                 guidance=3.0)
    assert calls[0].tolist() == [1.0, 2.0, 0.0, 0.0]  # one doubled batch
    torch.testing.assert_close(out, torch.tensor([[3.0] * 3, [6.0] * 3]))  # v_u + 3 (v_c - v_u), dt = 1


def test_last_four_steps_run_in_the_late_phase(tiny_host, tiny_inputs):
    ctrl = cv.apply(tiny_host, dict(ratios=0.4, late_factor=0.25, late_steps=4,
                                    grids=[((4, 4), (2, 2))], stride=2))
    phases = []

    def forward(model, z, t, batch):
        phases.append(ctrl.phase)
        return model(z, t, batch["y"], batch["cams"], batch["bev_map"])

    cond = {k: tiny_inputs[k] for k in ("y", "cams", "bev_map")}
    sample(tiny_host, forward, tiny_inputs["x"], cond, None, RFlowConfig(num_sampling_steps=10, frame_rule="clamp"),
           24, 24, 3, controller=ctrl)
    assert phases == ["main"] * 6 + ["late"] * 4
    assert ctrl.phase == "main"
