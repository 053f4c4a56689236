"""Import layering the cross-view work relies on: ``ops`` is pure torch (kernel dispatch lives in ``kernels``,
which the methods call), ``registry`` imports no adapter. Checked on the source's import statements (importing any
submodule runs the package ``__init__``, which imports everything)."""
import ast
import os

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "coredit_video")


def imported_modules(path: str, module: str) -> set:
    """Absolute names of what a file imports (relative imports resolved against its ``module`` name)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                mod = ".".join(parts[:len(parts) - node.level] + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def package_imports(sub: str) -> set:
    folder = os.path.join(PKG, sub)
    names = set()
    for f in os.listdir(folder):
        if f.endswith(".py"):
            names |= imported_modules(os.path.join(folder, f), f"coredit_video.{sub}.{f[:-3]}")
    return names


def test_ops_do_not_import_kernels_or_attention():
    names = package_imports("ops")
    assert not {n for n in names if n.startswith(("coredit_video.kernels", "coredit_video.attention"))}, names
    assert "torch" in names


def test_kernels_and_dispatch_direction():
    """The kernels package is the dispatch (one hop to a Triton kernel or the torch op); methods call it."""
    assert not {n for n in package_imports("kernels") if n.startswith(("coredit_video.attention",
                                                                         "coredit_video.methods"))}
    assert "coredit_video.ops" in imported_modules(os.path.join(PKG, "kernels", "__init__.py"),
                                                   "coredit_video.kernels.__init__")
    assert "coredit_video.kernels" in imported_modules(os.path.join(PKG, "methods", "coredit.py"),
                                                       "coredit_video.methods.coredit")


def test_registry_imports_no_adapter():
    names = imported_modules(os.path.join(PKG, "registry.py"), "coredit_video.registry")
    assert not {n for n in names if n.startswith("coredit_video.adapters")}, names
