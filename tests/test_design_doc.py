"""The structure docs/design.md describes holds: its data-path table names files that exist, attention calls nothing
back, the core never branches on a method name, and the controller stays small."""
import os
import re

from coredit_video.methods import method_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "coredit_video")


def _read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return f.read()


def test_data_path_table_names_files_that_exist():
    doc = _read(REPO, "docs", "design.md")
    rows = re.findall(r"^\| (\d+) \| `([^`]+)` \|", doc, flags=re.M)
    assert [int(n) for n, _ in rows[:8]] == list(range(1, 9))
    for _, path in rows:
        assert os.path.isfile(os.path.join(PKG, path)), path


def test_attention_calls_nothing_back_and_never_branches_on_a_method_name():
    for name in os.listdir(os.path.join(PKG, "attention")):
        if name.endswith(".py"):
            src = _read(PKG, "attention", name)
            assert "on_scores" not in src and "on_select" not in src and "controller" not in src, name
    core = _read(PKG, "attention", "pruned.py")
    for method in method_names():
        assert not re.search(rf"""==\s*["']{method}["']|["']{method}["']\s*==|in\s*\(["']{method}""", core), method


def test_controller_only_controls():
    src = _read(PKG, "controller.py")
    assert len(src.splitlines()) < 300
    for moved in ("class ForwardContext", "def enter_block", "class HookProxy", "sp_self_attention", "def _call"):
        assert moved not in src, moved
