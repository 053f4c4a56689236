"""coredit-video: CoReDiT coherence-based token pruning for MagicDrive-V2 style video DiTs.

    import coredit_video
    ctrl = coredit_video.apply(model, {"ratios": 0.26})
    ...
    coredit_video.remove(model)
"""
from .config import PruneConfig
from .controller import PruningController
from .plugin import apply, get_controller, remove
from .registry import HOST_ADAPTERS

__version__ = "0.1.0"
__all__ = ["HOST_ADAPTERS", "PruneConfig", "PruningController", "apply", "get_controller", "remove"]
