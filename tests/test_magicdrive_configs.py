"""The MagicDrive-V2 recipe configs and the tools' dispatch to MagicDrive-V2's own scripts."""
import os
import subprocess
import sys

import pytest

from coredit_video.integrations.magicdrive_runner import checkout_root, runner_of
from tests.dist.common import REPO


def test_recipe_configs_are_routed_to_magicdrive():
    assert runner_of(os.path.join(REPO, "configs", "magicdrive_coredit.py")) == "magicdrive_v2"
    assert runner_of(os.path.join(REPO, "configs", "magicdrive_coredit_test.py")) == "magicdrive_v2"
    assert runner_of(os.path.join(REPO, "configs", "tiny_cpu.py")) == "coredit"


@pytest.mark.parametrize("tool, config", [("train.py", "magicdrive_coredit.py"),
                                          ("generate.py", "magicdrive_coredit_test.py")])
def test_missing_checkout_is_reported(tool, config):
    env = {k: v for k, v in os.environ.items() if k != "MAGICDRIVE_V2_ROOT"}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), os.path.join(REPO, "configs", config)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "MAGICDRIVE_V2_ROOT" in proc.stderr


@pytest.mark.skipif(not os.environ.get("MAGICDRIVE_V2_ROOT"), reason="MAGICDRIVE_V2_ROOT is not set")
@pytest.mark.parametrize("relative", [False, True], ids=["absolute_root", "relative_root"])
def test_recipe_config_resolves_against_the_checkout(relative, monkeypatch):
    from mmengine.config import Config

    root = os.path.abspath(os.environ["MAGICDRIVE_V2_ROOT"])
    # a relative root is what `MAGICDRIVE_V2_ROOT=../MagicDrive-V2 torchrun tools/train.py ...` gives the runner
    monkeypatch.setenv("MAGICDRIVE_V2_ROOT", os.path.relpath(root) if relative else root)
    assert checkout_root() == root and os.environ["MAGICDRIVE_V2_ROOT"] == root
    cfg = Config.fromfile(os.path.join(REPO, "configs", "magicdrive_coredit.py"))
    assert cfg.scheduler.type == "coredit_rflow" and cfg.sp_size == 8 and cfg.plugin == "zero2-seq"
    assert cfg.model.force_pad_h_for_sp_size == 8 and list(cfg.model.simulate_sp_size) == [8]
    assert cfg.scheduler.prune.max_ratio == 0.5 and cfg.scheduler.schedule.target_ratio == 0.26
    assert "max_ratio" not in cfg.scheduler.schedule  # one cap: prune.max_ratio
    assert cfg.scheduler.prune.late_steps == 4 and cfg.scheduler.num_sampling_steps == 30
