"""Attention backends, dense MHSA on host weights, CoReDiT pruned self- and cross-view attention."""
from .backends import attention, available_backends
from .cross_view import ViewPairs, pruned_cross_view_attention
from .dense import dense_self_attention
from .pruned import BlockLayout, Selection, choose_tokens, pruned_self_attention

__all__ = ["BlockLayout", "Selection", "ViewPairs", "attention",
           "available_backends", "choose_tokens", "dense_self_attention", "pruned_cross_view_attention",
           "pruned_self_attention"]
