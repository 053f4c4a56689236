"""The varied world (``data.appearance="varied"``): per-scene look beyond the conditions, geometry unchanged."""
import numpy as np
import pytest
import torch

from coredit_video.embedded.perception.segmentation import classify_objects
from coredit_video.embedded.world import SyntheticDrivingDataset
from coredit_video.embedded.world.appearance import draw_appearance, value_noise

CONDITION_KEYS = ("cams", "intrinsics", "cam2ego", "ego2global", "boxes", "labels", "box_mask", "y", "bev_map",
                  "view_layout", "timestamps")


def pair(n=6, **kw):
    kw.setdefault("frames", 2)
    return SyntheticDrivingDataset(n, **kw), SyntheticDrivingDataset(n, appearance="varied", **kw)


def test_plain_is_the_default_and_has_no_look():
    plain, _ = pair()
    assert plain.appearance == "plain" and plain.look(0) is None
    explicit = SyntheticDrivingDataset(6, frames=2, appearance="plain")
    assert torch.equal(explicit[2]["video"], plain[2]["video"])
    with pytest.raises(ValueError, match="plain.*varied"):
        SyntheticDrivingDataset(6, appearance="textured")


def test_varied_keeps_every_condition_and_changes_the_pixels():
    plain, varied = pair()
    for i in range(3):
        a, b = plain[i], varied[i]
        for k in CONDITION_KEYS:
            assert torch.equal(a[k], b[k]), k
        assert a["token"] == b["token"]
        diff = (a["video"] - b["video"]).abs().mean()
        assert diff > 0.02  # about 2.5 colour levels or more on average


def test_varied_is_deterministic_per_scene_and_independent_of_length():
    _, short = pair(4, seed=3)
    long_ = SyntheticDrivingDataset(500, frames=2, seed=3, appearance="varied")
    assert torch.equal(short[3]["video"], long_[3]["video"])
    assert torch.equal(short[3]["video"], short[3]["video"])
    assert not torch.equal(short[2]["video"], short[3]["video"])


def test_scenes_vary_in_lighting_weather_and_sensor():
    looks = [draw_appearance(0, i) for i in range(40)]
    assert len({lk.lighting for lk in looks}) == 3 and len({lk.weather for lk in looks}) == 3
    assert np.std([lk.gain for lk in looks]) > 0.03 and np.std([lk.noise_sigma for lk in looks]) > 0.3
    asphalt = np.array([lk.ground_colors[2] for lk in looks])
    assert asphalt.std(0).min() > 3  # the road's colour is not set by the conditions


def test_textures_give_neighbouring_tokens_different_content():
    """Token-sized (4x4 pixel) blocks of ground differ from their neighbours far more than in the plain world."""
    plain, varied = pair(4)

    def neighbour_diff(ds):
        out = []
        for i in range(4):
            r = ds.render(i)
            img = r["image"][:, 0].astype(np.float64)  # [NC, H, W, 3]
            nc, h, w, _ = img.shape
            blocks = img.reshape(nc, h // 4, 4, w // 4, 4, 3).mean((2, 4))
            ground = (r["ground"][:, 0] >= 0) & (r["ids"][:, 0] < 0)
            g = ground.reshape(nc, h // 4, 4, w // 4, 4).all((2, 4))
            both = g[:, :, 1:] & g[:, :, :-1]
            out.append(np.abs(blocks[:, :, 1:] - blocks[:, :, :-1]).sum(-1)[both])
        return float(np.median(np.concatenate(out)))

    assert neighbour_diff(varied) > 3 * max(neighbour_diff(plain), 0.5)


def test_textures_are_fixed_to_the_ground():
    xy = np.random.default_rng(0).uniform(-50, 50, size=(500, 2))
    a = value_noise(xy, 1.4, 7)
    assert np.array_equal(a, value_noise(xy.copy(), 1.4, 7)) and np.abs(a).max() <= 1.0
    near = value_noise(xy + 0.01, 1.4, 7)
    assert np.abs(near - a).max() < 0.1  # smooth at the scale of a centimetre
    assert np.corrcoef(a, value_noise(xy, 1.4, 8))[0, 1] < 0.3  # another seed, another texture


def test_the_built_in_perception_still_reads_the_box_classes():
    _, varied = pair(4)
    right = total = 0
    for i in range(4):
        r, it = varied.render(i), varied[i]
        for c in range(6):
            ids = r["ids"][c, 0]
            cls = classify_objects(r["image"][c, 0])
            for m in np.unique(ids[ids >= 0]):
                px = ids == m
                right += int((cls[px] == int(it["labels"][0, m])).sum())
                total += int(px.sum())
    assert total > 500 and right / total > 0.9
