"""docs/quality/hosts.json: one entry per shipped embedded host, each loadable through the config it names, and the
varied host's flow re-measured here: 15 of 30 steps on a held-out scene with a sampling seed of its own."""
import dataclasses
import json
import os

import pytest
import torch

from tests.dist.common import REPO

HOSTS = os.path.join(REPO, "docs", "quality", "hosts.json")
FIELDS = ("name", "config", "weights", "sha256", "dense_mAP", "codec_mAP", "dense_mIoU", "codec_mIoU", "fewer_steps")


def entries():
    with open(HOSTS) as f:
        return {h["name"]: h for h in json.load(f)["hosts"]}


def test_both_hosts_are_listed_with_their_fields_and_weights():
    from coredit_video.embedded.host.shipped import sha256_of
    from coredit_video.cli import load_train_config

    hosts = entries()
    assert {"embedded_tiny", "embedded_tiny_varied"} <= set(hosts)
    for name, h in hosts.items():
        assert all(h.get(k) is not None for k in FIELDS), name
        assert {"10", "15", "20", "24"} <= set(h["fewer_steps"]), name
        assert sha256_of(os.path.join(REPO, h["weights"])) == h["sha256"], name
        _, tcfg = load_train_config(os.path.join(REPO, h["config"]))
        assert tcfg.train.init_from == ("embedded" if name == "embedded_tiny" else name)


def sample(tcfg, bundle, steps, seed, scene=0):
    from coredit_video.sampling import sample as run

    item = bundle.dataset[scene]
    batch = bundle.collate([item])
    x0 = bundle.latents(batch)
    h, w, f = (v[0].item() for v in bundle.frame_info(batch))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    flow = dataclasses.replace(tcfg.rflow, num_sampling_steps=steps)
    with torch.no_grad():
        z = run(bundle.model, bundle.forward, noise, batch, None, flow, h, w, int(f))
    return bundle.codec.decode(z)[0]


@pytest.mark.parametrize("name", ["embedded_tiny_varied"])
def test_the_varied_hosts_flow_curves_on_an_unseen_scene_and_seed(name):
    """Independent of the measurement in hosts.json: another scene (world seed + 5000) and sampling seed."""
    from coredit_video.cli import load_train_config
    from coredit_video.evaluation.metrics_video import psnr
    from coredit_video.generation import to_uint8_frames
    from coredit_video.training.hosts import build_host_bundle, held_out_data

    h = entries()[name]
    _, tcfg = load_train_config(os.path.join(REPO, h["config"]))
    bundle = build_host_bundle(tcfg.model, held_out_data(tcfg.data, 1, 5000), tcfg.seed)
    bundle.init_weights(bundle.model, tcfg.train.init_from)
    bundle.model.eval()
    ref = sample(tcfg, bundle, 30, seed=4242)
    half = sample(tcfg, bundle, 15, seed=4242)
    p = sum(float(psnr(to_uint8_frames(a), to_uint8_frames(b), 255.0).mean()) for a, b in zip(half, ref)) / len(ref)
    assert p <= 40.0, p
