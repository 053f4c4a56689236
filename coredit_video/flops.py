"""Analytic FLOPs of a MagicDrive-V2 style multi-view video DiT, dense and with CoReDiT pruning.

Units
-----
Every number returned here is **FLOPs of one forward pass of the DiT for one sample**: all camera
views, all latent frames, base and control branches, one denoising step, no CFG doubling. A
multiply-add counts as 2 FLOPs. Only matrix products are counted (plus the pruning overhead
below); norms, modulation, softmax, RoPE, GELU and residual adds are ignored (they are linear in
``n*C`` with small constants, well under 1% of the total).

Model layout (``MagicDriveSTDiT3``, stage-3 config)
------------------------------------------------
Per latent frame a view is an ``H x W`` token grid, ``n = H*W`` tokens of width ``C``; ``T``
latent frames; ``V`` views; ``L`` cross-attention condition tokens per frame.

* ``depth`` base spatial blocks (``base_blocks_s``): self-attention (**prunable**), cross-attention,
  cross-view attention, MLP.
* ``depth`` base temporal blocks (``base_blocks_t``): temporal self-attention (per token column
  over ``T`` frames), cross-attention, MLP.
* ``control_depth`` control spatial blocks (``control_blocks_s``): self-attention (**prunable**),
  cross-attention, MLP; no cross-view attention (``control_skip_cross_view=True``).
* ``control_depth`` control temporal blocks (``control_blocks_t``, ``control_skip_temporal=False``):
  as the base temporal blocks.

So the XL model has 28 + 13 = 41 spatial and 41 temporal blocks ("41 + 41").

Per frame and view, per block (multiply-add = 2):

==========================  ================================================================
kind                        FLOPs per frame and view
==========================  ================================================================
spatial_self_attention      ``8 n C^2 + 4 n^2 C`` (qkv ``6nC^2`` + out proj ``2nC^2``; QK^T + AV)
  pruned, ``k`` kept        ``8 k C^2 + 4 k^2 C + (6 + 4) n C`` (selection + reconstruction)
cross_view_attention        ``pairwise`` (MagicDrive-V2 code: one attention per neighbour,
                            summed, then ``mva_proj``): ``N*(2nC^2 + 4nC^2 + 4n^2C + 2nC^2)
                            + 2nC^2``; ``concat`` (keys of all N neighbours concatenated):
                            ``2nC^2 + 4(Nn)C^2 + 4n(Nn)C + 2nC^2``
cross_attention             ``2nC^2 + 4LC^2 + 4nLC + 2nC^2`` (q, kv on L tokens, QK^T + AV, out)
mlp                         ``2 * 2 n C (mlp_ratio C)``
temporal_self_attention     ``8 n C^2 + 4 n T C`` (= per column ``8TC^2 + 4T^2C``, over n columns
                            and divided by T)
temporal_cross_attention    as cross_attention
temporal_mlp                as mlp
other                       patch embedders, map-control patchifier, ``before_proj``/``after_proj``
                            of the control branch, final layer, caption embedder, ``t_block``
==========================  ================================================================

Pruning overhead constants (per pruned frame, linear in ``n*C``, see the spec's selection and
reconstruction): scoring ``SELECTION_FLOPS_PER_TOKEN_CHANNEL = 6`` (normalise: square + sum +
divide = 3, cell mean = 1, dot with the cell mean = 2) and reconstruction
``RECONSTRUCTION_FLOPS_PER_TOKEN_CHANNEL = 4`` (weight x output, scatter-sum into sub-grids,
divide by the weight sum, gather back). Sorting is ``O(n log n)`` scalar work, not counted. A block
whose budget is ``K = 0`` runs dense and pays no overhead.

Token-reduction methods (``method=``, CLI ``--method``) and their own work
--------------------------------------------------------------------------
Every method's pruned count includes its overhead: the work it adds to the dense block (scoring, similarity,
merging, reconstruction...), so the reported reductions are net of it (``overhead_flops`` is that work
summed over the whole forward, ``overhead_terms`` splits it by named term). Per pruned frame of ``N = H*W``
tokens, ``K`` skipped (the per-band budgets below), ``R = N - K`` kept, ``S = sh*sw`` the block's sub-grid
(an upper bound on the retained candidates of a skipped token's cell; block ``l`` uses ``grids[l % len]``,
default that of ``PruneConfig``):

==================  =========================================  ==========================================
method              attention                                  overhead (FLOPs per frame and block)
==================  =========================================  ==========================================
coredit             ``8RC^2 + 4R^2C``                          scoring ``6NC`` + eq. 3 ``4NC``
random              as coredit                                 as coredit
no_reconstruction   as coredit                                 scoring ``6NC``
coredit_copy        as coredit                                 scoring + cosine (normalise ``3NC``, ``2KSC``)
                                                               + argmax ``KS`` + copy ``KC``
coredit_sharp       as coredit                                 scoring + cosine + softmax ``5KS`` + weighted
                                                               sum ``2KSC``
coredit_merge       as coredit                                 scoring + cosine + argmax + merge
                                                               ``2KC + RC`` + ``log(size)`` bias
                                                               ``heads R^2`` + copy ``KC``
coredit_kv          ``4NC^2 + 4RC^2 + 4NRC`` (all queries)     scoring ``6NC``
todo                as coredit_kv with ``R' = N - 3 ceil(K/3)``  cell ranking ``4NC`` + pooling ``NC``
tome                as coredit, ``K <= Ns``                    normalise ``3NC`` + ``2 Ns Nd C`` + max
                                                               ``Ns Nd`` + sort ``Ns ceil(log2 Ns)`` + merge
                                                               ``KC + RC`` + unmerge ``NC`` + ``log(size)``
                                                               bias ``heads R^2``
tomesd              as tome                                    as tome, without the bias
==================  =========================================  ==========================================

CoReDiT's selection (top-K of ``N`` scalar scores per band) and its gathers are not counted in the attention
scope, as before; ToMe's sort is (``Ns ceil(log2 Ns)``), as the spec asks. ToDo pools ``ceil(K/3)`` of the
``floor(H/2) floor(W/2)`` whole 2x2 cells (each removes 3 keys), so it drops ``3 ceil(K/3)`` keys, at most
``3 * cells`` and at most ``N - 1``. ToMe has one destination per 2x2 cell (``Nd = ceil(H/2) ceil(W/2)``,
``Ns = N - Nd``) and merges ``min(K, Ns)`` sources. Cross-view pruning (``cross_view`` ``kv``/``qkv``)
reuses CoReDiT's retained set; ``todo``, ``tome`` and ``tomesd`` have none, so they refuse it.

Scope (``scope=``, CLI ``--scope``)
----------------------------------
``attention`` (default, the paper): only the spatial self-attention (and cross-view attention with
``cross_view``) is pruned. ``block``: every prunable spatial block runs entirely on its ``R`` retained tokens
per view-frame: self-attention on ``R``, cross-view attention with queries and every neighbour's keys and
values on ``R`` (whatever ``cross_view`` says), cross-attention with ``R`` queries (the ``L`` condition
tokens' keys and values unchanged) and the MLP on ``R``. Its overhead: scoring ``6NC``, gather of the block
input ``RC``, and (except ``no_reconstruction``, whose skipped tokens pass through) the skipped tokens' block
residual: residual ``NC`` (subtract on ``R``, add on ``K``) plus the method's restoration rule (eq. 3 ``4NC``,
the copy's, the sharpened average's, the merge's; in the block scope the merge adds no ``log(size)`` bias:
the block's own attention takes none). Temporal blocks
stay dense. Only the CoReDiT family (coredit, random, no_reconstruction, coredit_copy, coredit_sharp,
coredit_merge) has a block scope. The block's overhead is booked to ``spatial_self_attention`` (where
the selection is made), so that kind's reduction is net of it.

Token budget: per frame and band ``K = floor(r * band_tokens)``, capped at the band's non-forced
tokens (m-stride retention, ``(i + j - l) mod m == 0`` always kept, default ``m = 3``) and at
``band_tokens - 1``, exactly as :func:`coredit_video.ops.selection.band_budgets`.

Resolution to tokens: pixels ``/ 8`` (CogVideoX VAE) then ``/ 2`` (patch), each rounded up:
848 x 1600 -> 106 x 200 latents -> 53 x 100 tokens, ``n = 5300``. Frames: ``1 + (F - 1) // 4``
latent frames (CogVideoX causal VAE), 17 frames -> ``T = 5``. With ``bands > 1`` the frame height
must be a multiple of ``bands``; ``pad_h_to_bands=True`` pads it up the way MagicDrive-V2 pads for
its SP size (53 -> 56 with 8 bands), and the padded rows are computed (dense and pruned alike).

Worked example: ``magicdrive-v2-xl``, 848x1600, 17 frames (T = 5), 6 views, r = 0.26, bands 1
-------------------------------------------------------------------------------------------
``C = 1152``, ``n = 5300``, ``L = 300``, ``K = floor(0.26 * 5300) = 1378``, ``k = 3922``.

* self-attention, dense: ``8nC^2 = 5.627e10`` + ``4n^2C = 1.294e11`` = ``1.857e11``;
  pruned: ``8kC^2 = 4.164e10`` + ``4k^2C = 7.088e10`` + overhead ``10nC = 6.1e7`` = ``1.126e11``;
  saved ``39.4%`` (paper: -39%).
* base spatial block, rest: cross-view (pairwise) ``18nC^2 + 8n^2C = 3.855e11``, cross-attn
  ``4nC^2 + 4LC^2 + 4nLC = 3.706e10``, MLP ``16nC^2 = 1.125e11``;
  control spatial block: no cross-view; temporal block: ``8nC^2 + 4nTC = 5.639e10`` + cross-attn +
  MLP = ``2.060e11``.
* per frame and view: 28 x (1.857e11 + 3.855e11 + 0.371e11 + 1.125e11 + 2.060e11) + 13 x (1.857e11
  + 0.371e11 + 1.125e11 + 2.060e11) + other ``~3.9e11`` = ``~3.34e13``; x 6 views x 5 frames
  = ``~1.0e15`` FLOPs per forward.
* saved: 41 x (1.857e11 - 1.126e11) = ``3.0e12`` per frame and view: total ``-9.0%``
  (the spec's band for the paper's -8%: between -6% and -10%).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from .methods import DEFAULT_METHOD
from .ops.selection import band_budgets, check_ratio
from .plan import GridSpec, Plan, grids_json, parse_grids, read_plan

__all__ = [
    "KINDS",
    "PRESETS",
    "DEFAULT_FRAMES",
    "DEFAULT_RESOLUTION",
    "SELECTION_FLOPS_PER_TOKEN_CHANNEL",
    "RECONSTRUCTION_FLOPS_PER_TOKEN_CHANNEL",
    "ModelSpec",
    "get_spec",
    "parse_hw",
    "latent_frames_for",
    "tokens_for_resolution",
    "skip_budgets",
    "self_attention_flops",
    "cross_view_attention_flops",
    "pruned_cross_view_attention_flops",
    "CROSS_VIEW_PRUNING",
    "cross_attention_flops",
    "mlp_flops",
    "temporal_self_attention_flops",
    "SCOPES",
    "DEFAULT_GRIDS",
    "scoring_flops",
    "reconstruction_flops",
    "cosine_normalise_flops",
    "cell_similarity_flops",
    "argmax_flops",
    "copy_flops",
    "softmax_flops",
    "weighted_sum_flops",
    "merge_flops",
    "proportional_attention_flops",
    "gather_flops",
    "residual_flops",
    "todo_rank_flops",
    "todo_pool_flops",
    "tome_similarity_flops",
    "tome_max_flops",
    "tome_sort_flops",
    "tome_merge_flops",
    "unmerge_flops",
    "tome_destinations",
    "todo_dropped_keys",
    "method_skipped",
    "kv_only_attention_flops",
    "method_attention_flops",
    "method_overhead_terms",
    "FlopsQuery",
    "count_flops",
    "flops_saved_fraction",
    "with_overrides",
]

KINDS: Tuple[str, ...] = (
    "spatial_self_attention",
    "cross_view_attention",
    "cross_attention",
    "mlp",
    "temporal_self_attention",
    "temporal_cross_attention",
    "temporal_mlp",
    "other",
)
"""Module kinds of the breakdown; pruning changes ``spatial_self_attention`` and, with ``cross_view``
on, ``cross_view_attention``."""

SELECTION_FLOPS_PER_TOKEN_CHANNEL = 6
"""Scoring cost per token and channel: normalise (3), cell mean (1), dot with the cell mean (2)."""
RECONSTRUCTION_FLOPS_PER_TOKEN_CHANNEL = 4
"""Reconstruction cost per token and channel: weight, scatter-sum, normalise, gather."""

DEFAULT_FRAMES = 17
"""Video frames of the default clip (MagicDrive-V2 tests 16/17-frame clips): 5 latent frames."""
DEFAULT_RESOLUTION = (848, 1600)
"""Default ``(H, W)`` in pixels: MagicDrive-V2's highest resolution bucket."""

