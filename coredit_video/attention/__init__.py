"""Attention backends, dense MHSA on host weights, and CoReDiT pruned self-attention."""
from .backends import attention, available_backends
from .dense import dense_self_attention
from .pruned import BlockLayout, pruned_self_attention

__all__ = ["BlockLayout", "attention", "available_backends", "dense_self_attention", "pruned_self_attention"]
