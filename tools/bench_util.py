"""Helpers shared by the benchmark scripts in tools/ (imported from the script's own folder)."""
from __future__ import annotations

from typing import Sequence


def command_line(script: str, argv: Sequence[str]) -> str:
    """The invocation ``python tools/<script> ...``, without the free-text ``--note`` (printed on its own)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--note":
            skip = True
            continue
        if a.startswith("--note="):
            continue
        out.append(a)
    return f"python tools/{script} " + " ".join(out)
