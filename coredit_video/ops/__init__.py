"""Functional CoReDiT ops, pure torch and vectorised.

- :func:`spatial_coherence` ``x [F, N, C] -> sc [F, N]`` (float32)
- :func:`select_tokens` ``sc -> keep_idx [F, N-K], skip_idx [F, K]``
- :func:`reconstruct` ``y_keep [F, N-K, C] -> y [F, N, C]``
"""
from .partition import partition
from .reconstruction import reconstruct
from .selection import band_budgets, redundancy_increment, select_tokens, spatial_coherence

__all__ = [
    "band_budgets",
    "partition",
    "reconstruct",
    "redundancy_increment",
    "select_tokens",
    "spatial_coherence",
]
