"""Built-in MagicDrive-shaped host model."""
from .mv_stdit import HOST_PRESETS, HostConfig, MultiViewSTDiT, MultiViewSTDiT3Block, host_config

__all__ = ["HOST_PRESETS", "HostConfig", "MultiViewSTDiT", "MultiViewSTDiT3Block", "host_config"]
