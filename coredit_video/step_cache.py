"""The token-wise step cache of block scope (``prune.step_cache``): a skipped token takes its own block residual from
the last step that computed it, instead of one rebuilt from its neighbours.

Each prunable spatial block keeps, per forward slot of a denoising step (guidance's conditional and unconditional
calls are two slots; in one batch they are different rows), ``residual [F, N, C]`` (``block(x) - x`` of every token
when it was last computed, in the block's dtype) and ``age [F, N]`` (steps since then). ``F`` and ``N`` are this
rank's frames and tokens: under sequence parallelism each rank caches its own rows.

Freshness comes from the selection (:func:`stale_first_selection`): the m-stride pattern shifts by one each step, so
every token is computed at least every ``m`` steps; among the other tokens the stalest are computed first (CoReDiT's
coherence decides among equally stale ones); a token ``max_stale`` steps old is always computed, the band's skip
budget shrinking if it must.

Its life: ``set_step(0, n)`` starts a fresh cache; a step out of order, or a block input of another shape, rebuilds it
with one warning; ``remove`` frees it.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .ops.partition import cached, check_frame, forced_mask, on_device

CACHE_SELECT = ("coherence", "staleness", "random", "change")
CACHE_FORMS = ("residual", "gated")
CACHE_CONTEXTS = ("retained", "self", "all")


@dataclass
class CacheEntry:
    """One block's cache for one forward slot: ``residual [F, N, C]``, ``age [F, N]`` int16 (steps since the token
    was last computed)."""

    residual: torch.Tensor
    age: torch.Tensor
    inputs: Optional[torch.Tensor] = None  # rule "change": each token's block input when it was last computed
    # cache_form "gated": the attention and MLP branches before their adaLN gates ([F, N, C] each); ``residual`` is
    # then the rest of the block residual (cross-view, cross-attention), so that
    # residual_now = residual + gate_attn_now * branches[0] + gate_mlp_now * branches[1]
    branches: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    # cache_context "self" / "all": each token's self-attention input when it was last computed (its keys and values)
    attn_inputs: Optional[torch.Tensor] = None
    # cache_context "all": each token's cross-view attention input when it was last computed ([F, N, C], per frame)
    cross_view_inputs: Optional[torch.Tensor] = None

    @property
    def nbytes(self) -> int:
        held = [self.residual, self.age]
        held += [t for t in (self.inputs, self.attn_inputs, self.cross_view_inputs) if t is not None]
        held += list(self.branches or ())
        return sum(t.numel() * t.element_size() for t in held)


class StepCache:
    """Every prunable block's :class:`CacheEntry` per forward slot of the current sampling loop."""

    def __init__(self):
        self.entries: Dict[Tuple[int, int], CacheEntry] = {}
        self.step: Optional[int] = None
        self.num_steps: Optional[int] = None
        self.slot = -1  # forwards begun in this step, minus one
        self.realized: List[Tuple[int, int, float]] = []  # (step, ordinal, skipped fraction) of every block call

    def clear(self) -> None:
        self.entries.clear()
        self.slot = -1

    def start_step(self, step: int, num_steps: int) -> None:
        """The sampler's ``set_step``: step 0 starts a fresh cache; any step but the next one rebuilds it."""
        if step == 0:
            self.clear()
            self.realized = []
        elif self.step is None or step != self.step + 1 or num_steps != self.num_steps:
            if self.entries:
                warnings.warn(f"step cache: step {step} of {num_steps} follows step {self.step} of {self.num_steps}; "
                              "the cache is rebuilt (call set_step(0, n) at the start of each video)", stacklevel=3)
            self.clear()
        self.step, self.num_steps, self.slot = step, num_steps, -1

    def end_loop(self) -> None:
        """The sampler left the loop (``set_phase``): nothing carries over to the next."""
        self.clear()
        self.step = self.num_steps = None

    def begin_forward(self) -> Optional[int]:
        """A model forward begins: its slot in this step (``None`` outside a sampling loop)."""
        if self.step is None:
            return None
        self.slot += 1
        return self.slot

    def get(self, slot: int, ordinal: int, like: torch.Tensor) -> Optional[CacheEntry]:
        """The entry of ``(slot, ordinal)`` if it fits ``like [F, N, C]``; one of another shape is dropped, warning."""
        entry = self.entries.get((slot, ordinal))
        if entry is None:
            return None
        r = entry.residual
        if r.shape != like.shape or r.dtype != like.dtype or r.device != like.device:
            warnings.warn(f"step cache: block {ordinal} got {tuple(like.shape)} {like.dtype}, its cache holds "
                          f"{tuple(r.shape)} {r.dtype}; the cache is rebuilt", stacklevel=3)
            self.clear()
            return None
        return entry

    def put(self, slot: int, ordinal: int, entry: CacheEntry) -> None:
        self.entries[(slot, ordinal)] = entry

    def record(self, slot: int, ordinal: int, entry: Optional[CacheEntry], frames: torch.Tensor,
               residual: torch.Tensor, keep: Optional[torch.Tensor] = None, select: str = "change",
               gated: Optional[Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]] = None,
               attn_inputs: Optional[torch.Tensor] = None, cross_view_inputs: Optional[torch.Tensor] = None) -> None:
        """Store what block ``ordinal`` computed in this step for forward ``slot``.

        ``frames [F, N, C]``: the block input; ``residual [F, N, C]``: every token's residual this step (computed
        or taken from the cache); ``keep [F, R]``: the computed tokens (``None``: a dense step, all of them);
        ``gated``: ``(rest, (attn, mlp))`` of the computed tokens (``split_gated``; dense: of all);
        ``attn_inputs`` / ``cross_view_inputs`` ``[F, N, C]``: every token's self- / cross-view attention input (the
        computed ones fresh)."""
        F_, N, C = frames.shape
        if keep is None:
            age = torch.zeros(F_, N, dtype=torch.int16, device=frames.device)
            inputs = frames.detach().clone() if select == "change" else None
            rest, branches = (gated[0], gated[1]) if gated is not None else (residual.detach(), None)
            fraction = 0.0
        else:
            idx = keep.unsqueeze(-1).expand(-1, -1, C)
            old_age = entry.age + 1 if entry is not None else torch.ones(F_, N, dtype=torch.int16,
                                                                         device=frames.device)
            age = old_age.scatter(1, keep, 0)
            inputs = None
            if select == "change":
                kept_in = frames.detach().gather(1, idx)
                inputs = frames.detach() if entry is None else entry.inputs.scatter(1, idx, kept_in)
            rest, branches = residual.detach(), None
            if gated is not None:  # the computed tokens' branches and rest; the skipped keep theirs (first time: 0)
                new_rest, new_br = gated
                old_rest = entry.residual if entry is not None else residual.detach()
                old_br = entry.branches if entry is not None else (torch.zeros_like(rest), torch.zeros_like(rest))
                rest = old_rest.scatter(1, idx, new_rest)
                branches = tuple(o.scatter(1, idx, b) for o, b in zip(old_br, new_br))
            fraction = 1.0 - keep.shape[1] / N
        detached = [None if t is None else t.detach() for t in (attn_inputs, cross_view_inputs)]
        self.put(slot, ordinal, CacheEntry(rest, age, inputs, branches, *detached))
        self.realized.append((self.step, ordinal, fraction))

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())


