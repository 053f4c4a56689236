"""Run one of MagicDrive-V2's own scripts (training, testing) with CoReDiT's scheduler registered."""
from __future__ import annotations

import ast
import os
import runpy
import sys
from typing import Optional


def runner_of(path: str) -> str:
    """``coredit_runner`` of a config, read without resolving its ``_base_`` (which may live in a
    MagicDrive-V2 checkout); ``"coredit"`` when absent."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "coredit_runner" for t in node.targets):
            return ast.literal_eval(node.value)
    return "coredit"


def checkout_root() -> Optional[str]:
    """``$MAGICDRIVE_V2_ROOT`` made absolute (from the working directory) and written back, or None if unset.

    The recipe configs name their ``_base_`` as ``{{$MAGICDRIVE_V2_ROOT}}/configs/...`` and mmengine resolves a
    relative ``_base_`` from the config's own folder, so a relative root must be fixed before any config is read.
    """
    root = os.environ.get("MAGICDRIVE_V2_ROOT")
    if not root:
        return None
    root = os.path.abspath(root)
    os.environ["MAGICDRIVE_V2_ROOT"] = root
    return root


def run_magicdrive_script(script_name: str, config: str) -> int:
    """``$MAGICDRIVE_V2_ROOT/scripts/<script_name> <config>`` in this process, after ``register()``."""
    root = checkout_root()
    script = os.path.join(root or "", "scripts", script_name)
    if not root or not os.path.isfile(script):
        print(f"error: set MAGICDRIVE_V2_ROOT to your MagicDrive-V2 checkout (commit 4ed72c6, with {script_name}; "
              "see third_party/README.md)", file=sys.stderr)
        return 2
    config = os.path.abspath(config)
    sys.path.insert(0, root)
    os.chdir(root)  # MagicDrive-V2 resolves its data and checkpoint paths from its root
    from .magicdrive_rflow import register

    register()
    sys.argv = [script, config]
    runpy.run_path(script, run_name="__main__")
    return 0
