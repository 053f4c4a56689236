"""The adapter's hooks on a host forward, and which forward a prunable block belongs to.

The adapters open a context at each model forward (:meth:`ForwardTracker.begin_forward`: its denoising phase,
frame size, views and budgets) and bind every prunable block to it (:meth:`ForwardTracker.enter_block`), so a
gradient-checkpoint recompute of an older forward prunes exactly as that forward did, even after the phase changed.
The hooks themselves sit on the host behind small picklable proxies (:class:`HookProxy`), so a copied or
unpickled model reaches its own controller, which rebinds the hooks to its own model on first use.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .attention import Selection, ViewPairs


@dataclass(eq=False)
class ForwardContext:
    """What one model forward prunes with, shared by all its blocks and by a checkpoint recompute of them.

    ``phase``: the denoising phase when the forward began. ``hw``: the padded token grid ``(H, W)`` of a
    frame (``width`` alone until a host reveals the height at its first block). ``views``: where each
    cross-view row's frames sit (set by the adapter when cross-view pruning is on). ``budgets``: per-band
    skip counts per ``(block, ratio)``, computed once. ``retained``: the selection each block's
    self-attention made, held until that block's cross-view attention takes it. ``step`` / ``slot``: the
    sampling step and which of its forwards this is, with a step cache (``None`` otherwise).
    """

    phase: str
    hw: Optional[Tuple[int, int]] = None
    width: Optional[int] = None
    views: Optional[ViewPairs] = None
    budgets: Dict[Tuple[int, float], List[int]] = field(default_factory=dict)
    retained: Dict[int, Optional[Selection]] = field(default_factory=dict)
    step: Optional[int] = None  # the sampling step, when a step cache runs (:mod:`coredit_video.step_cache`)
    slot: Optional[int] = None  # which forward of that step: its cache entries


class ForwardTracker:
    """The current forward's context and every recent forward's, keyed by a tensor all its blocks receive."""

    MAX_FORWARDS = 64

    def __init__(self, bands: int):
        self.bands = bands
        self.context: Optional[ForwardContext] = None
        self._pending: Optional[ForwardContext] = None
        self._contexts: OrderedDict[int, ForwardContext] = OrderedDict()

    def __getstate__(self) -> dict:
        # contexts belong to forwards of the original (keyed by its tensors' addresses): a copy starts with none
        return dict(self.__dict__, context=None, _pending=None, _contexts=OrderedDict())

    def check_hw(self, hw) -> Tuple[int, int]:
        hw = (int(hw[0]), int(hw[1]))
        if hw[0] % self.bands:
            raise ValueError(
                f"the frame has {hw[0]} token rows, not a multiple of bands={self.bands}; pad H for "
                "the SP size (MagicDrive-V2: force_pad_h_for_sp_size / simulate_sp_size) or change bands"
            )
        return hw

    def begin_forward(self, phase: str, hw: Optional[Tuple[int, int]] = None,
                      width: Optional[int] = None) -> ForwardContext:
        """Adapter hook at a model forward: opens its context with ``phase``. ``hw`` when the host knows its padded
        token grid now, else ``width`` and the first block tells the height (:meth:`set_frame_height`). The next
        :meth:`enter_block` adopts it."""
        ctx = ForwardContext(phase, self.check_hw(hw) if hw is not None else None, width)
        self._pending = self.context = ctx
        return ctx

    def enter_block(self, key: torch.Tensor) -> ForwardContext:
        """Adapter hook before each prunable block: binds the block to the forward it belongs to.

        ``key`` is a tensor every block of one forward receives and that lives until its backward (the
        timestep modulation). The first block after :meth:`begin_forward` files the new context under
        it (replacing a dead forward's whose freed storage came back); a gradient-checkpoint recompute
        of an older forward finds that forward's context again, so it selects exactly the tokens the
        original forward selected even if the phase has changed since.
        """
        ptr = key.data_ptr()
        if self._pending is not None:
            ctx, self._pending = self._pending, None
            self._contexts[ptr] = ctx
            self._contexts.move_to_end(ptr)
            while len(self._contexts) > self.MAX_FORWARDS:
                self._contexts.popitem(last=False)
        else:
            ctx = self._contexts.get(ptr)
            if ctx is None:
                raise RuntimeError("a prunable block ran outside its model's forward (no pruning context); call "
                                   "the model's forward (the adapter hooks it) or controller.set_frame((H, W))")
        self.context = ctx
        return ctx

    def set_frame_height(self, ctx: ForwardContext, H: int) -> Tuple[int, int]:
        """The first block of a forward tells its padded height; later blocks must agree."""
        hw = self.check_hw((H, ctx.width))
        if ctx.hw is None:
            ctx.hw = hw
        elif ctx.hw != hw:
            raise ValueError(f"blocks of one forward disagree on the frame size: {ctx.hw} vs {hw}")
        return hw


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