def cache_bytes_per_block(frames: int, tokens: int, channels: int, dtype_bytes: int = 2,
                          select: str = "coherence", form: str = "residual", context: str = "retained",
                          cross_view: bool = False) -> int:
    """Bytes one block's cache holds on one rank for one forward slot: the residual ``F N C`` in the block's dtype,
    the age ``F N`` (int16), for ``select="change"`` the inputs ``F N C``, for ``form="gated"`` the two gated
    branches ``2 F N C``, for ``context`` ``"self"`` / ``"all"`` the self-attention inputs ``F N C``, and for
    ``"all"`` in a block with cross-view attention (``cross_view``) its inputs ``F N C`` too."""
    tensors = 1 + (select == "change") + 2 * (form == "gated") + (context != "retained")
    tensors += context == "all" and cross_view
    per_token = channels * dtype_bytes * tensors + 2
    return frames * tokens * per_token


def step_cache_flops(tokens: int, kept: int, channels: int, select: str = "change", attention_inputs: int = 0) -> int:
    """The step cache's own work in one block for one frame of ``tokens`` at a cached step (FLOPs, a write counted
    as one per element, as :func:`coredit_video.flops.copy_flops`): the ``kept`` computed tokens' residuals written
    into the cache, their block inputs too for ``select="change"``, their inputs to each of ``attention_inputs``
    cached attentions (1 with ``cache_context="self"``, 2 with ``"all"`` in a block with cross-view attention); and
    for ``"change"`` every token's relative input move (difference, two norms, a divide: ``5 N C``). The block's
    eq. 3 restoration, which a cached step does not run, stays in the method's count (``4 N C``, a slight
    overcount)."""
    writes = 1 + (select == "change") + attention_inputs
    return writes * kept * channels + (5 * tokens * channels if select == "change" else 0)


