from .dist_coordinator import DistCoordinator

__all__ = ["DistCoordinator"]
