"""Progressive schedule, rectified-flow timing and config validation (no distributed runs here)."""
import math

import pytest
import torch

from coredit_video.rflow import (RFlowConfig, add_noise, late_mask, late_threshold, sampling_timesteps,
                                 timestep_transform, training_timesteps)
from coredit_video.schedule import ProgressiveSchedule, ScheduleConfig
from coredit_video.training.config import build_train_config

NAMES = [f"base_blocks_s.{i}.attn" for i in range(4)]


def run(schedule, per_step, steps):
    decisions = []
    for _ in range(steps):
        schedule.observe(per_step)
        d = schedule.step()
        if d is not None:
            decisions.append(d)
    return decisions


def test_picks_most_redundant_block_each_interval():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=3, target_ratio=0.5), NAMES, max_ratio=0.5)
    d = run(s, [0.1, 0.9, 0.5, 0.2], 3)
    assert [x.ordinal for x in d] == [1] and s.ratios == [0.0, 0.1, 0.0, 0.0]
    assert d[0].step == 3 and d[0].mean_ratio == pytest.approx(0.025)
    # no decision between intervals
    assert run(s, [0.1, 0.9, 0.5, 0.2], 2) == []


def test_average_over_steps_not_last_value():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=2, target_ratio=0.5), NAMES, max_ratio=0.5)
    s.observe([1.0, 0.0, 0.0, 0.0])
    s.step()
    s.observe([0.0, 0.8, 0.0, 0.0])  # block 1 has the larger last value, block 0 the larger mean
    d = s.step()
    assert d.ordinal == 0


def test_cap_respected_and_capped_blocks_skipped():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.2, interval=1, target_ratio=0.5), NAMES[:2], max_ratio=0.5)
    d = run(s, [1.0, 0.1], 4)
    assert [x.ordinal for x in d] == [0, 0, 0, 1]  # 0.2, 0.4, 0.5 (capped), then block 1
    assert s.ratios == [0.5, 0.2]
    assert max(s.ratios) <= 0.5


def test_stops_at_target_mean_ratio():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.05, interval=1, target_ratio=0.1), NAMES, max_ratio=0.5)
    run(s, [0.4, 0.3, 0.2, 0.1], 50)
    assert s.state.done and s.mean_ratio == pytest.approx(0.1)
    assert len(s.state.history) == 8


def test_ties_go_to_lowest_ordinal():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=1, target_ratio=0.5), NAMES, max_ratio=0.5)
    assert run(s, [0.3, 0.7, 0.7, 0.7], 1)[0].ordinal == 1


def test_blocks_without_statistics_are_not_picked():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=1, target_ratio=0.5), NAMES, max_ratio=0.5)
    assert run(s, [None, 0.2, None, 0.1], 1)[0].ordinal == 1


def test_all_reduce_hook_sees_sums_and_counts():
    seen = []

    def fake_all_reduce(t):  # another rank contributed [0, 0, 5, 0] with one count each
        seen.append(t.clone())
        t[:4] += torch.tensor([0.0, 0.0, 5.0, 0.0], dtype=t.dtype)
        t[4:] += 1

    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.1, interval=1, target_ratio=0.5), NAMES, max_ratio=0.5)
    s.observe([1.0, 2.0, 0.0, 0.0])
    d = s.step(all_reduce=fake_all_reduce)
    assert seen[0].tolist() == [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0] and d.ordinal == 2


def test_state_dict_round_trip():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.05, interval=2, target_ratio=0.3), NAMES, max_ratio=0.5)
    run(s, [0.1, 0.2, 0.3, 0.4], 5)
    s2 = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.05, interval=2, target_ratio=0.3), NAMES, max_ratio=0.5)
    s2.load_state_dict(s.state_dict())
    assert run(s, [0.4, 0.3, 0.2, 0.1], 7) == run(s2, [0.4, 0.3, 0.2, 0.1], 7)
    assert s.state_dict() == s2.state_dict()


def test_ratios_stay_on_the_delta_lattice():
    s = ProgressiveSchedule(ScheduleConfig(delta_ratio=0.02, interval=1, target_ratio=0.5), NAMES[:1], max_ratio=0.5)
    run(s, [1.0], 25)
    assert s.ratios == [0.5]


