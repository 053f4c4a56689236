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


def _traced_files(cfg) -> list:
    """Package files (host code aside) one forward of the built-in host enters under ``cfg``, first-entry order."""
    import sys

    import torch

    import coredit_video as cv
    from tests.test_cross_view import build, inputs

    model, inp = build(), inputs()
    cv.apply(model, cfg)
    seen = []

    def profile(frame, event, arg):
        f = frame.f_code.co_filename
        if event == "call" and f.startswith(PKG + os.sep) and os.sep + "embedded" + os.sep not in f:
            rel = os.path.relpath(f, PKG).replace(os.sep, "/")
            if rel not in seen:
                seen.append(rel)

    with torch.no_grad():
        sys.setprofile(profile)
        try:
            model(**inp)
        finally:
            sys.setprofile(None)
    cv.remove(model)
    return seen


def test_the_traced_table_is_what_a_pruned_forward_enters():
    doc = _read(REPO, "docs", "design.md")
    table = {m.group(1): (int(m.group(2)), m.group(3)) for m in re.finditer(
        r"^\| (`[^|]+`(?:, block scope)?) \| (\d+) \| (.+) \|$", doc, flags=re.M)}
    base = _traced_files(dict(ratios=0.3))
    merge = _traced_files(dict(ratios=0.3, method="coredit_merge"))
    block = _traced_files(dict(ratios=0.3, scope="block"))
    assert len(base) <= 10 and len(merge) <= 12  # issue 31's targets
    n, files = table["`coredit`"]
    assert n == len(base) and re.findall(r"`([^`]+)`", files) == base
    n, files = table["`coredit_merge`"]
    assert n == len(merge) and set(merge) == set(base) | set(re.findall(r"`([^`]+\.py)`", files))
    n, _ = table["`coredit`, block scope"]
    assert n == len(block) and set(block) == set(base) | {"block_scope.py"}  # the core's steps, not its attend


# string constants equal to a method's name that mean something else (file, string): the step cache's tie rule
NOT_A_METHOD = {("step_cache.py", "random"),
                ("integrations/magicdrive_runner.py", "coredit")}  # ... and the runner coredit_video.cli runs


def test_no_method_name_literals_outside_the_method_table():
    """Issue 31: what a method is lives in ``methods/``; the package names no method elsewhere (docstrings aside; the
    front's and the study's default line lists allowed), so a method registered at run time is never second-class."""
    import ast

    names = set(method_names())
    found = []
    for root, _, files in os.walk(PKG):
        rel_root = os.path.relpath(root, PKG)
        if rel_root.split(os.sep)[0] in ("methods", "embedded"):
            continue
        for name in files:
            rel = os.path.normpath(os.path.join(rel_root, name)).replace(os.sep, "/")
            if not name.endswith(".py") or rel in ("front.py", "quality_study.py"):
                continue
            tree = ast.parse(_read(root, name))
            docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
                n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body and isinstance(
                n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                        and id(node) not in docs and (rel, node.value) not in NOT_A_METHOD):
                    found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, found
