"""Sequence parallelism: DP x SP process groups, differentiable all-to-alls, SP attention."""
from .comm import gather_seq, heads_to_seq, measure_comm, seq_to_heads, split_seq
from .seq_attention import sp_attention, sp_self_attention
from .state import ParallelState, destroy_parallel, init_parallel

__all__ = [
    "ParallelState", "destroy_parallel", "gather_seq", "heads_to_seq", "init_parallel", "measure_comm",
    "seq_to_heads", "sp_attention", "sp_self_attention", "split_seq",
]