def full_context_flops(tokens: int, kept: int, channels: int, key_sets: int = 1) -> int:
    """Extra FLOPs of a full-context step cache in one block for one frame of ``tokens`` of which ``kept`` are
    computed, for each of ``key_sets`` attentions that see every token (1 with ``cache_context="self"``; with
    ``"all"`` also one per cross-view neighbour): the skipped tokens' keys and values from their cached inputs
    (``2C x C`` multiply-adds each) and the computed tokens' queries against them (``Q K^T`` and ``A V``:
    ``2 kept skipped C`` multiply-adds); multiply-add = 2."""
    skipped = tokens - kept
    return key_sets * 2 * (2 * channels * channels * skipped + 2 * kept * skipped * channels)


def stale_first_selection(sc: torch.Tensor, age: Optional[torch.Tensor], hw, budgets: Sequence[int], stride: int,
                          phase: int, bands: int, max_stale: Optional[int], rule: str = "coherence",
                          seed: int = 0, group=None, change: Optional[torch.Tensor] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Skip ``budgets[b]`` tokens of band ``b`` of every frame, the freshest first: ``(keep [F, R], skip [F, K])``.

    ``sc [F, N]``: coherence (``rule="coherence"``: among equally stale tokens the most coherent is skipped first);
    ``rule="staleness"``: ties by index; ``"random"``: ties at random (``seed``). ``age [F, N]`` (``None``: all 0).
    The m-stride tokens of ``phase`` are always computed, as are tokens ``max_stale`` steps old. Where a band of
    some frame has fewer other tokens than its budget, every band of every frame skips at most that many (so all
    frames keep ``R`` tokens, and the choice does not depend on how a sequence-parallel ``group`` splits the bands:
    the cap is the minimum over its ranks).
    """
    from .ops.selection import select_tokens

    Fr, N = sc.shape
    H, W = check_frame(hw, bands, N)
    if rule == "coherence":
        base = sc.detach().float().clamp(-1.0, 1.0)
    elif rule == "change":  # the tokens whose input moved least since they were computed skip first
        base = -change.float().clamp(0.0, 1.0)
    elif rule == "random":  # drawn for the whole frame, this rank's rows taken: the same draw at any SP size
        import torch.distributed as dist

        P, rank = (dist.get_world_size(group), dist.get_rank(group)) if group is not None else (1, 0)
        g = torch.Generator().manual_seed(int(seed))
        base = torch.rand(Fr, P * N, generator=g)[:, rank * N:(rank + 1) * N].to(sc.device)
    else:
        base = torch.zeros(Fr, N, device=sc.device)
    must_keep = on_device(cached(forced_mask, H, W, stride, phase), sc.device).expand(Fr, N)
    if age is not None:
        base = base - 4.0 * age.float()  # a step staler outranks any score difference (scores lie in [-1, 1])
        if max_stale is not None:
            must_keep = must_keep | (age >= max_stale)
    cap = torch.tensor([int((~must_keep).view(Fr, bands, N // bands).sum(-1).min())], dtype=torch.int64)
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(cap, op=dist.ReduceOp.MIN, group=group)
    budgets = [min(int(k), int(cap)) for k in budgets]
    if group is not None:  # the host's all-to-alls need equal retained counts on every rank
        total = torch.tensor([sum(budgets), -sum(budgets)], dtype=torch.int64)
        dist.all_reduce(total, op=dist.ReduceOp.MAX, group=group)
        if int(total[0]) != -int(total[1]):
            raise ValueError(f"step cache: the ranks would keep unequal token counts (skips {-int(total[1])} to "
                             f"{int(total[0])}); raise prune.max_stale or lower the ratio")
    return select_tokens(base, (H, W), 0.0, stride, phase, bands, budgets=budgets, must_keep=must_keep)


def current_forward(module):
    """What calling ``module`` runs now: its instance ``forward`` (a patch) if it has one, else its class's."""
    own = module.__dict__.get("forward")
    return own if own is not None else type(module).forward.__get__(module)


@contextmanager
def swapped_forward(module, forward):
    """``module``'s instance ``forward`` is ``forward`` inside the block; whatever was there before comes back."""
    own = module.__dict__.get("forward")
    module.__dict__["forward"] = forward
    try:
        yield
    finally:
        if own is None:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = own


@contextmanager
def full_context_attention(attn, cached: Optional[torch.Tensor], keep: Optional[torch.Tensor], backend: str = "auto"):
    """While the block runs, its self-attention ``attn`` sees every token (``cache_context`` ``"self"``, ``"all"``);
    yields ``{"inputs": [F, N, C]}``, every token's self-attention input after the call.

    ``cached [F, N, C]``: the inputs cached for every token; ``keep [F, R]``: the tokens the block computes, whose
    inputs ``h [F, R, C]`` arrive now. Their queries attend to the keys and values of ``cached`` with the computed
    rows replaced by ``h``. ``cached=None`` (a dense step): the attention runs as it is and its input is recorded.
    """
    from .attention.backends import dense_self_attention

    seen: Dict[str, torch.Tensor] = {}
    call = current_forward(attn)

    def forward(h, *args, **kwargs):
        if cached is None:
            seen["inputs"] = h.detach()
            return call(h, *args, **kwargs)
        every = cached.to(h.dtype).scatter(1, keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]), h)
        seen["inputs"] = every.detach()
        return dense_self_attention(attn, h, backend, kv=every)

    with swapped_forward(attn, forward):
        yield seen


