"""Host adapters; importing this package registers them in ``HOST_ADAPTERS``."""
from .base import HostAdapter
from .builtin import BuiltinHostAdapter

__all__ = ["BuiltinHostAdapter", "HostAdapter"]
