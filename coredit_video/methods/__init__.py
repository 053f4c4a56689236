"""Token-reduction methods behind one table (``prune.method``): every method is one module holding one
:class:`~.base.TokenReducer`, registered here by name. The core never branches on a name; it asks the table.

Adding a method: a new module with a ``TokenReducer`` subclass, one line in :data:`_BUILTIN` below, and its test.
"""
from __future__ import annotations

from typing import Dict, Tuple, Type

from .base import (AttentionResult, BlockLayout, CallGeometry, Reduced, Selection, TokenReducer, gather_tokens,
                   scatter_rows)
from .coredit import CoReDiT
from .coredit_copy import CoReDiTCopy
from .coredit_kv import CoReDiTKV
from .coredit_merge import CoReDiTMerge
from .coredit_sharp import CoReDiTSharp
from .no_reconstruction import NoReconstruction
from .random_selection import RandomSelection
from .todo import TokenDownsampling
from .tome import TokenMerging, TokenMergingSD

_BUILTIN: Tuple[Type[TokenReducer], ...] = (CoReDiT, CoReDiTCopy, CoReDiTSharp, CoReDiTMerge, CoReDiTKV,
                                            RandomSelection, NoReconstruction, TokenMerging, TokenMergingSD,
                                            TokenDownsampling)
REGISTRY: Dict[str, Type[TokenReducer]] = {}
DEFAULT_METHOD = CoReDiT.name  # the paper's rule: prune.method's default


def register(cls: Type[TokenReducer]) -> Type[TokenReducer]:
    """Add a method to the table under ``cls.name`` (usable as a class decorator)."""
    if not cls.name or cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is empty or taken by {REGISTRY.get(cls.name)}")
    REGISTRY[cls.name] = cls
    return cls


for _cls in _BUILTIN:
    register(_cls)


def method_names() -> Tuple[str, ...]:
    return tuple(REGISTRY)


def build_method(name: str, **options) -> TokenReducer:
    """The method ``name``, given those of ``options`` it takes (its ``options``, e.g. ``temperature``); an unknown
    name raises, listing the table."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"prune.method must be one of {method_names()}, got {name!r}")
    return cls(**{k: v for k, v in options.items() if k in cls.options})


__all__ = ["AttentionResult", "BlockLayout", "CallGeometry", "DEFAULT_METHOD", "REGISTRY", "Reduced", "Selection",
           "TokenReducer", "build_method", "gather_tokens", "method_names", "register", "scatter_rows"]
