"""The shipped pre-trained embedded host: its digest is checked, it loads strictly into the built-in host,
it has learnt the synthetic world, and a broken file gives an error naming the command that rebuilds it."""
import hashlib
import json
import os
import shutil

import pytest
import torch

from coredit_video.embedded.host import MultiViewSTDiT, host_config
from coredit_video.embedded.host.shipped import (REBUILD_COMMAND, ShippedWeightsError, load_host_weights,
                                                 load_shipped_host, shipped_paths)

PT, MANIFEST = shipped_paths()


def test_shipped_file_digest_matches_its_manifest():
    with open(PT, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    manifest = json.load(open(MANIFEST))
    assert manifest["sha256"] == digest
    assert os.path.getsize(PT) <= 20 * 2 ** 20
    assert manifest["config"] == "configs/embedded_pretrain.py" and manifest["step"] > 0


def test_loads_strictly_and_every_weight_is_the_file_s():
    model = MultiViewSTDiT(host_config("tiny"))
    load_shipped_host(model)
    state = torch.load(PT, map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(state) == set(own)  # the host's own parameter names, nothing more or less
    for k, v in state.items():
        assert torch.equal(own[k], v.float()), k


def _flow_loss(model, item, codec, t_value):
    from coredit_video.embedded.world import collate

    batch = collate([item])
    x0 = codec.encode(batch["video"])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.full((1,), t_value)
    s = (t / 1000).view(-1, 1, 1, 1, 1, 1)
    x_t = s * noise + (1 - s) * x0  # rectified flow: x_t between data (t=0) and noise (t=1000)
    with torch.no_grad():
        v = model(x_t, t, batch["y"], batch["cams"], batch["bev_map"])
    return float(((v - (x0 - noise)) ** 2).mean())  # MagicDrive-V2 / Open-Sora: velocity = x0 - noise


def test_pre_trained_host_predicts_the_flow_on_held_out_scenes():
    from coredit_video.embedded.world import SyntheticDrivingDataset
    from coredit_video.embedded.codec import ToyCodec

    ds = SyntheticDrivingDataset(num_samples=2, views=6, frames=2, image_hw=(64, 112), seed=4242, cond_dim=32)
    codec = ToyCodec(latent_channels=4, factor=2)
    torch.manual_seed(0)
    random_init = MultiViewSTDiT(host_config("tiny")).eval()
    trained = MultiViewSTDiT(host_config("tiny")).eval()
    load_shipped_host(trained)
    for t in (300.0, 700.0):
        for i in range(2):
            assert _flow_loss(trained, ds[i], codec, t) < 0.6 * _flow_loss(random_init, ds[i], codec, t)


def test_corrupted_or_missing_file_names_the_rebuild_command(tmp_path):
    pt, js = tmp_path / "h.pt", tmp_path / "h.json"
    shutil.copy(PT, pt)
    shutil.copy(MANIFEST, js)
    model = MultiViewSTDiT(host_config("tiny"))
    load_host_weights(model, str(pt))  # an intact copy loads
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ShippedWeightsError, match="corrupted") as e:
        load_host_weights(model, str(pt))
    assert REBUILD_COMMAND in str(e.value) and "\n" not in str(e.value)
    os.remove(pt)
    with pytest.raises(ShippedWeightsError, match="missing") as e:
        load_host_weights(model, str(pt))
    assert REBUILD_COMMAND in str(e.value)


def test_another_host_config_is_refused_by_name(tmp_path):
    with pytest.raises(ShippedWeightsError, match="model.hidden=96 vs 64"):
        load_shipped_host(MultiViewSTDiT(host_config("tiny", hidden=96)))
