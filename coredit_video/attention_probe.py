"""The attention-error probe: how far each token-reduction method's spatial self-attention output lies from the
dense one, on the inputs of a dense generation. The front's ``attn_error`` column and
``tools/probe_token_reduction.py`` both measure with it.

    ctrl = coredit_video.apply(model, dataclasses.replace(prune, ratios=0.0, plan=None, cross_view="off"))
    with AttentionErrorProbe(ctrl, ["coredit", "tome"], [0.3, 0.5]) as probe:
        ...  # sample densely with ``ctrl`` applied
    probe.errors()  # {("coredit", 0.3): % of the dense output's energy, ...}

While applied (:meth:`AttentionErrorProbe.apply`) the probe is the instance ``forward`` of every spatial
self-attention module of the controller (``ctrl.modules``). Each call on ``x [F, N, C]`` returns the dense output
``Y = dense_self_attention(attn, x)``, so the generation stays dense and every method sees the same inputs, and
computes for each (name, ratio) a reduced output ``Y_hat [F, N, C]``: a registered method (:mod:`coredit_video.methods`)
through the package's own :func:`~coredit_video.attention.pruned_self_attention`, an extra *mechanism* (a
diagnostic rule a caller passes in) by calling it. The error of a (name, ratio) is ``sum |Y_hat - Y|^2 / sum |Y|^2``
over the measured calls, in %.

Where it is known which rows did not attend themselves (``reduced [F, N]`` bool: a CoReDiT selection's skipped
tokens, nothing for a method that reduces keys and values only, a mechanism's own mask, or a ``reduced_rows`` rule
the caller gives for a registered method) the error is also split into those rows and the rows that attended.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .attention import dense_self_attention, pruned_self_attention
from .methods import CallGeometry, build_method

# mechanism(attn, x [F, N, C], geo) -> (y [F, N, C], reduced [F, N] bool, or None when it does not say)
Mechanism = Callable[[nn.Module, torch.Tensor, CallGeometry], Tuple[torch.Tensor, Optional[torch.Tensor]]]
# rows(x [F, N, C], geo) -> reduced [F, N] bool: the rows a registered method did not attend
RowsRule = Callable[[torch.Tensor, CallGeometry], torch.Tensor]

_ABSENT = object()  # a module had no instance ``forward`` before apply()


@dataclasses.dataclass
class _Sums:
    """One (name, ratio): ``err`` over all rows, ``err_reduced`` over the reduced rows, their counts; ``split``:
    every measured call said which rows were reduced."""

    err: float = 0.0
    err_reduced: float = 0.0
    reduced: int = 0
    rows: int = 0
    split: bool = True


class AttentionErrorProbe:
    """Sums ``|Y_hat - Y|^2`` per (name, ratio) and ``|Y|^2`` over a dense generation's spatial self-attention calls.

    ``ctrl``: the :class:`~coredit_video.controller.PruningController` whose modules the probe attaches to (ratio 0,
    attention scope; ``None``: :meth:`outputs` only). ``methods``: registered method names, built with
    ``temperature``. ``mechanisms``: ``{name: Mechanism}``, extra rules measured beside them (called only on calls
    that reduce something; otherwise their output is the dense one). ``reduced_rows``: ``{method: RowsRule}`` for
    registered methods whose choice does not say which rows were reduced. ``every``: measure every k-th model forward
    (the calls of one forward are ``len(ctrl.modules)`` consecutive calls).
    """

    def __init__(self, ctrl, methods: Sequence[str] = (), ratios: Sequence[float] = (), temperature: float = 0.05,
                 every: int = 1, mechanisms: Optional[Mapping[str, Mechanism]] = None,
                 reduced_rows: Optional[Mapping[str, RowsRule]] = None):
        self.ctrl = ctrl
        self.methods = {m: build_method(m, temperature=temperature) for m in methods}
        self.mechanisms = dict(mechanisms or {})
        clash = sorted(set(self.methods) & set(self.mechanisms))
        if clash:
            raise ValueError(f"{clash}: a mechanism may not take a registered method's name")
        self.reduced_rows = dict(reduced_rows or {})
        self.ratios = [float(r) for r in ratios]
        self.every, self.calls = max(1, int(every)), 0
        self.energy = 0.0
        self.sums = {(n, r): _Sums() for n in self.names for r in self.ratios}
        self._saved: Optional[List[Any]] = None  # each module's instance ``forward`` before apply()
        self._forwards: List[Any] = []

    @property
    def names(self) -> List[str]:
        """The measured names: the registered methods, then the mechanisms."""
        return [*self.methods, *self.mechanisms]

    # ------------------------------------------------------------------ attaching
    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> AttentionErrorProbe:
        """Make the probe the instance ``forward`` of each of ``ctrl.modules``, keeping what was there (the
        controller's patch). Applying again does nothing."""
        if self._saved is not None:
            return self
        modules = self.ctrl.modules
        self._saved = [m.__dict__.get("forward", _ABSENT) for m in modules]
        self._forwards = [_ProbeForward(self, ordinal, attn) for ordinal, attn in enumerate(modules)]
        for attn, fwd in zip(modules, self._forwards):
            attn.__dict__["forward"] = fwd
        return self

    def remove(self) -> bool:
        """Put back each module's ``forward`` from before :meth:`apply`; returns whether the probe was applied.
        A module whose ``forward`` is no longer the probe's (someone replaced or removed it since) is left alone."""
        if self._saved is None:
            return False
        for attn, fwd, old in zip(self.ctrl.modules, self._forwards, self._saved):
            if attn.__dict__.get("forward") is not fwd:
                continue
            if old is _ABSENT:
                del attn.__dict__["forward"]
            else:
                attn.__dict__["forward"] = old
        self._saved, self._forwards = None, []
        return True

    def __enter__(self) -> AttentionErrorProbe:
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ measuring
    def output(self, name: str, attn: nn.Module, x: torch.Tensor, geo: CallGeometry,
               dense: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``name``'s output for ``x [F, N, C]`` in call ``geo``: ``(y_hat [F, N, C], reduced [F, N] bool or
        None)``. ``dense``: the dense output when known (a mechanism's output on a call that reduces nothing)."""
        none = lambda: torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)  # noqa: E731
        method = self.methods.get(name)
        if method is None:
            if not geo.skipped:
                return (dense_self_attention(attn, x) if dense is None else dense), none()
            return self.mechanisms[name](attn, x, geo)
        res = pruned_self_attention(attn, x, geo.hw, geo.ratio, geo.layout, geo.bands, budgets=geo.budgets,
                                    method=method)
        if not geo.skipped or method.kv_only:  # every query attended
            return res.out, none()
        if res.selection is not None:
            reduced = none()
            reduced[torch.arange(x.shape[0], device=x.device).view(-1, 1), res.selection.skip] = True
            return res.out, reduced
        rule = self.reduced_rows.get(name)
        return res.out, rule(x, geo) if rule is not None else None

    def outputs(self, attn: nn.Module, x: torch.Tensor, geo: CallGeometry) -> Dict[str, Tuple[torch.Tensor,
                                                                                             Optional[torch.Tensor]]]:
        """Every name's :meth:`output` for one call: ``{name: (y_hat [F, N, C], reduced [F, N] or None)}``."""
        return {n: self.output(n, attn, x, geo) for n in self.names}

    def __call__(self, ordinal: int, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The patched forward of ``ctrl.modules[ordinal]``: ``x [F, N, C]`` -> the dense ``[F, N, C]``."""
        ctrl = self.ctrl
        y = dense_self_attention(attn, x)
        self.calls += 1
        if ((self.calls - 1) // len(ctrl.modules)) % self.every:
            return y
        self.energy += float(y.float().pow(2).sum())
        geos = [CallGeometry.of(ctrl.context.hw, r, ctrl.layouts[ordinal], ctrl.bands) for r in self.ratios]
        for name in self.names:
            for r, geo in zip(self.ratios, geos):
                y_hat, reduced = self.output(name, attn, x, geo, dense=y)
                self._add(self.sums[(name, r)], (y_hat - y).float().pow(2), reduced)
        return y

    @staticmethod
    def _add(s: _Sums, sq: torch.Tensor, reduced: Optional[torch.Tensor]) -> None:
        s.err += float(sq.sum())  # the total over all elements (the front's attn_error), not the split's sum
        if reduced is None:
            s.split = False
            return
        s.err_reduced += float(sq.sum(-1)[reduced].sum())
        s.reduced += int(reduced.sum())
        s.rows += reduced.numel()

    # ------------------------------------------------------------------ results
    def errors(self) -> Dict[Tuple[str, float], Optional[float]]:
        """``{(name, ratio): error}``, % of the dense output's energy (the front's ``attn_error``); ``None`` where no
        call was measured (a front without probe scenes)."""
        if self.energy <= 0.0:
            return {k: None for k in self.sums}
        return {k: 100.0 * s.err / self.energy for k, s in self.sums.items()}

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per (name, ratio): ``error`` (fraction of the dense energy), ``error_reduced_rows`` /
        ``error_attending_rows`` (its split, adding up to ``error``) and ``reduced_fraction`` (of the rows); the
        last three ``None`` where some measured call did not say which rows were reduced."""
        norm = max(self.energy, 1e-30)
        out = []
        for (name, r), s in self.sums.items():
            split = s.split and s.rows > 0
            out.append(dict(name=name, ratio=r, error=s.err / norm,
                            error_reduced_rows=s.err_reduced / norm if split else None,
                            error_attending_rows=(s.err - s.err_reduced) / norm if split else None,
                            reduced_fraction=s.reduced / s.rows if split else None))
        return out


@dataclasses.dataclass(eq=False)
class _ProbeForward:
    """The instance ``forward`` the probe gives module ``ordinal``: ``x [F, N, C]`` -> dense ``[F, N, C]``."""

    probe: AttentionErrorProbe
    ordinal: int
    attn: nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.ordinal, self.attn, x)


__all__ = ["AttentionErrorProbe", "Mechanism", "RowsRule"]
