from .vision_transformer import DropPath, Mlp

__all__ = ["DropPath", "Mlp"]
