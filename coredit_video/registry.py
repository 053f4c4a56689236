"""The one registry that maps names to host adapters (mmengine ``Registry``).

It imports no adapter: :mod:`coredit_video.adapters` registers the built-in ones when imported (the
package ``__init__`` does), so ``registry`` and ``adapters`` depend one way only."""
from __future__ import annotations

from mmengine.registry import Registry

HOST_ADAPTERS = Registry("coredit host adapter")


def find_adapter(model, name: str = "auto"):
    """Instantiate the adapter called ``name``, or with ``"auto"`` the one whose ``matches(model)``."""
    if name != "auto":
        cls = HOST_ADAPTERS.get(name)
        if cls is None:
            raise KeyError(f"no host adapter named {name!r}; registered: {sorted(HOST_ADAPTERS.module_dict)}")
        adapter = cls()
        if not adapter.matches(model):
            raise TypeError(f"host adapter {name!r} does not recognise a {type(model).__name__}")
        return adapter
    for cls in HOST_ADAPTERS.module_dict.values():
        adapter = cls()
        if adapter.matches(model):
            return adapter
    raise TypeError(
        f"no registered host adapter recognises {type(model).__name__}; registered: "
        f"{sorted(HOST_ADAPTERS.module_dict)}. Write one (see coredit_video/adapters/base.py) and register it "
        "with @HOST_ADAPTERS.register_module()"
    )
