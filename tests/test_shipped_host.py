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
    assert manifest["config"] == "configs/embedded_pretrain_layout.py" and manifest["step"] > 0
    assert manifest["host_config"]["view_layout_channels"] == 15


def test_loads_strictly_and_every_weight_is_the_file_s():
    model = MultiViewSTDiT(host_config("tiny"))
    load_shipped_host(model)
    state = torch.load(PT, map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(state) == set(own)  # the host's own parameter names, nothing more or less
    for k, v in state.items():
        assert torch.equal(own[k], v.float()), k


def _flow_loss(model, item, codec, t_value, layout=True):
    from coredit_video.embedded.world import collate

    batch = collate([item])
    x0 = codec.encode(batch["video"])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.full((1,), t_value)
    s = (t / 1000).view(-1, 1, 1, 1, 1, 1)
    x_t = s * noise + (1 - s) * x0  # rectified flow: x_t between data (t=0) and noise (t=1000)
    with torch.no_grad():
        v = model(x_t, t, batch["y"], batch["cams"], batch["bev_map"], batch["view_layout"] if layout else None)
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


def test_the_shipped_host_reads_the_view_layout():
    """The layout branch was trained, not left at its zero start: without the layout the flow is worse."""
    from coredit_video.embedded.world import SyntheticDrivingDataset
    from coredit_video.embedded.codec import ToyCodec

    ds = SyntheticDrivingDataset(num_samples=2, views=6, frames=2, image_hw=(64, 112), seed=4242, cond_dim=32)
    codec = ToyCodec(latent_channels=4, factor=2)
    trained = MultiViewSTDiT(host_config("tiny")).eval()
    load_shipped_host(trained)
    with_layout = sum(_flow_loss(trained, ds[i], codec, 700.0) for i in range(2))
    without = sum(_flow_loss(trained, ds[i], codec, 700.0, layout=False) for i in range(2))
    assert with_layout < 0.8 * without


def test_weights_without_the_layout_branch_grow_into_a_host_with_one(tmp_path):
    """Stage 2 of the pre-training starts from stage 1's weights: the new branch stays zero, so the grown host
    computes exactly what the old one did; any other missing or extra weight is refused in one line."""
    from coredit_video.embedded.host.shipped import export_host

    torch.manual_seed(1)
    old = MultiViewSTDiT(host_config("tiny", view_layout_channels=0)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.01 * torch.randn_like(p))  # non-zero after_proj etc.: the two hosts really compute something
    export_host(old.state_dict(), old.config, str(tmp_path / "old.pt"))
    grown = MultiViewSTDiT(host_config("tiny")).eval()
    desc = load_host_weights(grown, str(tmp_path / "old.pt"))
    assert "view_layout_embedder.weight" in desc
    assert grown.view_layout_embedder.weight.abs().max() == 0
    x, t = torch.randn(1, 6, 4, 2, 8, 14), torch.tensor([400.0])
    y, cams, bev = torch.randn(1, 9, 32), torch.randn(1, 6, 12), torch.rand(1, 3, 16, 16)
    layout = (torch.rand(1, 6, 15, 2, 16, 28) > 0.5).float()
    same_old = MultiViewSTDiT(host_config("tiny", view_layout_channels=0)).eval()
    load_host_weights(same_old, str(tmp_path / "old.pt"))  # the file's fp16 weights, as the grown host has them
    with torch.no_grad():
        ref = same_old(x, t, y, cams, bev)
        assert (ref - old(x, t, y, cams, bev)).abs().max() < 0.05  # the file is the old host (to fp16)
        torch.testing.assert_close(grown(x, t, y, cams, bev, layout), ref)
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    del state["t_block.1.weight"]
    export_host(state, old.config, str(tmp_path / "broken.pt"))
    with pytest.raises(ShippedWeightsError, match=r"1 weights missing \(e.g. \['t_block.1.weight'\]\)") as e:
        load_host_weights(MultiViewSTDiT(host_config("tiny")), str(tmp_path / "broken.pt"))
    assert "\n" not in str(e.value)


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
