#!/usr/bin/env python
"""Write one host's entry of ``docs/quality/hosts.json`` from what was measured on it.

    python tools/host_card.py --name embedded_tiny --config configs/tiny_cpu.py \
        --metrics docs/embedded_host/metrics.json --front docs/quality/step_cache/front.json

``--metrics``: ``tools/host_report.py``'s ``metrics.json`` (dense generations and the ground truth through the codec,
scored by the built-in perception); ``--front``: a ``tools/front.py`` ``front.json`` with a ``fewer_steps`` line
(``--fewer-steps``), at the config's reference steps. The entry holds ``name``, ``config`` (whose
``train.init_from`` loads the host), ``weights`` and its ``sha256``, ``dense_mAP``, ``codec_mAP``, ``dense_mIoU``,
``codec_mIoU``, their ratios, and ``fewer_steps``: ``{steps: fidelity PSNR to the dense run at the reference steps}``
(mean over the front's seeds and scenes). Other hosts' entries are kept.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def host_entry(name: str, config: str, metrics: dict, front: dict) -> dict:
    """The ``hosts.json`` entry of host ``name`` from a host report's and a front's JSON payloads."""
    from coredit_video.embedded.host.shipped import read_shipped, shipped_paths

    m = metrics["metrics"]
    codec, dense = m["through the codec"], m["dense generation"]
    by_steps: dict = {}
    for r in front["rows"]:
        if r["method"] == "fewer_steps":
            by_steps.setdefault(int(r["steps"]), []).append(float(r["fidelity_PSNR"]))
    if not by_steps:
        raise ValueError("the front has no fewer_steps rows (run tools/front.py with --fewer-steps)")
    pt, _ = shipped_paths(name)
    _, manifest = read_shipped(pt)
    settings = front.get("settings", {})
    return dict(
        name=name, config=config, weights=os.path.relpath(pt), sha256=manifest["sha256"],
        dense_mAP=dense["mAP"], codec_mAP=codec["mAP"], dense_mIoU=dense["mIoU"], codec_mIoU=codec["mIoU"],
        dense_over_codec={k: dense[k] / max(codec[k], 1e-12) for k in ("mAP", "mIoU")},
        quality_scenes=metrics.get("scenes"), quality_seed_offset=metrics.get("seed_offset"),
        reference_steps=settings.get("sampling_steps"),
        fewer_steps={str(k): sum(v) / len(v) for k, v in sorted(by_steps.items())},
        fewer_steps_measured=dict(seeds=settings.get("seeds"), scenes=settings.get("scenes"),
                                  seed_offset=settings.get("seed_offset")),
    )


def main(argv=None) -> int:
    from coredit_video.cli import ArgumentParser, UsageError

    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="the shipped host's name (coredit_video/embedded/host/weights)")
    ap.add_argument("--config", required=True, help="the config whose train.init_from loads the host")
    ap.add_argument("--metrics", required=True, help="tools/host_report.py metrics.json")
    ap.add_argument("--front", required=True, help="tools/front.py front.json with a fewer_steps line")
    ap.add_argument("--out", default="docs/quality/hosts.json")
    args = ap.parse_args(argv)
    for p in (args.config, args.metrics, args.front):
        if not os.path.isfile(p):
            raise UsageError(f"{p} not found")
    with open(args.metrics) as f:
        metrics = json.load(f)
    with open(args.front) as f:
        front = json.load(f)
    try:
        entry = host_entry(args.name, args.config, metrics, front)
    except (ValueError, KeyError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    hosts = []
    if os.path.isfile(args.out):
        with open(args.out) as f:
            hosts = [h for h in json.load(f)["hosts"] if h["name"] != args.name]
    hosts.append(entry)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(hosts=sorted(hosts, key=lambda h: h["name"])), f, indent=2)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    from coredit_video.cli import run_cli

    sys.exit(run_cli(main))