# ---------------------------------------------------------------------- rectified flow
def test_timestep_transform_matches_closed_form():
    cfg = RFlowConfig()
    t = torch.tensor([500.0])
    a = math.sqrt(848 * 1600 / 512 ** 2) * math.sqrt(33 // 17 * 5)
    expected = a * 0.5 / (1 + (a - 1) * 0.5) * 1000
    got = timestep_transform(t, torch.tensor([848.0]), torch.tensor([1600.0]), torch.tensor([33.0]), cfg)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_short_clips_need_an_explicit_frame_rule():
    with pytest.raises(ValueError, match="frame_rule"):
        sampling_timesteps(RFlowConfig(), 64, 112, 8)
    assert len(sampling_timesteps(RFlowConfig(frame_rule="clamp"), 64, 112, 8)) == 30


def test_late_threshold_is_the_sampler_time_of_the_fourth_last_step():
    cfg = RFlowConfig(num_sampling_steps=10, use_timestep_transform=False)
    assert sampling_timesteps(cfg, 1, 1, 1) == pytest.approx([1000, 900, 800, 700, 600, 500, 400, 300, 200, 100])
    assert late_threshold(cfg, 4, 1, 1, 1) == pytest.approx(400)
    m = late_mask(torch.tensor([399.0, 400.0, 401.0, 10.0]), cfg, 4, 1, 1, 1)
    assert m.tolist() == [True, True, False, True]


def test_late_mask_follows_each_samples_resolution():
    cfg = RFlowConfig()
    t = torch.tensor([300.0, 300.0])
    m = late_mask(t, cfg, 4, torch.tensor([224.0, 848.0]), torch.tensor([400.0, 1600.0]), torch.tensor([33.0, 33.0]))
    # big videos are shifted towards noise, so t=300 is already in their last 4 steps; small ones not
    assert late_threshold(cfg, 4, 848, 1600, 33) > 300 > late_threshold(cfg, 4, 224, 400, 33)
    assert m.tolist() == [False, True]


def test_training_timesteps_are_logit_normal_and_transformed():
    cfg = RFlowConfig(use_timestep_transform=False)
    t = training_timesteps(20000, cfg, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    u = t / 1000
    logit = torch.log(u / (1 - u))
    assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1) < 0.03


def test_add_noise_endpoints():
    cfg = RFlowConfig()
    x0, n = torch.ones(2, 3), torch.zeros(2, 3)
    assert add_noise(x0, n, torch.tensor([0.0, 1000.0]), cfg).tolist() == [[1, 1, 1], [0, 0, 0]]


# ---------------------------------------------------------------------- config validation
BASE = dict(work_dir="w", model=dict(type="builtin"), data=dict(type="synthetic"))


@pytest.mark.parametrize("bad, key", [
    (dict(train=dict(ckpt_every=0)), "train.ckpt_every"),
    (dict(schedule=dict(intervall=3)), "schedule.intervall"),
    (dict(schedule=dict(target_ratio=0.7)), "schedule"),
    (dict(optim=dict(precision="fp8")), "optim.precision"),
    (dict(parallel=dict(sp_size=0)), "parallel.sp_size"),
    (dict(prune=dict(max_ratio=1.5)), "prune"),
    (dict(prune=dict(max_ratio=0.3), schedule=dict(target_ratio=0.4)), "prune.max_ratio"),
    (dict(schedule=dict(max_ratio=0.5, target_ratio=0.2)), "schedule.max_ratio is gone: set the per-block cap once, "
                                                         "as prune.max_ratio"),
    (dict(epochs=3), "epochs"),
    (dict(optim=dict(decay_steps=-1)), "optim.decay_steps"),
    (dict(optim=dict(decay_steps=200), train=dict(steps=100)), "optim.decay_steps=200 exceeds train.steps=100"),
])
def test_bad_config_values_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_train_config(dict(BASE, **bad))


def test_cog_style_frame_rule():
    cfg = RFlowConfig(frame_rule="cog")
    t = torch.tensor([500.0])
    a = math.sqrt(424 * 800 / 512 ** 2) * math.sqrt(33 // 4 + 33 % 2)
    got = timestep_transform(t, torch.tensor([424.0]), torch.tensor([800.0]), torch.tensor([33.0]), cfg)
    assert got.item() == pytest.approx(a * 0.5 / (1 + (a - 1) * 0.5) * 1000, rel=1e-6)
