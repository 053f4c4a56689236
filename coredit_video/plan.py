"""Pruning plans: the JSON a fine-tuning run exports and inference applies. One reader, one writer.

A plan holds every prunable block's ratio (plan order) and the whole layout those ratios were found
with: the ``(grid, subgrid)`` pair of each block, the stride ``m``, the row ``bands``, the late-step
factor ``c`` and ``late_steps``, and the cap ``max_ratio``. A plan applied with another layout would
select other tokens, so applying one either takes its layout or names every setting that disagrees
(:meth:`Plan.conflicts`).

Version 2 writes each grid as ``{"grid": [gh, gw], "subgrid": [sh, sw]}``. Still read: version 1
plans (``[[gh, gw], [sh, sw]]`` per grid) and a bare JSON list of ratios (no layout).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .ops.partition import as_pair
from .ops.selection import check_ratio

PLAN_VERSION = 2
LAYOUT_KEYS = ("grids", "stride", "bands", "late_factor", "late_steps")
"""Settings a plan fixes; ``cv.apply(model, {"plan": path})`` takes each one the config does not set."""

GridSpec = Tuple[Tuple[int, int], Tuple[int, int]]


def parse_grid(entry: Any, where: str) -> GridSpec:
    """``{"grid": (gh, gw), "subgrid": (sh, sw)}`` or ``((gh, gw), (sh, sw))`` -> ``((gh, gw), (sh, sw))``.

    In the mapping form a side may be one int (``{"grid": 8, "subgrid": 4}`` is 8x8 and 4x4). The tuple
    form must spell both pairs: ``(8, 4)`` reads as two grids as easily as a grid and its sub-grid.
    """
    if isinstance(entry, Mapping):
        if set(entry) != {"grid", "subgrid"}:
            raise ValueError(f"{where} must have exactly the keys 'grid' and 'subgrid', got {entry!r}")
        grid, sub = entry["grid"], entry["subgrid"]
    else:
        try:
            grid, sub = entry
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be {{'grid': (gh, gw), 'subgrid': (sh, sw)}}, got {entry!r}") from None
        if isinstance(grid, int) or isinstance(sub, int):
            raise ValueError(
                f"{where}={entry!r} is ambiguous (two grids, or a grid and its sub-grid?); write "
                f"{{'grid': ({grid}, {grid}), 'subgrid': ({sub}, {sub})}} or (({grid}, {grid}), ({sub}, {sub}))"
            )
    g, s = as_pair(grid, f"{where} grid"), as_pair(sub, f"{where} subgrid")
    if s[0] > g[0] or s[1] > g[1]:
        raise ValueError(f"{where}: sub-grid {s} is larger than its grid {g}")
    return g, s


def parse_grids(entries: Any, where: str = "grids") -> List[GridSpec]:
    """A list of :func:`parse_grid` entries; block ``l`` uses entry ``l % len``."""
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence) or not entries:
        raise ValueError(f"{where} must list at least one {{'grid': ..., 'subgrid': ...}} entry, got {entries!r}")
    return [parse_grid(e, f"{where}[{k}]") for k, e in enumerate(entries)]


def grids_json(specs: Sequence[GridSpec]) -> List[Dict[str, List[int]]]:
    """The version-2 JSON form of grid specs."""
    return [{"grid": list(g), "subgrid": list(s)} for g, s in specs]


@dataclass(frozen=True)
class Plan:
    """A read plan. ``layout`` holds only the :data:`LAYOUT_KEYS` the file stores (grids parsed)."""

    ratios: List[float]
    blocks: Optional[List[str]] = None
    layout: Dict[str, Any] = field(default_factory=dict)
    max_ratio: Optional[float] = None
    source: str = "plan"

    def conflicts(self, settings: Mapping[str, Any]) -> List[str]:
        """``"key: plan X, config Y"`` for each layout setting in ``settings`` that differs from the plan's."""
        out = []
        for key in LAYOUT_KEYS:
            if key not in self.layout or settings.get(key) is None:
                continue
            mine, theirs = self.layout[key], settings[key]
            if key == "grids":
                theirs = parse_grids(theirs)
            same = math.isclose(mine, theirs) if key == "late_factor" else mine == theirs
            if not same:
                out.append(f"{key}: plan {_show(mine)}, config {_show(theirs)}")
        return out


def _show(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return json.dumps(grids_json(value))
    return repr(value)


def _int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key} must be an int, got {value!r}")
    return value


def read_plan(source: Union[str, Mapping[str, Any], Sequence[float]]) -> Plan:
    """Read a plan from a JSON path, a dict (``controller.plan()``) or a bare list of ratios; every ratio is
    checked (and against the plan's own ``max_ratio`` when it has one)."""
    where = "plan"
    if isinstance(source, (str, os.PathLike)):
        where = f"plan {os.fspath(source)!r}"
        if not os.path.isfile(source):
            raise FileNotFoundError(f"pruning plan {os.fspath(source)!r} not found; save one with save_plan()")
        with open(source, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not JSON ({e})") from None
    else:
        data = source
    if isinstance(data, Mapping):
        if "ratios" not in data:
            raise ValueError(f"{where} has no 'ratios' key (keys: {sorted(data)})")
        version = data.get("version", 1)
        if version not in (1, PLAN_VERSION):
            raise ValueError(f"{where} has version {version!r}; this coredit_video reads versions 1 and {PLAN_VERSION}")
        ratios = data["ratios"]
    else:
        data, ratios = {}, data
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence):
        raise ValueError(f"{where}: 'ratios' must be a list, got {type(ratios).__name__}")
    cap = data.get("max_ratio")
    if cap is not None:
        check_ratio(cap, name=f"{where} max_ratio")
    ratios = [check_ratio(r, cap, f"{where} ratios[{i}]") for i, r in enumerate(ratios)]
    layout: Dict[str, Any] = {}
    if data.get("grids") is not None:
        layout["grids"] = parse_grids(data["grids"], f"{where} grids")
    for key in ("stride", "bands", "late_steps"):
        if data.get(key) is not None:
            layout[key] = _int(data[key], key, where)
    if data.get("late_factor") is not None:
        layout["late_factor"] = float(data["late_factor"])
    blocks = data.get("blocks")
    if blocks is not None:
        blocks = [str(b) for b in blocks]
        if len(blocks) != len(ratios):
            raise ValueError(f"{where} lists {len(blocks)} blocks but {len(ratios)} ratios")
    return Plan(ratios=ratios, blocks=blocks, layout=layout, max_ratio=cap, source=where)


def write_plan(path: str, plan: Mapping[str, Any]) -> None:
    """Write a plan dict (``controller.plan()``) as JSON, atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=2)
    os.replace(tmp, path)