@contextmanager
def full_context_cross_view(attn, pairs, cached: Optional[torch.Tensor], keep: Optional[torch.Tensor]):
    """While the block runs, its cross-view attention ``attn`` (called ``attn(h, cond)``) sees every token of the
    neighbour views (``cache_context="all"``); yields ``{"inputs": [F, N, C]}``, every frame's cross-view input
    after the call.

    ``pairs`` (:class:`~coredit_video.attention.ViewPairs`): the frame of each query row ``h [F', R, C]`` and of
    each of the ``J`` chunks of its ``cond [F', J*R, C]``. ``cached [F, N, C]``: the inputs cached for every token
    of every frame; ``keep [F, R]``: the tokens computed now. Each row's ``cond`` becomes its ``J`` neighbour
    frames' ``N`` tokens, the computed ones fresh. ``cached=None`` (a dense step): the call runs as it is and the
    inputs are recorded.
    """
    seen: Dict[str, torch.Tensor] = {}
    call = current_forward(attn)

    def forward(h, cond, *args, **kwargs):
        frames = h.index_select(0, pairs.first)  # [F, R, C]: each frame's input, from one row that queries it
        if cached is None:
            seen["inputs"] = frames.detach()
            return call(h, cond, *args, **kwargs)
        C = h.shape[-1]
        every = cached.to(h.dtype).scatter(1, keep.unsqueeze(-1).expand(-1, -1, C), frames)
        seen["inputs"] = every.detach()
        cond_all = every.index_select(0, pairs.kv.reshape(-1)).reshape(h.shape[0], -1, C)  # [F', J*N, C]
        return call(h, cond_all, *args, **kwargs)

    with swapped_forward(attn, forward):
        yield seen


@contextmanager
def captured_branches(block, names: Sequence[str]):
    """While the block runs: ``{name: output}`` of its submodules ``names`` (the gated branches)."""
    got: Dict[str, torch.Tensor] = {}
    handles = [getattr(block, n).register_forward_hook(lambda m, a, o, n=n: got.__setitem__(n, o)) for n in names]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def per_frame_gates(gates, T: int, frames: int):
    """The block's ``(g_attn, g_mlp)`` as ``[F, 1, C]`` each: per-sample gates ``[B*NC, 1, C]`` repeated over the
    ``T`` frames of each row, per-frame gates as they are."""
    return tuple(g if g.shape[0] == frames else g.repeat_interleave(T, 0) for g in gates)


def split_gated(residual: torch.Tensor, got: Dict[str, torch.Tensor], names: Sequence[str], gates, T: int):
    """``residual [F, n, C]`` -> ``(rest, (attn, mlp))`` with ``residual = rest + g_attn * attn + g_mlp * mlp``:
    the branches before their gates (each ``[F, n, C]``), ``gates`` the block's ``(g_attn, g_mlp)``
    ``[B*NC, 1, C]`` (rows repeated per frame, ``F = B*NC*T``) or ``[F, 1, C]`` (per frame)."""
    F_, n, C = residual.shape
    g_a, g_m = per_frame_gates(gates, T, F_)
    a, m = (got[k].reshape(F_, n, C) for k in names)
    return residual - g_a * a - g_m * m, (a, m)


def regate(entry: CacheEntry, gates, T: int) -> torch.Tensor:
    """The cached block residual of every token with this step's gates (``gated`` form), or as cached."""
    if entry.branches is None:
        return entry.residual
    g_a, g_m = per_frame_gates(gates, T, entry.residual.shape[0])
    return entry.residual + g_a * entry.branches[0] + g_m * entry.branches[1]
