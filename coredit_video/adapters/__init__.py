"""Host adapters; importing this package registers them in ``HOST_ADAPTERS``."""
from .base import HostAdapter
from .builtin import BuiltinHostAdapter
from .magicdrive import MagicDriveV2Adapter

__all__ = ["BuiltinHostAdapter", "HostAdapter", "MagicDriveV2Adapter"]
