class DistCoordinator:
    """Imported by ``magicdrivedit.utils.misc``; the model never uses it."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("colossalai is a test stand-in here; DistCoordinator is not available")
