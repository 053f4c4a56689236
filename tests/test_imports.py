"""Straight imports: the subpackages of coredit_video import each other one way only (static check over every
``import`` statement, function-level ones included)."""
import ast
import os
import subprocess
import sys

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coredit_video")


def package_imports():
    """``{(a, b): [file:line, ...]}`` for every import of subpackage/module ``b`` from ``a`` (``a != b``)."""
    edges = {}
    for dirpath, _, files in os.walk(PKG):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path[:-3], os.path.dirname(PKG)).split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            here = parts[1] if len(parts) > 1 else ""
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom):
                    base = parts if name == "__init__.py" else parts[:-1]
                    mods = [".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
                            if node.level else (node.module or "")]
                elif isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                else:
                    continue
                for mod in mods:
                    seg = mod.split(".")
                    if seg[0] == "coredit_video" and len(seg) > 1 and seg[1] != here:
                        edges.setdefault((here, seg[1]), []).append(f"{os.path.relpath(path, PKG)}:{node.lineno}")
    return edges


# The plugin: what ``cv.apply`` runs inside a host ("" is the package's ``__init__``).
PLUGIN = ("", "adapters", "attention", "config", "controller", "flops", "forward_context",
          "kernels", "methods", "ops", "parallel", "patched_attention", "plan", "plugin", "registry", "schedule")


def test_plugin_and_real_stack_seams_never_import_the_embedded_world():
    edges = package_imports()
    for unit in PLUGIN + ("integrations", "training", "evaluation", "sampling", "rflow", "generation"):
        assert (unit, "embedded") not in edges, (unit, edges.get((unit, "embedded")))
    assert ("embedded", "evaluation") in edges  # the built-in perception is scored with the evaluation metrics
    assert ("quality_study", "embedded") in edges  # the scripts on top wire the embedded world in


def test_subpackages_import_without_cycles():
    graph = {}
    for a, b in package_imports():
        graph.setdefault(a, set()).add(b)
    state = {}

    def visit(node, path):
        assert state.get(node) != "open", f"import cycle: {' -> '.join(path + [node])}"
        if state.get(node) == "done":
            return
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])
    assert len(graph) > 10  # the walk saw the package


def test_importing_the_plugin_loads_no_embedded_module():
    code = ("import sys, coredit_video, coredit_video.controller, coredit_video.flops, coredit_video.kernels, "
            "coredit_video.adapters, coredit_video.parallel, coredit_video.schedule; "
            "print(sorted(m for m in sys.modules if m.startswith('coredit_video.embedded')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(PKG)).stdout.strip()
    assert out == "[]", out
