"""The built-in MagicDrive-shaped host model; importing it registers its adapter (``"builtin"``)."""
from .adapter import BuiltinHostAdapter
from .mv_stdit import HOST_PRESETS, HostConfig, MultiViewSTDiT, MultiViewSTDiT3Block, host_config

__all__ = ["HOST_PRESETS", "BuiltinHostAdapter", "HostConfig", "MultiViewSTDiT", "MultiViewSTDiT3Block",
           "host_config"]
