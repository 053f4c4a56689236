"""Straight imports: the subpackages of coredit_video import each other one way only (static check over every
``import`` statement, function-level ones included)."""
import ast
import os

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


def test_perception_and_evaluation_import_one_way():
    edges = package_imports()
    assert ("evaluation", "perception") in edges  # the evaluation pipeline runs the built-in perception
    assert ("perception", "evaluation") not in edges, edges.get(("perception", "evaluation"))
