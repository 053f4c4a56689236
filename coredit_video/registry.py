"""The one registry that maps names to host adapters (mmengine ``Registry``).

It imports no adapter: :mod:`coredit_video.adapters` registers the built-in ones when imported (the
package ``__init__`` does), so ``registry`` and ``adapters`` depend one way only."""
from __future__ import annotations

try:
    from mmengine.registry import Registry
except ImportError:  # a bare GPU machine (kernel tests, benchmarks) has torch only

    class Registry:  # type: ignore[no-redef]
        """The part of mmengine's ``Registry`` used here: ``register_module(name=)``, ``get``, ``module_dict``."""

        def __init__(self, name: str):
            self.name, self.module_dict = name, {}

        def register_module(self, name=None, force: bool = False, module=None):
            def register(cls):
                key = name or cls.__name__
                if key in self.module_dict and not force:
                    raise KeyError(f"{key} is already registered in {self.name}")
                self.module_dict[key] = cls
                return cls

            return register(module) if module is not None else register

        def get(self, key):
            return self.module_dict.get(key)

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
