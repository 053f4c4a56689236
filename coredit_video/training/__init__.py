"""Training: the DeepSpeed engine over the DP x SP mesh (schedule, losses and the loop live beside it)."""
from .engine import build_engine, deepspeed_config

__all__ = ["build_engine", "deepspeed_config"]
