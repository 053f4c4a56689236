"""Opt-in: the real local Slurm checks of tests/slurm/run_smoke.sh under pytest.

    COREDIT_SLURM_TESTS=1 python -m pytest -q tests/slurm            # --quick set (~4 min, needs root + apt)
    COREDIT_SLURM_TESTS=1 COREDIT_SLURM_CHECKS="smoke requeue" python -m pytest -q tests/slurm

Skipped unless COREDIT_SLURM_TESTS=1: it installs slurm-wlm/munge and starts daemons on this machine.
"""

import os
import shlex
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(
    os.environ.get("COREDIT_SLURM_TESTS") != "1", reason="real Slurm checks: set COREDIT_SLURM_TESTS=1"
)


def test_local_slurm_smoke():
    checks = shlex.split(os.environ.get("COREDIT_SLURM_CHECKS", "--quick"))
    proc = subprocess.run(
        ["bash", os.path.join(HERE, "run_smoke.sh"), *checks],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    tail = "\n".join(proc.stdout.splitlines()[-80:])
    assert proc.returncode == 0, f"run_smoke.sh {' '.join(checks)} failed:\n{tail}"
    assert "0 failed" in proc.stdout.splitlines()[-1], tail
