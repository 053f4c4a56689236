"""Plugin configuration, validated once at the edge (``PruneConfig.build``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

from .methods import DEFAULT_METHOD
from .ops.selection import check_ratio
from .plan import GridSpec, Plan, parse_grids, read_plan

_HIDDEN = ("grid_specs", "resolved_plan")
CROSS_VIEW_MODES = ("off", "kv", "qkv")
CROSS_VIEW_SELECT = ("self", "fresh")
SCOPES = ("attention", "block")


@dataclass
class PruneConfig:
    """How CoReDiT prunes a host.

    adapter: registered host adapter name, or ``"auto"`` to pick the one that recognises the model.
    ratios: one ratio for every prunable block, or a list in plan order.
    plan: path of a pruning plan JSON (``controller.save_plan``); its ratios replace ``ratios``, and each
        layout setting (``grids``, ``stride``, ``bands``, ``late_factor``, ``late_steps``) and ``max_ratio``
        the config does not set is taken from the plan; one the config sets differently is an error.
    max_ratio: per-block cap (MagicDrive-V2 recipe 0.5); the one cap, the progressive schedule follows it.
    late_factor: ``c``; the last ``late_steps`` denoising steps use ``c * r_l``.
    grids: per-block ``{"grid": (gh, gw), "subgrid": (sh, sw)}`` (or ``((gh, gw), (sh, sw))``); block ``l``
        uses ``grids[l % len]``.
    stride: ``m`` of the m-stride retention; must not exceed any sub-grid side.
    bands: row bands per frame; ``None`` means the host's sequence-parallel size (1 without SP).
    blocks: which block groups of the host to prune (adapter's default when ``None``).
    backend: attention backend, ``auto | sdpa | flash | xformers | math``.
    cross_view: also prune the base blocks' cross-view attention: ``"off"``, ``"kv"`` (neighbours' keys and
        values on their retained tokens) or ``"qkv"`` (queries too, skipped outputs reconstructed); same
        per-block ratio and late-step decay as the block's self-attention.
    cross_view_select: the retained set cross-view uses: ``"self"`` (the one the block's self-attention
        chose; no second scoring) or ``"fresh"`` (a new score of the cross-view input).
    method: the token-reduction method (:mod:`coredit_video.methods`): ``coredit`` (the paper's rules), a rule
        beyond the paper (``coredit_copy``, ``coredit_sharp``, ``coredit_merge``, ``coredit_kv``), or a baseline of
        the quality study at the same budget (``random``, ``no_reconstruction``, ``tome``, ``todo``).
    scope: ``"attention"`` (the paper: only the self-attention of a prunable block is reduced) or ``"block"`` (the
        whole spatial block runs on the retained tokens, the skipped ones get a rebuilt residual; see
        :mod:`coredit_video.block_scope`; cross-view attention is then on the retained tokens whatever
        ``cross_view`` says).
    temperature: softmax temperature of ``coredit_sharp``'s weights (cosine similarity / temperature).
    step_cache: block scope only: a skipped token takes its own block residual from the last step that computed
        it (:mod:`coredit_video.step_cache`) instead of one rebuilt from its neighbours; the m-stride pattern
        shifts each step and the stalest tokens are computed first.
    max_stale: with ``step_cache``, no token goes more than this many steps without being computed (``None``: no
        cap beyond the m-stride rotation, which computes every token at least every ``stride`` steps).
    dense_steps: the first this many denoising steps run dense (``set_step``), with or without the cache.
    cache_select: with ``step_cache``, what decides among equally stale tokens: ``"change"`` (default: the token
        whose block input moved least since it was computed skips first; caches the inputs too), ``"coherence"``
        (CoReDiT's score: the most coherent skips), ``"staleness"`` (token order) or ``"random"``. Measured at r 0.5,
        30 steps, 4 held-out scenes: 50.3 / 46.6 / 44.4 / 49.4 dB (``docs/quality.md``, "Step cache").
    cache_form: with ``step_cache``, what a block caches per token: ``"residual"`` (its block residual) or
        ``"gated"`` (ToCa's form: the self-attention and MLP branches before their adaLN gates, re-gated with the
        current step's gates, and the rest of the residual; the adapter must know the gates).
    cache_context: with ``step_cache``: what the computed tokens' attention sees. ``"retained"``: the computed
        tokens only, as the block runs on them. ``"self"``: in self-attention every token (the skipped ones' keys
        and values come from their self-attention inputs cached when they were last computed); cross-view attention
        stays on the computed tokens. ``"all"``: every token in self- and cross-view attention (the neighbour views'
        skipped tokens from their cached cross-view inputs). ``"self"`` and ``"all"`` need ``dense_steps >= 1`` and
        no sequence parallelism.
    """

    adapter: str = "auto"
    ratios: Union[float, List[float]] = 0.0
    plan: Optional[str] = None
    max_ratio: float = 0.5
    late_factor: float = 0.25
    late_steps: int = 4
    grids: Sequence[Any] = ({"grid": (8, 8), "subgrid": (4, 4)}, {"grid": (6, 6), "subgrid": (3, 3)})
    stride: int = 3
    bands: Optional[int] = None
    blocks: Optional[List[str]] = None
    backend: str = "auto"
    cross_view: str = "off"
    cross_view_select: str = "self"
    method: str = DEFAULT_METHOD
    scope: str = "attention"
    temperature: float = 0.05
    step_cache: bool = False
    max_stale: Optional[int] = None
    dense_steps: int = 0
    cache_select: str = "change"
    cache_form: str = "residual"
    cache_context: str = "retained"
    grid_specs: List[GridSpec] = field(default_factory=list, repr=False)
    resolved_plan: Optional[Plan] = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, cfg: Any = None, **overrides) -> PruneConfig:
        """From ``None``, a dict / mmengine ``ConfigDict`` or a ``PruneConfig``; validates everything and
        resolves ``plan`` (see the class doc). A dict sets the keys it has; a ``PruneConfig`` the fields
        that differ from the defaults."""
        if cfg is None:
            data = {}
        elif isinstance(cfg, PruneConfig):
            data = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
                    if f.name not in _HIDDEN and getattr(cfg, f.name) != f.default}
        elif isinstance(cfg, dict):
            data = dict(cfg)
        else:
            raise TypeError(f"pruning config must be a dict or PruneConfig, got {type(cfg).__name__}")
        data.update(overrides)
        valid = {f.name for f in dataclasses.fields(cls)} - set(_HIDDEN)
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown pruning config key(s) {unknown}; valid keys are {sorted(valid)}")
        plan = read_plan(data["plan"]) if data.get("plan") else None
        if plan is not None:
            bad = plan.conflicts(data)
            if bad:
                raise ValueError(
                    f"{plan.source} was made with another layout than the config sets ({'; '.join(bad)}): its ratios "
                    "would select other tokens; drop these keys from the config (the plan's layout is then applied) "
                    "or use a plan made with these settings"
                )
            data.update({k: v for k, v in plan.layout.items() if data.get(k) is None})
            if plan.max_ratio is not None and "max_ratio" not in data:
                data["max_ratio"] = plan.max_ratio
            data["ratios"] = list(plan.ratios)
        out = cls(**data, resolved_plan=plan)
        out.validate()
        return out

    def method_options(self) -> dict:
        """The options of ``method`` this config sets (keyword arguments of its class)."""
        from .methods import REGISTRY

        return {k: getattr(self, k) for k in REGISTRY[self.method].options}

    def validate(self) -> None:
        from .methods import REGISTRY, method_names

        if self.method not in REGISTRY:
            raise ValueError(f"method must be one of {method_names()}, got {self.method!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.scope == "block" and not REGISTRY[self.method].supports_block_scope:
            able = [m for m, cls in REGISTRY.items() if cls.supports_block_scope]
            raise ValueError(f"method {self.method!r} has no block scope (its restoration cannot rebuild a block "
                             f"residual); use scope='attention' or one of {able}")
        if not isinstance(self.step_cache, bool):
            raise ValueError(f"step_cache must be True or False, got {self.step_cache!r}")
        if self.step_cache and self.scope != "block":
            raise ValueError("step_cache caches block residuals: set scope='block' (or step_cache=False)")
        if self.max_stale is not None and (isinstance(self.max_stale, bool) or not isinstance(self.max_stale, int)
                                           or self.max_stale < 1):
            raise ValueError(f"max_stale must be None or an int >= 1 (steps), got {self.max_stale!r}")
        if isinstance(self.dense_steps, bool) or not isinstance(self.dense_steps, int) or self.dense_steps < 0:
            raise ValueError(f"dense_steps must be an int >= 0, got {self.dense_steps!r}")
        from .step_cache import CACHE_CONTEXTS, CACHE_FORMS, CACHE_SELECT

        if self.cache_select not in CACHE_SELECT:
            raise ValueError(f"cache_select must be one of {CACHE_SELECT}, got {self.cache_select!r}")
        if self.cache_form not in CACHE_FORMS:
            raise ValueError(f"cache_form must be one of {CACHE_FORMS}, got {self.cache_form!r}")
        if self.cache_context not in CACHE_CONTEXTS:
            raise ValueError(f"cache_context must be one of {CACHE_CONTEXTS}, got {self.cache_context!r}")
        if self.cache_context != "retained" and not (self.step_cache and self.dense_steps >= 1):
            raise ValueError(f"cache_context={self.cache_context!r} reads the skipped tokens' keys and values from the "
                             "step cache, which a dense step fills: set step_cache=True and dense_steps >= 1 "
                             "(or cache_context='retained')")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")
        check_ratio(self.max_ratio, name="max_ratio")
        if not 0.0 <= self.late_factor <= 1.0:
            raise ValueError(f"late_factor (c) must be in [0, 1], got {self.late_factor}")
        if not isinstance(self.late_steps, int) or self.late_steps < 0:
            raise ValueError(f"late_steps must be an int >= 0, got {self.late_steps!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride (m) must be an int >= 1, got {self.stride!r}")
        if self.cross_view not in CROSS_VIEW_MODES:
            raise ValueError(f"cross_view must be one of {CROSS_VIEW_MODES}, got {self.cross_view!r}")
        if self.cross_view_select not in CROSS_VIEW_SELECT:
            raise ValueError(f"cross_view_select must be one of {CROSS_VIEW_SELECT}, got {self.cross_view_select!r}")
        if self.cross_view != "off" and self.scope == "attention" and not REGISTRY[self.method].supports_cross_view:
            able = [m for m, cls in REGISTRY.items() if cls.supports_cross_view]
            raise ValueError(f"cross_view={self.cross_view!r} prunes with CoReDiT's selection only; set method to one "
                             f"of {able} or cross_view='off' (method {self.method!r} prunes self-attention only)")
        if self.bands is not None and (not isinstance(self.bands, int) or self.bands < 1):
            raise ValueError(f"bands must be None or an int >= 1, got {self.bands!r}")
        specs = parse_grids(self.grids)
        for k, (_, s) in enumerate(specs):
            if self.stride > min(s):
                raise ValueError(
                    f"stride m={self.stride} is larger than the sub-grid {s} of grids[{k}]; "
                    f"use stride <= {min(s)} so every sub-grid keeps a token"
                )
        self.grid_specs = specs
        ratios = [self.ratios] if isinstance(self.ratios, (int, float)) else list(self.ratios)
        for i, r in enumerate(ratios):
            check_ratio(r, self.max_ratio, "ratios" if len(ratios) == 1 else f"ratios[{i}]")