SCOPES: Tuple[str, ...] = ("attention", "block")
"""What a prunable spatial block runs on its retained tokens: its self-attention only, or all of it."""
DEFAULT_GRIDS: Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...] = (((8, 8), (4, 4)), ((6, 6), (3, 3)))
"""``(grid, subgrid)`` per block, block ``l`` uses entry ``l % len``: ``PruneConfig.grids``' default."""
SOFTMAX_FLOPS_PER_ELEMENT = 5
"""Softmax per logit: subtract max, exp, sum, divide, scale by the temperature (about 5 FLOPs)."""

_CROSS_VIEW_MODES = ("pairwise", "concat")
CROSS_VIEW_PRUNING = ("off", "kv", "qkv")
"""Cross-view pruning modes (prune config ``cross_view``)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a MagicDrive-V2 style multi-view STDiT3 (only what FLOPs depend on).

    Attributes:
        hidden: width ``C``.
        depth: base spatial blocks (= base temporal blocks when ``temporal``).
        control_depth: control spatial blocks (= control temporal blocks when ``control_temporal``).
        num_heads: attention heads (FLOPs do not depend on it; kept for reference).
        mlp_ratio: MLP hidden width is ``int(hidden * mlp_ratio)``.
        patch: ``(t, h, w)`` patch size of the latent patch embedder.
        vae_down: ``(temporal, spatial)`` VAE downsampling; latent frames ``1 + (F - 1) // t``.
        in_channels: latent channels (CogVideoX VAE: 16).
        out_channels: predicted channels (``pred_sigma=False``: 16).
        cond_tokens: cross-attention condition tokens ``L`` per frame. Default 300: the T5 length
            (``model_max_length``); MagicDrive-V2 also appends frame, camera and box tokens and may
            trim text padding, so the real ``L`` varies per sample. Cross-attention is a few % of
            the total, so this choice moves ``total_reduction`` by well under 0.5 points.
        caption_channels: T5 width fed to the caption embedder.
        cross_view_neighbours: neighbour views each view attends to (left and right: 2), in base
            spatial blocks (and control spatial blocks only if ``control_cross_view``).
        cross_view_mode: ``"pairwise"`` (MagicDrive-V2 code: one attention per neighbour, outputs
            summed, then ``mva_proj``) or ``"concat"`` (one attention over all neighbours' keys).
        views: default number of camera views.
        temporal: base temporal blocks exist (``with_temp_block``).
        control_temporal: control temporal blocks exist (``control_skip_temporal=False``).
        control_cross_view: control spatial blocks have cross-view attention.
        x_control_embedder: the control branch has its own patch embedder.
        layout_channels: channels of a per-view layout input patch-embedded like the latents (the embedded host's
            ``view_layout``; 0: none, as in MagicDrive-V2).
    """

    hidden: int
    depth: int
    control_depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    patch: Tuple[int, int, int] = (1, 2, 2)
    vae_down: Tuple[int, int] = (4, 8)
    in_channels: int = 16
    out_channels: int = 16
    cond_tokens: int = 300
    caption_channels: int = 4096
    cross_view_neighbours: int = 2
    cross_view_mode: str = "pairwise"
    views: int = 6
    temporal: bool = True
    control_temporal: bool = True
    control_cross_view: bool = False
    x_control_embedder: bool = True
    layout_channels: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "depth", "num_heads", "in_channels", "out_channels", "views"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"ModelSpec.{name} must be an int >= 1, got {v!r}")
        for name in ("control_depth", "cond_tokens", "caption_channels", "cross_view_neighbours", "layout_channels"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"ModelSpec.{name} must be an int >= 0, got {v!r}")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ValueError(f"ModelSpec.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if len(tuple(self.patch)) != 3 or not all(_is_int(p) and p >= 1 for p in self.patch):
            raise ValueError(f"ModelSpec.patch must be three ints >= 1, got {self.patch!r}")
        if len(tuple(self.vae_down)) != 2 or not all(_is_int(p) and p >= 1 for p in self.vae_down):
            raise ValueError(f"ModelSpec.vae_down must be two ints >= 1, got {self.vae_down!r}")
        if self.cross_view_mode not in _CROSS_VIEW_MODES:
            raise ValueError(
                f"ModelSpec.cross_view_mode must be one of {_CROSS_VIEW_MODES}, got {self.cross_view_mode!r}"
            )

    @property
    def prunable_blocks(self) -> int:
        """Length of a pruning plan: base spatial blocks then control spatial blocks."""
        return self.depth + self.control_depth

    def block_names(self) -> List[str]:
        """Names of the prunable blocks in plan order."""
        return [f"base_blocks_s.{i}" for i in range(self.depth)] + [
            f"control_blocks_s.{i}" for i in range(self.control_depth)
        ]


PRESETS: Dict[str, ModelSpec] = {
    # MagicDriveSTDiT3-XL/2, stage-3 config (control_skip_temporal=False, control_skip_cross_view=True)
    "magicdrive-v2-xl": ModelSpec(hidden=1152, depth=28, control_depth=13, num_heads=16),
    # toy model for tests and smoke runs
    "tiny": ModelSpec(
        hidden=64, depth=2, control_depth=1, num_heads=4, in_channels=4, out_channels=4,
        cond_tokens=8, caption_channels=32, views=6,
    ),
}
"""Named model specs. ``dataclasses.replace(PRESETS[name], ...)`` derives variants."""


def get_spec(spec: Union[str, ModelSpec]) -> ModelSpec:
    """A :class:`ModelSpec` from itself or a preset name."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown preset {spec!r}; valid presets: {', '.join(sorted(PRESETS))}")
        return PRESETS[spec]
    raise ValueError(f"spec must be a ModelSpec or a preset name, got {type(spec).__name__}")


def parse_hw(value: Union[str, Sequence[int]], name: str = "resolution") -> Tuple[int, int]:
    """``"848x1600"`` or ``(848, 1600)`` -> ``(848, 1600)`` (height first)."""
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
        try:
            hw = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name} must look like HxW (e.g. 848x1600), got {value!r}") from None
    else:
        try:
            hw = tuple(value)
        except TypeError:
            raise ValueError(f"{name} must be HxW or a (H, W) pair, got {value!r}") from None
    if len(hw) != 2 or not all(_is_int(v) and v >= 1 for v in hw):
        raise ValueError(f"{name} must be two ints >= 1 (H, W), got {value!r}")
    return hw  # type: ignore[return-value]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def latent_frames_for(spec: Union[str, ModelSpec], frames: int) -> int:
    """Token frames ``T`` for ``frames`` video frames: CogVideoX ``1 + (F - 1) // 4``, then the
    temporal patch (rounded up)."""
    spec = get_spec(spec)
    _check_positive_int("frames", frames)
    lat = 1 + (frames - 1) // spec.vae_down[0]
    return _ceil_div(lat, spec.patch[0])


def tokens_for_resolution(
    spec: Union[str, ModelSpec], resolution: Union[str, Sequence[int]], bands: int = 1,
    pad_h_to_bands: bool = False,
) -> Tuple[int, int]:
    """Per-view token grid ``(H, W)`` of one latent frame for a pixel resolution.

    Pixels ``/ vae_down[1]`` then ``/ patch`` (each rounded up); with ``pad_h_to_bands`` ``H`` is
    padded up to a multiple of ``bands``. 848x1600 -> (53, 100); with 8 bands and padding (56, 100).
    """
    spec = get_spec(spec)
    h_px, w_px = parse_hw(resolution, "resolution")
    s = spec.vae_down[1]
    h = _ceil_div(_ceil_div(h_px, s), spec.patch[1])
    w = _ceil_div(_ceil_div(w_px, s), spec.patch[2])
    if pad_h_to_bands:
        h = _ceil_div(h, bands) * bands
    return h, w


def skip_budgets(
    hw: Tuple[int, int], ratio: float, bands: int = 1, stride: Optional[int] = 3, ordinal: int = 0
) -> List[int]:
    """Skipped tokens per band of one frame: ``floor(r * band_tokens)``, capped at the band's
    non-forced tokens and at ``band_tokens - 1`` (the rule of
    ``coredit_video.ops.selection.band_budgets``, which it calls). ``stride=None`` models no forced tokens."""
    H, W = _check_frame(hw, bands)
    check_ratio(ratio, name="ratio")
    _check_stride(stride)
    if stride is not None:
        return band_budgets((H, W), float(ratio), int(stride), ordinal, bands)
    band_tokens = H // bands * W
    return [min(int(math.floor(float(ratio) * band_tokens)), band_tokens - 1)] * bands


# ---------------------------------------------------------------- per frame and view primitives
def self_attention_flops(n: int, C: int) -> int:
    """Dense self-attention over ``n`` tokens of width ``C``: ``8nC^2 + 4n^2C`` FLOPs."""
    return 8 * n * C * C + 4 * n * n * C


# ------------------------------------------------------- per-method overhead terms (per frame)
def scoring_flops(n: int, C: int) -> int:
    """Spatial coherence of ``n`` tokens (eq. 1-2): normalise ``3``, cell mean ``1``, dot ``2`` per token and
    channel: ``6nC`` FLOPs."""
    return SELECTION_FLOPS_PER_TOKEN_CHANNEL * n * C


def reconstruction_flops(n: int, C: int) -> int:
    """Eq. 3 on a frame of ``n`` tokens: weight, scatter-sum into sub-grids, divide, gather: ``4nC`` FLOPs."""
    return RECONSTRUCTION_FLOPS_PER_TOKEN_CHANNEL * n * C


def cosine_normalise_flops(n: int, C: int) -> int:
    """Unit-normalising ``n`` tokens for a cosine similarity (square, sum, divide): ``3nC`` FLOPs."""
    return 3 * n * C


def cell_similarity_flops(skipped: int, candidates: int, C: int) -> int:
    """Cosine of each of ``skipped`` tokens with its at most ``candidates`` (``sh*sw``) cell neighbours:
    ``2 K S C`` FLOPs."""
    return 2 * skipped * candidates * C


def argmax_flops(rows: int, candidates: int) -> int:
    """Arg-max over ``candidates`` similarities for each of ``rows`` tokens: ``rows * candidates`` FLOPs."""
    return rows * candidates


def copy_flops(rows: int, C: int) -> int:
    """Copying ``rows`` tokens of width ``C`` (a move, counted as one FLOP per element): ``rows * C``."""
    return rows * C


def softmax_flops(rows: int, candidates: int) -> int:
    """Temperature softmax over ``candidates`` logits for each of ``rows`` tokens: ``5 * rows * candidates``."""
    return SOFTMAX_FLOPS_PER_ELEMENT * rows * candidates


def weighted_sum_flops(rows: int, candidates: int, C: int) -> int:
    """Weighted sum of ``candidates`` vectors of width ``C`` for each of ``rows`` tokens: ``2 rows S C``."""
    return 2 * rows * candidates * C


def merge_flops(skipped: int, kept: int, C: int) -> int:
    """Size-weighted average of ``skipped`` inputs into their ``kept`` targets: weight and add ``2KC``, divide
    by the size ``RC``."""
    return 2 * skipped * C + kept * C


def proportional_attention_flops(heads: int, queries: int, keys: int) -> int:
    """ToMe's proportional attention: ``log(size)`` added to every key logit, ``heads * queries * keys`` adds."""
    return heads * queries * keys


def gather_flops(kept: int, C: int) -> int:
    """Gathering the ``kept`` retained rows of a block input (block scope): ``RC``."""
    return kept * C


def residual_flops(n: int, C: int) -> int:
    """Block residual of a frame (block scope): subtract the input on the ``R`` retained tokens and add the
    rebuilt residual on the ``K`` skipped ones: ``nC``."""
    return n * C


def todo_rank_flops(n: int, C: int) -> int:
    """ToDo: ranking the 2x2 cells by coherence (a cell mean and a distance per token): ``4nC``."""
    return 4 * n * C


def todo_pool_flops(n: int, C: int) -> int:
    """ToDo: average-pooling the chosen 2x2 cells of the keys/values input: ``nC`` at most."""
    return n * C


def tome_similarity_flops(sources: int, destinations: int, C: int) -> int:
    """ToMe: cosine of every source with every destination: ``2 Ns Nd C``."""
    return 2 * sources * destinations * C


def tome_max_flops(sources: int, destinations: int) -> int:
    """ToMe: best destination of every source: ``Ns Nd`` comparisons."""
    return sources * destinations


def tome_sort_flops(sources: int) -> int:
    """ToMe: sorting the ``Ns`` best scores: ``Ns * ceil(log2 Ns)`` comparisons."""
    return sources * max(sources - 1, 0).bit_length()


def tome_merge_flops(merged: int, kept: int, C: int) -> int:
    """ToMe: scatter-add the ``K`` merged sources into their destinations ``KC``, then divide ``RC``."""
    return merged * C + kept * C


def unmerge_flops(n: int, C: int) -> int:
    """ToMe: every token copies the output of the token it became: ``nC``."""
    return n * C


def tome_destinations(hw: Tuple[int, int]) -> int:
    """ToMe destinations of an ``H x W`` frame, the top-left token of every (clipped) 2x2 cell:
    ``ceil(H/2) * ceil(W/2)``."""
    H, W = hw
    return _ceil_div(H, 2) * _ceil_div(W, 2)


def todo_dropped_keys(hw: Tuple[int, int], skipped: int) -> int:
    """Keys ToDo drops for a budget of ``skipped`` tokens: ``ceil(K/3)`` whole 2x2 cells pooled (each 4 -> 1),
    at most the frame's ``floor(H/2) floor(W/2)`` cells, leaving at least one key."""
    H, W = hw
    cells = min(_ceil_div(skipped, 3), (H // 2) * (W // 2))
    return min(3 * cells, H * W - 1)


def _method(method: Any):
    """The method ``method`` of the table (:mod:`coredit_video.methods`), which knows its own cost."""
    from .methods import REGISTRY, build_method

    if method not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(REGISTRY)}, got {method!r}")
    return build_method(method)


def __getattr__(name: str):
    """``METHODS`` / ``BLOCK_SCOPE_METHODS``: the table's methods now (a method registered at run time included),
    and those with a block scope."""
    from .methods import REGISTRY

    if name == "METHODS":
        return tuple(REGISTRY)
    if name == "BLOCK_SCOPE_METHODS":
        return tuple(m for m, cls in REGISTRY.items() if cls.supports_block_scope)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_skipped(method: str, hw: Tuple[int, int], skipped: int) -> int:
    """Tokens (``tome``: merged sources; ``coredit_kv``/``todo``: dropped keys) a ``method`` removes per frame
    for a CoReDiT budget of ``skipped`` (the method's ``removed_tokens``)."""
    return _method(method).removed_tokens(hw, skipped)


def kv_only_attention_flops(n: int, keys: int, C: int) -> int:
    """Attention of all ``n`` queries to ``keys`` keys/values: q and out ``4nC^2``, k and v ``4 keys C^2``,
    ``QK^T`` and ``AV`` ``4 n keys C`` FLOPs."""
    return 4 * n * C * C + 4 * keys * C * C + 4 * n * keys * C


def method_attention_flops(method: str, n: int, kept: int, C: int) -> int:
    """Self-attention of one frame under ``method`` with ``kept`` tokens (keys for a ``kv_only`` method),
    without the method's overhead; dense when ``kept >= n``."""
    kv_only = _method(method).kv_only
    if kept >= n:
        return self_attention_flops(n, C)
    return kv_only_attention_flops(n, kept, C) if kv_only else self_attention_flops(kept, C)


def method_overhead_terms(method: str, hw: Tuple[int, int], skipped: int, C: int,
                          subgrid: Tuple[int, int] = (4, 4), heads: int = 16,
                          scope: str = "attention") -> Dict[str, int]:
    """A method's own work on one frame of ``hw`` tokens with ``skipped`` removed (after
    :func:`method_skipped`), by named term, FLOPs; empty when nothing is skipped (its ``overhead_cost``).
    ``scope="block"`` adds the gather of the block input and the residual (and needs a method with a block
    scope)."""
    m = _method(method)
    _check_scope(scope, method)
    return m.overhead_cost(hw, skipped, C, subgrid[0] * subgrid[1], heads, scope)


def _check_scope(scope: Any, method: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "block" and not _method(method).supports_block_scope:
        block = __getattr__("BLOCK_SCOPE_METHODS")
        raise ValueError(f"method {method!r} has no block scope (no retained set to run the block on); "
                         f"use scope='attention' (--scope attention) or one of {', '.join(block)}")


def cross_view_attention_flops(n: int, C: int, neighbours: int = 2, mode: str = "pairwise") -> int:
    """Cross-view attention of one view's ``n`` queries to ``neighbours`` views' ``n`` tokens each.

    ``pairwise`` (MagicDrive-V2): per neighbour q ``2nC^2`` + kv ``4nC^2`` + ``4n^2C`` + out
    ``2nC^2``, then ``mva_proj`` ``2nC^2``. ``concat``: q ``2nC^2`` + kv ``4(Nn)C^2`` +
    ``4n(Nn)C`` + out ``2nC^2``.
    """
    if neighbours <= 0:
        return 0
    if mode == "pairwise":
        return neighbours * (2 * n * C * C + 4 * n * C * C + 4 * n * n * C + 2 * n * C * C) + 2 * n * C * C
    if mode == "concat":
        m = neighbours * n
        return 2 * n * C * C + 4 * m * C * C + 4 * n * m * C + 2 * n * C * C
    raise ValueError(f"cross_view_mode must be one of {_CROSS_VIEW_MODES}, got {mode!r}")


def pruned_cross_view_attention_flops(n: int, kept: int, C: int, neighbours: int = 2, mode: str = "pairwise",
                                      pruning: str = "kv", fresh: bool = False) -> int:
    """Cross-view attention of one view-frame with ``kept`` of its ``n`` tokens retained (and ``kept`` of each
    neighbour's), as :func:`cross_view_attention_flops` counts the dense one.

    ``kv``: keys and values of the retained tokens only: per neighbour q ``2nC^2`` + kv ``4kC^2`` +
    ``4nkC`` + out ``2nC^2``. ``qkv``: queries too (``n -> k`` in q, attention and the output projection)
    plus the reconstruction ``4nC`` per attention call (per neighbour in ``pairwise``, once in ``concat``).
    ``pairwise`` adds ``mva_proj`` ``2nC^2`` on the summed output. ``fresh``: the retained set is scored anew
    on the cross-view input (``6nC``) instead of reusing the self-attention's. Dense when ``kept >= n``.
    """
    if pruning not in CROSS_VIEW_PRUNING:
        raise ValueError(f"cross-view pruning must be one of {CROSS_VIEW_PRUNING}, got {pruning!r}")
    if pruning == "off" or kept >= n or neighbours <= 0:
        return cross_view_attention_flops(n, C, neighbours, mode)
    nq = kept if pruning == "qkv" else n
    recon = RECONSTRUCTION_FLOPS_PER_TOKEN_CHANNEL * n * C if pruning == "qkv" else 0
    score = SELECTION_FLOPS_PER_TOKEN_CHANNEL * n * C if fresh else 0
    if mode == "pairwise":
        per = 2 * nq * C * C + 4 * kept * C * C + 4 * nq * kept * C + 2 * nq * C * C + recon
        return neighbours * per + 2 * n * C * C + score
    if mode == "concat":
        m = neighbours * kept
        return 2 * nq * C * C + 4 * m * C * C + 4 * nq * m * C + 2 * nq * C * C + recon + score
    raise ValueError(f"cross_view_mode must be one of {_CROSS_VIEW_MODES}, got {mode!r}")


def cross_attention_flops(n: int, L: int, C: int) -> int:
    """Cross-attention of ``n`` queries to ``L`` condition tokens: ``4nC^2 + 4LC^2 + 4nLC``."""
    return 2 * n * C * C + 4 * L * C * C + 4 * n * L * C + 2 * n * C * C


def mlp_flops(n: int, C: int, mlp_ratio: float = 4.0) -> int:
    """Two-layer MLP with hidden ``int(C * mlp_ratio)``: ``4 n C hidden``."""
    return 4 * n * C * int(C * mlp_ratio)


def temporal_self_attention_flops(n: int, T: int, C: int) -> int:
    """Temporal attention, per frame: ``8nC^2 + 4nTC`` (each of ``n`` columns costs
    ``8TC^2 + 4T^2C`` over all ``T`` frames)."""
    return 8 * n * C * C + 4 * n * T * C


# ---------------------------------------------------------------------------------- validation
def _check_positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_stride(stride: Any) -> None:
    if stride is not None and (not _is_int(stride) or stride < 1):
        raise ValueError(f"stride (m) must be an int >= 1 or None, got {stride!r}")


def _check_frame(hw: Any, bands: Any) -> Tuple[int, int]:
    H, W = parse_hw(hw, "hw_tokens")
    _check_positive_int("bands", bands)
    if H % bands:
        raise ValueError(
            f"bands={bands} does not divide the token height H={H}; pass pad_h_to_bands=True "
            f"(CLI --pad-h-to-bands; pads H to {_ceil_div(H, bands) * bands} as MagicDrive-V2 does for SP) "
            f"or choose a bands value dividing {H}"
        )
    return H, W


def _ratio_list(ratios: Any, count: int) -> List[float]:
    if ratios is None:
        return [0.0] * count
    if isinstance(ratios, dict):
        ratios = read_plan(ratios)
    if isinstance(ratios, Plan):
        ratios = ratios.ratios
    if isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        return [check_ratio(ratios, name="ratios")] * count
    if isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__len__"):
        raise ValueError(f"ratios must be None, a number or a list of {count} numbers, got {ratios!r}")
    ratios = list(ratios)
    if len(ratios) != count:
        raise ValueError(
            f"ratios (the pruning plan) has length {len(ratios)}, expected {count} "
            "(base spatial blocks then control spatial blocks)"
        )
    return [check_ratio(r, name=f"ratios[{i}]") for i, r in enumerate(ratios)]


def _token_grid(spec: ModelSpec, resolution: Any, hw_tokens: Any, bands: int,
                pad_h_to_bands: bool) -> Tuple[Tuple[int, int], Optional[Tuple[int, int]]]:
    """Per-view token grid ``(H, W)`` of a latent frame (padded to ``bands`` if asked), and the pixel resolution
    it came from (None when given in tokens)."""
    if hw_tokens is not None:
        H, W = parse_hw(hw_tokens, "hw_tokens")
        if pad_h_to_bands:
            H = _ceil_div(H, bands) * bands
        res_px = None
    else:
        if resolution is None:
            raise ValueError("resolution: give a pixel resolution or hw_tokens")
        res_px = parse_hw(resolution, "resolution")
        H, W = tokens_for_resolution(spec, res_px, bands, pad_h_to_bands)
    return _check_frame((H, W), bands), res_px


def _token_frames(spec: ModelSpec, frames: Any, latent_frames: Any) -> Tuple[int, Optional[int]]:
    """Token frames ``T``, and the video frames they came from (None when ``latent_frames`` is given)."""
    if latent_frames is not None:
        _check_positive_int("latent_frames", latent_frames)
        return latent_frames, None
    return latent_frames_for(spec, frames), frames


def _check_pruning(cross_view: Any, cross_view_select: Any, method: Any, scope: Any) -> None:
    """Refuse a cross-view mode, method or scope the count (and ``apply``) does not know or cannot combine."""
    if cross_view not in CROSS_VIEW_PRUNING:
        raise ValueError(f"cross_view must be one of {CROSS_VIEW_PRUNING}, got {cross_view!r}")
    if cross_view_select not in ("self", "fresh"):
        raise ValueError(f"cross_view_select must be 'self' or 'fresh', got {cross_view_select!r}")
    _method(method)  # an unknown method raises, listing the table
    _check_scope(scope, method)
    if scope == "attention" and cross_view != "off" and not _method(method).supports_cross_view:
        raise ValueError(f"cross_view={cross_view!r} is not supported with method={method!r} (it keeps no "
                         "retained set to prune cross-view with); use cross_view='off' (--cross-view off)")
    if scope == "block" and cross_view_select != "self":
        raise ValueError("cross_view_select='fresh' has no meaning with scope='block' (one selection per block, "
                         "from its input); use cross_view_select='self' (--cross-view-select self)")


# ---------------------------------------------------------------------------------------- count
@dataclass(frozen=True)
class FlopsQuery:
    """The settings of one :func:`count_flops` call, validated and normalised (see its arguments).

    ``hw`` is the per-view token grid of a latent frame (tokens, padded), ``resolution`` the pixels it came from
    (None when given in tokens), ``frames`` the video frames (None when ``latent_frames`` was given) and
    ``latent_frames`` the token frames ``T``; ``ratios`` has one entry per prunable block, ``grids`` is parsed.
    """

    spec: ModelSpec
    hw: Tuple[int, int]
    resolution: Optional[Tuple[int, int]]
    frames: Optional[int]
    latent_frames: int
    views: int
    bands: int
    pad_h_to_bands: bool
    stride: Optional[int]
    ratios: Tuple[float, ...]
    cross_view: str
    cross_view_select: str
    method: str
    scope: str
    grids: Tuple[GridSpec, ...]

    @classmethod
    def from_args(cls, spec: Union[str, ModelSpec], resolution: Any, frames: Any, views: Any, ratios: Any,
                  bands: Any, *, hw_tokens: Any, latent_frames: Any, pad_h_to_bands: bool, stride: Any,
                  cross_view: Any, cross_view_select: Any, method: Any, scope: Any, grids: Any) -> FlopsQuery:
        """Validate :func:`count_flops`' arguments, in this order (the first bad one raises)."""
        spec = get_spec(spec)
        views = spec.views if views is None else views
        _check_positive_int("views", views)
        _check_positive_int("bands", bands)
        hw, res_px = _token_grid(spec, resolution, hw_tokens, bands, pad_h_to_bands)
        T, frames_in = _token_frames(spec, frames, latent_frames)
        plan = _ratio_list(ratios, spec.prunable_blocks)
        _check_pruning(cross_view, cross_view_select, method, scope)
        parsed = parse_grids(DEFAULT_GRIDS if grids is None else grids)
        _check_stride(stride)
        return cls(spec, hw, res_px, frames_in, T, views, bands, bool(pad_h_to_bands), stride, tuple(plan),
                   cross_view, cross_view_select, method, scope, tuple(parsed))

    @property
    def tokens(self) -> int:
        """Tokens ``n = H * W`` of one view's latent frame."""
        return self.hw[0] * self.hw[1]

    @property
    def frame_views(self) -> int:
        """Frame-view items ``T * V``: every per-frame-per-view term is multiplied by this."""
        return self.latent_frames * self.views

    @property
    def neighbours(self) -> int:
        """Views each view's cross-view attention reads (at most the other views)."""
        return min(self.spec.cross_view_neighbours, self.views - 1)

    def has_cross_view(self, ordinal: int) -> bool:
        """Whether prunable block ``ordinal`` has a (non-empty) cross-view attention."""
        return (ordinal < self.spec.depth or self.spec.control_cross_view) and self.neighbours > 0

    def subgrid(self, ordinal: int) -> Tuple[int, int]:
        """Sub-grid ``(sh, sw)`` of prunable block ``ordinal`` (``grids[ordinal % len]``)."""
        return self.grids[ordinal % len(self.grids)][1]


class _FrameCosts(NamedTuple):
    """Dense FLOPs of each module of one block on one frame of one view."""

    self_attention: int
    cross_view: int
    cross_attention: int
    mlp: int
    temporal_self_attention: int


def _frame_costs(q: FlopsQuery) -> _FrameCosts:
    spec, n, C = q.spec, q.tokens, q.spec.hidden
    return _FrameCosts(
        self_attention=self_attention_flops(n, C),
        cross_view=cross_view_attention_flops(n, C, q.neighbours, spec.cross_view_mode),
        cross_attention=cross_attention_flops(n, spec.cond_tokens, C),
        mlp=mlp_flops(n, C, spec.mlp_ratio),
        temporal_self_attention=temporal_self_attention_flops(n, q.latent_frames, C),
    )


def _other_flops(q: FlopsQuery) -> int:
    """FLOPs of the modules outside the blocks (embedders, control projections, final layer), whole forward."""
    spec, n, C, fv = q.spec, q.tokens, q.spec.hidden, q.frame_views
    pt = spec.patch[0] * spec.patch[1] * spec.patch[2]
    proj = 2 * n * C * C  # one C x C linear over a frame's tokens
    other = 2 * n * (spec.in_channels + spec.layout_channels) * pt * C * fv  # x_embedder (+ view-layout embedder)
    other += 2 * n * C * pt * spec.out_channels * fv  # final layer
    if spec.control_depth:
        if spec.x_control_embedder:
            other += 2 * n * spec.in_channels * pt * C * fv  # x_control_embedder
        other += 2 * n * C * pt * C * q.latent_frames  # map-control patchifier (once per frame, shared by views)
        other += proj * fv  # before_proj
        n_after = spec.control_depth * (2 if spec.control_temporal else 1)
        other += n_after * proj * fv  # after_proj of every control block
    other += 2 * spec.cond_tokens * (spec.caption_channels * C + C * C)  # caption embedder (once per sample)
    other += 2 * C * 6 * C  # t_block
    return other


def _dense_kinds(q: FlopsQuery, costs: _FrameCosts) -> Dict[str, int]:
    """Dense FLOPs of the whole forward by kind (:data:`KINDS` order)."""
    spec, fv = q.spec, q.frame_views
    n_temporal = (spec.depth if spec.temporal else 0) + (spec.control_depth if spec.control_temporal else 0)
    n_cross_view = spec.depth + (spec.control_depth if spec.control_cross_view else 0)
    dense = dict.fromkeys(KINDS, 0)
    dense["spatial_self_attention"] = spec.prunable_blocks * costs.self_attention * fv
    dense["cross_view_attention"] = n_cross_view * costs.cross_view * fv
    dense["cross_attention"] = spec.prunable_blocks * costs.cross_attention * fv
    dense["mlp"] = spec.prunable_blocks * costs.mlp * fv
    dense["temporal_self_attention"] = n_temporal * costs.temporal_self_attention * fv
    dense["temporal_cross_attention"] = n_temporal * costs.cross_attention * fv
    dense["temporal_mlp"] = n_temporal * costs.mlp * fv
    dense["other"] = _other_flops(q)
    return dense


@dataclass(frozen=True)
class _BlockCount:
    """One prunable block under the query's method, per frame of one view: token counts, FLOPs of each module
    (pruned; ``cross_view_dense`` dense) and the method's own work by named term (FLOPs)."""

    ratio: float
    budget: int
    skipped: int
    kept: int
    terms: Dict[str, int]
    self_attention: int
    cross_view_dense: int
    cross_view: int
    cross_attention: int
    mlp: int


_CROSS_VIEW_TERM = "cross_view_"
"""Prefix of the overhead terms booked to the cross-view attention (the rest go to the self-attention)."""


def _cross_view_terms(q: FlopsQuery, ordinal: int, skipped: int) -> Dict[str, int]:
    """Attention scope: the work cross-view pruning adds to block ``ordinal`` per frame and view (FLOPs)."""
    if not (q.has_cross_view(ordinal) and skipped and q.cross_view != "off"):
        return {}
    n, C = q.tokens, q.spec.hidden
    calls = q.neighbours if q.spec.cross_view_mode == "pairwise" else 1
    terms = {}
    if q.cross_view_select == "fresh":
        terms[_CROSS_VIEW_TERM + "scoring"] = scoring_flops(n, C)
    if q.cross_view == "qkv":
        terms[_CROSS_VIEW_TERM + "reconstruction"] = calls * reconstruction_flops(n, C)
    return terms


def _count_block(q: FlopsQuery, costs: _FrameCosts, ordinal: int, ratio: float) -> _BlockCount:
    """Prunable block ``ordinal`` at ``ratio`` under the query's method and scope (FLOPs per frame and view)."""
    spec, n, C = q.spec, q.tokens, q.spec.hidden
    budget = sum(skip_budgets(q.hw, ratio, q.bands, q.stride, ordinal))
    skipped = method_skipped(q.method, q.hw, budget)
    kept = n - skipped
    cv_dense = costs.cross_view if q.has_cross_view(ordinal) else 0
    terms = method_overhead_terms(q.method, q.hw, skipped, C, q.subgrid(ordinal), spec.num_heads, q.scope)
    attention = method_attention_flops(q.method, n, kept, C)
    if q.scope == "block" and skipped:  # the whole block runs on the kept tokens
        cv = cross_view_attention_flops(kept, C, q.neighbours, spec.cross_view_mode) if cv_dense else 0
        ca, mlp = cross_attention_flops(kept, spec.cond_tokens, C), mlp_flops(kept, C, spec.mlp_ratio)
    else:
        cv = pruned_cross_view_attention_flops(n, kept, C, q.neighbours, spec.cross_view_mode, q.cross_view,
                                               q.cross_view_select == "fresh") if cv_dense else 0
        ca, mlp = costs.cross_attention, costs.mlp
        terms.update(_cross_view_terms(q, ordinal, skipped))
    self_attention = attention + sum(v for k, v in terms.items() if not k.startswith(_CROSS_VIEW_TERM))
    return _BlockCount(ratio, budget, skipped, kept, terms, self_attention, cv_dense, cv, ca, mlp)


def _pruned_kinds(q: FlopsQuery, dense: Dict[str, int], costs: _FrameCosts,
                  blocks: Sequence[_BlockCount]) -> Dict[str, int]:
    """Pruned FLOPs of the whole forward by kind: ``dense`` with the prunable blocks' modules replaced."""
    fv = q.frame_views
    pruned = dict(dense)
    pruned["spatial_self_attention"] = sum(b.self_attention * fv for b in blocks)
    pruned["cross_view_attention"] = sum(b.cross_view * fv for b in blocks)
    pruned["cross_attention"] -= sum((costs.cross_attention - b.cross_attention) * fv for b in blocks)
    pruned["mlp"] -= sum((costs.mlp - b.mlp) * fv for b in blocks)
    return pruned


def _overhead_terms(q: FlopsQuery, blocks: Sequence[_BlockCount]) -> Dict[str, int]:
    """The method's own work over the whole forward by named term (first-seen order), FLOPs."""
    total: Dict[str, int] = {}
    for b in blocks:
        for key, v in b.terms.items():
            total[key] = total.get(key, 0) + v * q.frame_views
    return total


def _block_json(q: FlopsQuery, costs: _FrameCosts, ordinal: int, name: str, b: _BlockCount) -> Dict[str, Any]:
    """The result's entry of prunable block ``ordinal``: tokens per frame, FLOPs over the whole forward."""
    fv, sa = q.frame_views, costs.self_attention
    return {
        "block": ordinal,
        "name": name,
        "ratio": b.ratio,
        "budget_per_frame": b.budget,
        "skipped_per_frame": b.skipped,
        "kept_per_frame": b.kept,
        "dense": sa * fv,
        "pruned": b.self_attention * fv,
        "reduction": (sa - b.self_attention) / sa,
        "overhead": sum(b.terms.values()) * fv,
        "cross_view_dense": b.cross_view_dense * fv,
        "cross_view_pruned": b.cross_view * fv,
        "block_dense": (sa + b.cross_view_dense + costs.cross_attention + costs.mlp) * fv,
        "block_pruned": (b.self_attention + b.cross_view + b.cross_attention + b.mlp) * fv,
    }


def _inputs_json(q: FlopsQuery) -> Dict[str, Any]:
    """The result's echo of the (normalised) query."""
    return {
        "spec": asdict(q.spec),
        "resolution": list(q.resolution) if q.resolution is not None else None,
        "hw_tokens": list(q.hw),
        "tokens_per_frame": q.tokens,
        "frames": q.frames,
        "latent_frames": q.latent_frames,
        "views": q.views,
        "bands": q.bands,
        "pad_h_to_bands": q.pad_h_to_bands,
        "stride": q.stride,
        "ratios": list(q.ratios),
        "mean_ratio": sum(q.ratios) / len(q.ratios) if q.ratios else 0.0,
        "cross_view": q.cross_view,
        "cross_view_select": q.cross_view_select,
        "method": q.method,
        "scope": q.scope,
        "grids": grids_json(q.grids),
    }


def _kind_json(dense: int, pruned: int) -> Dict[str, Any]:
    return {"dense": dense, "pruned": pruned, "saved": dense - pruned,
            "reduction": (dense - pruned) / dense if dense else 0.0}


def _report(q: FlopsQuery, costs: _FrameCosts, blocks: Sequence[_BlockCount]) -> Dict[str, Any]:
    """:func:`count_flops`' result (see its Returns) from the query and its prunable blocks' counts."""
    dense = _dense_kinds(q, costs)
    pruned = _pruned_kinds(q, dense, costs, blocks)
    kinds = {k: _kind_json(dense[k], pruned[k]) for k in KINDS}
    dense_total, pruned_total = sum(dense.values()), sum(pruned.values())
    sa_dense, sa_pruned = dense["spatial_self_attention"], pruned["spatial_self_attention"]
    overhead = sum(sum(b.terms.values()) * q.frame_views for b in blocks)
    return {
        "units": "FLOPs per forward pass of one sample (all views, all latent frames); multiply-add = 2",
        "inputs": _inputs_json(q),
        "method": q.method,
        "scope": q.scope,
        "kinds": kinds,
        "dense_total": dense_total,
        "pruned_total": pruned_total,
        "saved_total": dense_total - pruned_total,
        "overhead_flops": overhead,
        "overhead_terms": _overhead_terms(q, blocks),
        "self_attention_dense": sa_dense,
        "self_attention_pruned": sa_pruned,
        "self_attention_reduction": (sa_dense - sa_pruned) / sa_dense if sa_dense else 0.0,
        "cross_view_reduction": kinds["cross_view_attention"]["reduction"],
        "total_reduction": (dense_total - pruned_total) / dense_total,
        "blocks": [_block_json(q, costs, ordinal, name, b)
                   for ordinal, (name, b) in enumerate(zip(q.spec.block_names(), blocks))],
    }


def count_flops(
    spec: Union[str, ModelSpec] = "magicdrive-v2-xl",
    resolution: Union[str, Sequence[int], None] = DEFAULT_RESOLUTION,
    frames: int = DEFAULT_FRAMES,
    views: Optional[int] = None,
    ratios: Union[None, float, Sequence[float], Dict[str, Any]] = None,
    bands: int = 1,
    *,
    hw_tokens: Union[str, Sequence[int], None] = None,
    latent_frames: Optional[int] = None,
    pad_h_to_bands: bool = False,
    stride: Optional[int] = 3,
    cross_view: str = "off",
    cross_view_select: str = "self",
    method: str = DEFAULT_METHOD,
    scope: str = "attention",
    grids: Optional[Sequence[Any]] = None,
) -> Dict[str, Any]:
    """FLOPs of one forward pass of one sample (all views, all latent frames), dense and pruned.

    Args:
        spec: a :class:`ModelSpec` or a preset name (see ``PRESETS``).
        resolution: ``(H_px, W_px)`` or ``"HxW"`` in pixels; ignored when ``hw_tokens`` is given.
        frames: video frames; ``T = 1 + (frames - 1) // 4`` latent frames. Ignored when
            ``latent_frames`` is given.
        views: camera views (default ``spec.views``).
        ratios: pruning ratio per prunable block (base spatial blocks ``0..depth-1`` then control
            spatial blocks ``0..control_depth-1``), a float for a uniform plan, a plan
            (:func:`coredit_video.plan.read_plan`, or its dict), or None (dense). Each in ``[0, 1)``.
            A plan's ``bands`` and ``stride`` are not taken from it here: pass them (``tools/flops.py
            --plan`` does).
        bands: row bands per frame; budgets are ``floor(r * band_tokens)`` per band.
        hw_tokens: per-view token grid ``(H, W)`` of a latent frame, instead of ``resolution``.
        latent_frames: token frames ``T``, instead of ``frames``.
        pad_h_to_bands: pad the token height up to a multiple of ``bands`` (MagicDrive-V2 pads for
            its SP size: 53 -> 56 with 8 bands). Without it a non-dividing ``bands`` is an error.
        stride: m-stride retention ``m`` (forced tokens cap ``K``); None for no forced tokens.
        cross_view: prune the cross-view attention of each block with its ratio too: ``"off"``, ``"kv"`` or
            ``"qkv"`` (see :func:`pruned_cross_view_attention_flops`).
        cross_view_select: ``"self"`` (reuse the self-attention's retained set) or ``"fresh"`` (score anew).
        method: the token-reduction method whose work is counted (:data:`METHODS`; see the module docstring).
            ``todo`` and ``tome`` have no retained set for cross-view pruning: with ``cross_view`` other than
            ``"off"`` (attention scope) they raise.
        scope: ``"attention"`` (prune the self-attention, and cross-view with ``cross_view``) or ``"block"``
            (the whole prunable spatial block runs on the retained tokens; :data:`BLOCK_SCOPE_METHODS` only;
            cross-view is then always on the retained tokens and ``cross_view_select`` must be ``"self"``).
        grids: ``(grid, subgrid)`` per block as ``PruneConfig.grids`` (block ``l`` uses ``grids[l % len]``);
            only the sub-grid size matters (the candidates of ``coredit_copy``/``sharp``/``merge``). Default
            :data:`DEFAULT_GRIDS`.

    Returns:
        A JSON-serialisable dict: ``units``; ``inputs``; ``method``; ``scope``; ``kinds`` ``{kind: {dense,
        pruned, saved, reduction}}`` over ``KINDS``; ``dense_total``, ``pruned_total``, ``saved_total``,
        ``overhead_flops`` (the method's own work over the whole forward, included in ``pruned_total``),
        ``overhead_terms`` (it by named term) (FLOPs);
        ``self_attention_reduction``, ``cross_view_reduction`` and ``total_reduction`` (fractions saved,
        ``(dense - pruned) / dense``, positive = saved, net of the overhead); ``blocks``, one entry per
        prunable block. All FLOPs are ints; ``kinds`` sum to the totals exactly.
    """
    q = FlopsQuery.from_args(spec, resolution, frames, views, ratios, bands, hw_tokens=hw_tokens,
                             latent_frames=latent_frames, pad_h_to_bands=pad_h_to_bands, stride=stride,
                             cross_view=cross_view, cross_view_select=cross_view_select, method=method,
                             scope=scope, grids=grids)
    costs = _frame_costs(q)
    return _report(q, costs, [_count_block(q, costs, ordinal, r) for ordinal, r in enumerate(q.ratios)])


def flops_saved_fraction(
    spec: Union[str, ModelSpec],
    hw_tokens: Union[str, Sequence[int]],
    latent_frames: int,
    views: Optional[int] = None,
    ratios: Union[None, float, Sequence[float], Dict[str, Any]] = None,
    bands: int = 1,
    which: str = "total",
    stride: Optional[int] = 3,
    cross_view: str = "off",
    method: str = DEFAULT_METHOD,
    scope: str = "attention",
) -> float:
    """Fraction of FLOPs saved by ``ratios`` for a batch item shaped like the training input.

    ``hw_tokens`` is the (padded) per-view token grid of a latent frame and ``latent_frames`` the
    token frames ``T`` (both read off the model input, not pixels). ``which`` is ``"total"`` (whole
    forward) or ``"self_attention"`` (prunable self-attention only). Positive = saved. For a
    running "FLOPs saved so far" use ``count_flops(...)["saved_total"]`` per step.
    """
    if which not in ("total", "self_attention"):
        raise ValueError(f"which must be 'total' or 'self_attention', got {which!r}")
    res = count_flops(
        spec, None, views=views, ratios=ratios, bands=bands, hw_tokens=hw_tokens,
        latent_frames=latent_frames, stride=stride, cross_view=cross_view, method=method, scope=scope,
    )
    return float(res["total_reduction" if which == "total" else "self_attention_reduction"])


def with_overrides(spec: Union[str, ModelSpec], **changes: Any) -> ModelSpec:
    """A copy of ``spec`` (or a preset) with fields replaced, validated."""
    return replace(get_spec(spec), **changes)
