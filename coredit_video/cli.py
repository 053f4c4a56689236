"""What every entry point in ``tools/`` shares: a mistake of the user's is one line on stderr naming the fix and
exit code 2, found before any work starts.

A tool raises :class:`UsageError` (or lets :func:`load_train_config` raise it) while it validates its inputs;
``sys.exit(run_cli(main))`` prints it. Anything else that goes wrong later is a real failure and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Mapping, Optional, Tuple


class UsageError(Exception):
    """A bad command line, config file or config value; the message names the fix (one line)."""


def fail(message: str) -> None:
    """Print ``error: <message>`` (one line) on stderr and exit with code 2, here and now."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line (argparse prints the usage first): exit code 2 as argparse."""

    def error(self, message: str):
        fail(f"{message} (see {self.prog} --help)")


def load_config(path: str, options: Optional[Mapping[str, Any]] = None, work_dir: Optional[str] = None):
    """The mmengine ``Config`` at ``path`` with ``--cfg-options`` merged in; a missing or unreadable file is a
    :class:`UsageError`."""
    from mmengine.config import Config

    if not os.path.isfile(path):
        raise UsageError(f"config file {path!r} not found")
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # a syntax error or a bad import inside the user's config file
        raise UsageError(f"config {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if options:
        cfg.merge_from_dict(dict(options))
    if work_dir:
        cfg.work_dir = work_dir
    return cfg


def load_train_config(path: str, options: Optional[Mapping[str, Any]] = None,
                      work_dir: Optional[str] = None) -> Tuple[Any, Any]:
    """``(cfg, TrainConfig)`` of the config at ``path``: every value validated now, a bad one a :class:`UsageError`
    naming the key (``--cfg-options`` values included)."""
    from .training.config import build_train_config

    cfg = load_config(path, options, work_dir)
    try:
        return cfg, build_train_config(cfg)
    except (ValueError, TypeError) as e:
        where = " (with --cfg-options)" if options else ""
        raise UsageError(f"{path}{where}: {e}") from None


def run_cli(main: Callable[..., int], argv=None) -> int:
    """Run a tool's ``main``; a :class:`UsageError` becomes ``error: <message>`` on stderr and exit code 2."""
    try:
        return main(argv) if argv is not None else main()
    except UsageError as e:
        fail(str(e))
