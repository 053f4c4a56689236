"""The adapter's hooks on a host, held through small picklable proxies so a copied or unpickled model reaches its
own controller (which rebinds the hooks to its own model on first use)."""
from __future__ import annotations

from typing import Callable, List, Optional


class HookProxy:
    """What the host holds for each adapter hook: forwards to the controller's current hook ``index``. Picklable
    and copyable, so a copied model's hooks reach the copied controller (which rebinds them)."""

    def __init__(self, controller, index: int):
        self.controller, self.index = controller, index

    def __call__(self, *args, **kwargs):
        controller = self.controller
        if not controller.hooks.bound:
            controller.hooks.rebind(controller)
        return controller.hooks.get(self.index)(*args, **kwargs)


class HookBinding:
    """The adapter's hook functions bound to one controller's model, and the removable handles on the host."""

    def __init__(self):
        self.handles: list = []
        self._fns: Optional[List[Callable]] = None  # None: not bound to this process's model yet

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _fns=None)  # hooks are closures: rebound on first use

    @property
    def bound(self) -> bool:
        return self._fns is not None

    def bind(self, controller) -> None:
        """Attach the adapter's hooks to ``controller.model``; the host holds a :class:`HookProxy` in place of each."""
        self.handles = controller.adapter.attach(controller.model, controller)
        fns = []
        for i, handle in enumerate(self.handles):
            hooks = handle.hooks_dict_ref()
            fns.append(hooks[handle.id])
            hooks[handle.id] = HookProxy(controller, i)
        self._fns = fns

    def rebind(self, controller) -> None:
        """A deep copy / unpickled model holds copies of the proxies: take the adapter's hooks for this model and
        controller, and leave the proxies where they are (same order, same flags)."""
        fns = []
        for handle in controller.adapter.attach(controller.model, controller):
            fns.append(handle.hooks_dict_ref()[handle.id])
            handle.remove()
        if len(fns) != len(self.handles):
            raise RuntimeError(f"the adapter attached {len(fns)} hooks to the copied model, the original had "
                               f"{len(self.handles)}; re-apply pruning on the copy: cv.apply(copy, cv.get_controller"
                               "(original).cfg)")
        self._fns = fns
        controller.sp_group = controller.adapter.sp_group(controller.model)

    def get(self, index: int) -> Callable:
        return self._fns[index]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
