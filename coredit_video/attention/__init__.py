"""Attention on host weights (backends, dense MHSA), the reduced self-attention core, pruned cross-view attention."""
from ..methods import BlockLayout, Selection
from .backends import attention, available_backends, dense_self_attention
from .cross_view import ViewPairs, pruned_cross_view_attention
from .pruned import call_scores, local_attend, pruned_self_attention, reduce_call

__all__ = ["BlockLayout", "Selection", "ViewPairs", "attention", "available_backends", "call_scores",
           "dense_self_attention", "local_attend", "pruned_cross_view_attention", "pruned_self_attention",
           "reduce_call"]
