"""tools/ablate.py: each variant is configured as it says, and a tiny run of every variant completes the report."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

from coredit_video.quality_study import FIELDS, VARIANTS, StudySettings, train_options, uniform_plan
from coredit_video.schedule import ProgressiveSchedule
from coredit_video.training.config import build_train_config
from tests.dist.common import REPO

CONFIG = os.path.join(REPO, "configs", "tiny_cpu.py")


def _config(opts):
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(opts)
    return build_train_config(cfg)


def by_name(rows, variant, seed=0):
    return next(r for r in rows if r["variant"] == variant and r["seed"] == seed)


def test_uniform_starts_every_block_at_coredit_s_mean_ratio_and_never_changes():
    s = StudySettings(config=CONFIG)
    tcfg = _config(train_options(s, "uniform", 0, "/tmp/x", {"mean_ratio": 0.2666666667}))
    names = [f"b{i}" for i in range(3)]
    sched = ProgressiveSchedule(tcfg.schedule, names, [tcfg.prune.ratios] * 3, max_ratio=tcfg.prune.max_ratio)
    assert sched.ratios == pytest.approx([0.2666666667] * 3) and sched.state.done
    assert all(sched.step() is None for _ in range(30))  # no block is ever raised


@pytest.mark.parametrize("variant,method", [("coredit", "coredit"), ("random", "random"),
                                            ("no_reconstruction", "no_reconstruction"), ("tome", "tome")])
def test_progressive_variants_change_only_the_mechanism(variant, method):
    s = StudySettings(config=CONFIG, steps=7)
    tcfg = _config(train_options(s, variant, 3, "/tmp/x"))
    base = _config({})
    assert tcfg.prune.method == method and tcfg.seed == 3 and tcfg.train.steps == 7
    assert tcfg.parallel.sp_size == 1  # data parallel only: the merging baseline has no SP path
    assert tcfg.schedule == base.schedule and tcfg.prune.ratios == base.prune.ratios  # same progressive schedule
    assert tcfg.train.init_from == base.train.init_from == "embedded"  # same starting weights


@pytest.mark.parametrize("variant,mode", [("cross_view_kv", "kv"), ("cross_view_qkv", "qkv")])
def test_cross_view_variants_add_only_cross_view_pruning(variant, mode):
    s = StudySettings(config=CONFIG)
    tcfg, base = _config(train_options(s, variant, 0, "/tmp/x")), _config({})
    assert tcfg.prune.cross_view == mode and tcfg.prune.method == "coredit" and tcfg.schedule == base.schedule


def test_self_matched_raises_the_self_attention_target_to_the_cross_view_flops():
    from coredit_video.quality_study import flops_of, matched_target
    from coredit_video.training.hosts import build_host_bundle

    base = _config({})
    bundle = build_host_bundle(base.model, dict(base.data, num_samples=1), 0)
    target = matched_target(bundle, 0.26, 3, 2, 3, 0.5, 0.05)
    kv = flops_of(bundle, [0.26] * 3, 2, 3, "kv")["total_reduction"]
    assert target > 0.26
    assert target == 0.5 or flops_of(bundle, [target] * 3, 2, 3)["total_reduction"] >= kv - 1e-9
    assert flops_of(bundle, [target - 0.05] * 3, 2, 3)["total_reduction"] < kv  # the smallest such ratio
    tcfg = _config(train_options(StudySettings(config=CONFIG), "self_matched", 0, "/tmp/x", target_ratio=target))
    assert tcfg.schedule == dataclasses.replace(base.schedule, target_ratio=target) and tcfg.prune.cross_view == "off"


def test_uniform_plan_keeps_the_layout():
    plan = {"ratios": [0.1, 0.3, 0.4], "mean_ratio": 0.2667, "bands": 2, "stride": 3, "grids": [[[8, 4], [4, 2]]]}
    out = uniform_plan(plan, 0.25)
    assert out["ratios"] == [0.25] * 3 and out["mean_ratio"] == 0.25
    assert {k: out[k] for k in ("bands", "stride", "grids")} == {k: plan[k] for k in ("bands", "stride", "grids")}


def test_settings_are_validated():
    with pytest.raises(ValueError, match="include coredit"):
        StudySettings(variants=["uniform"])
    with pytest.raises(ValueError, match="unknown variant"):
        StudySettings(variants=["coredit", "magic"])
    with pytest.raises(ValueError, match="include cross_view_kv"):
        StudySettings(variants=["dense", "coredit", "self_matched"])
    with pytest.raises(ValueError, match="include dense"):
        StudySettings(variants=["coredit", "tome"])
    StudySettings(variants=["coredit", "training_free", "dense"])


def test_dense_reference_fine_tunes_without_pruning():
    s = StudySettings(config=CONFIG, steps=7)
    tcfg, base = _config(train_options(s, "dense", 0, "/tmp/x")), _config({})
    assert tcfg.prune.ratios == 0.0 and tcfg.schedule.target_ratio == 0.0  # never prunes ...
    assert tcfg.train == dataclasses.replace(base.train, steps=7)  # ... and trains like the others
    assert tcfg.optim == base.optim and tcfg.data == base.data


def test_ablate_smoke_every_variant_runs_and_the_report_is_complete(tmp_path):
    pytest.importorskip("av", reason="video IO needs PyAV (pip install '.[eval]')")
    out = tmp_path / "study"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "tools/ablate.py", "--nproc", "1", "--seeds", "0", "--steps", "2", "--sampling-steps",
         "2", "--scenes", "1", "--curve-ratios", "0.3", "--out", str(out),
         "--variants", *reversed(VARIANTS),  # any order: the study runs each after the ones it depends on
         "--cfg-options", "data.image_hw=(32,56)", "train.ckpt_every=2", "schedule.interval=1",
         "schedule.delta_ratio=0.1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    payload = json.loads((out / "quality.json").read_text())
    rows = payload["results"]
    assert {r["variant"] for r in rows if r["seed"] == 0} == set(VARIANTS) | {"pretrained_dense"}
    refs = {r["variant"]: r["fidelity_reference"] for r in rows}
    assert refs["coredit"] == refs["tome"] == refs["uniform"] == "dense"  # fine-tuned: against the dense fine-tune
    assert refs["training_free"] == refs["dense"] == "pretrained_dense"
    assert rows[0]["variant"] == "pretrained_dense" and by_name(rows, "dense")["mean_ratio"] == 0.0
    for r in rows:
        assert set(FIELDS) <= set(r)
        for k in FIELDS[2:]:
            if r["variant"] == "pretrained_dense" and k.startswith("fidelity"):
                continue
            assert r[k] is not None, (r["variant"], k)
    by = {(r["variant"], r["seed"]): r for r in rows}
    co, tf, un = by["coredit", 0], by["training_free", 0], by["uniform", 0]
    assert co["mean_ratio"] > 0 and co["self_attention_reduction"] > 0
    assert tf["mean_ratio"] == co["mean_ratio"] and tf["total_reduction"] == co["total_reduction"]
    assert un["mean_ratio"] == pytest.approx(co["mean_ratio"])
    assert {(c["method"], c["ratio"]) for c in payload["curve"]} == {("coredit", 0.3), ("tome", 0.3)}
    md = (out / "quality.md").read_text()
    for v in VARIANTS:
        assert f"| {v} |" in md
    assert (out / "quality_vs_ratio.png").stat().st_size > 1000


def test_dense_stays_dense_whatever_the_extra_options_say():
    s = StudySettings(config=CONFIG, extra_options={"schedule.target_ratio": 0.5, "prune.ratios": 0.1})
    opts = train_options(s, "dense", 0, "/tmp/x")
    assert opts["schedule.target_ratio"] == 0.0 and opts["prune.ratios"] == 0.0
    assert train_options(s, "coredit", 0, "/tmp/x")["schedule.target_ratio"] == 0.5


@pytest.mark.parametrize("variant,method", [("coredit", "coredit_merge"), ("uniform", "coredit_merge"),
                                            ("cross_view_qkv", "coredit_merge"), ("tome", "tome"),
                                            ("random", "random"), ("dense", "coredit")])
def test_rule_replaces_the_paper_rule_of_the_coredit_variants_only(variant, method):
    s = StudySettings(config=CONFIG, rule="coredit_merge")
    opts = train_options(s, variant, 0, "/tmp/x", {"mean_ratio": 0.3})
    assert opts["prune.method"] == method
    with pytest.raises(ValueError, match="rule"):
        StudySettings(config=CONFIG, rule="tome")
