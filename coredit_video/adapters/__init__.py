"""Host adapters; importing this package registers them in ``HOST_ADAPTERS``. The built-in host's adapter lives
with that host (:mod:`coredit_video.embedded.host.adapter`) and registers when the host is imported."""
from .base import HostAdapter
from .magicdrive import MagicDriveV2Adapter

__all__ = ["HostAdapter", "MagicDriveV2Adapter"]
