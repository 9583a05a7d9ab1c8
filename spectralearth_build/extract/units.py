"""Work units: the plan cut into independent tasks that each own whole Zarr shards.

A unit is a list of patches whose source tiles are read once, together: one task per connected
component of the overlap graph, except that a component with more than ``max_unit_patches``
patches or ``max_unit_tiles`` tiles is cut into balanced pieces along a spatial order (rows of
patches, north to south), so a giant component does not serialise the job and its pieces read
compact row bands of each tile.  Components never share a tile, so grouping several into one
unit would save no read; keeping them apart lets even a small archive use every worker.

Store locations are assigned unit by unit: unit ``u`` owns the slots
``[slot_start, slot_start + n_slots)``, a whole number of shards, so two units never write the
same shard (the slots past its last patch stay empty: nodata fill, no bytes on disk).  Each unit
has a deterministic ``key``: a hash of everything that determines what it writes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..plan import PlannedPatch


@dataclass(frozen=True)
class WorkUnit:
    """One extraction task: ``patches`` in store order, written to slots from ``slot_start``."""

    index: int
    patches: tuple[PlannedPatch, ...]
    slot_start: int
    n_slots: int
    """A multiple of the shard size along the location axis."""

    @property
    def tile_ids(self) -> list[str]:
        """Distinct source tiles, in order of first use."""
        seen: dict[str, None] = {}
        for p in self.patches:
            for v in p.views:
                seen.setdefault(v.tile_id, None)
        return list(seen)

    @property
    def n_views(self) -> int:
        """Planned views of the unit's patches."""
        return sum(p.n_views for p in self.patches)

    def slot(self, position: int) -> int:
        """Store location index of the unit's ``position``-th patch."""
        return self.slot_start + position

    @cached_property
    def key(self) -> str:
        """Hex digest of the unit's inputs (patches, views, slots); computed once."""
        return unit_key(self)

    @property
    def name(self) -> str:
        """``unit-<index>-<key prefix>``: the task key and the marker's file name."""
        return f"unit-{self.index:06d}-{self.key[:16]}"


def _patch_dict(p: PlannedPatch) -> dict[str, Any]:
    return {
        "id": p.patch_id,
        "grid": p.grid.to_dict(),
        "views": [
            [v.tile_id, v.start_time.isoformat(), v.window.to_list(), v.resampled] for v in p.views
        ],
    }


def unit_key(unit: WorkUnit) -> str:
    """SHA-256 (hex) of everything that determines what the unit writes."""
    payload = {
        "patches": [_patch_dict(p) for p in unit.patches],
        "slot_start": unit.slot_start,
        "n_slots": unit.n_slots,
        "extra": {},  # kept so that keys (and resumable builds) stay as they were
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def spatial_key(p: PlannedPatch) -> tuple[str, float, float, int]:
    """Row-major order within a CRS: north to south, then west to east."""
    x0, y0 = p.grid.origin_xy
    return (p.grid.crs, -y0, x0, p.patch_id)


def _tiles(patches: Iterable[PlannedPatch]) -> set[str]:
    return {v.tile_id for p in patches for v in p.views}


def split_component(
    patches: list[PlannedPatch], max_patches: int, max_tiles: int
) -> list[list[PlannedPatch]]:
    """Cut one component into balanced, spatially compact pieces within both limits."""
    ordered = sorted(patches, key=spatial_key)
    n_parts = max(1, math.ceil(len(ordered) / max_patches))
    pieces = _even_cuts(ordered, n_parts)
    out: list[list[PlannedPatch]] = []
    while pieces:
        piece = pieces.pop(0)
        if len(piece) > 1 and len(_tiles(piece)) > max_tiles:
            pieces[:0] = _even_cuts(piece, 2)
        else:
            out.append(piece)
    return out


def _even_cuts(items: list[PlannedPatch], n: int) -> list[list[PlannedPatch]]:
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def make_units(
    patches: list[PlannedPatch],
    locations_per_shard: int,
    max_unit_patches: int = 1024,
    max_unit_tiles: int = 24,
) -> list[WorkUnit]:
    """Group the plan into work units (deterministic: depends only on the plan and limits).

    Components are taken in order of their smallest patch id; each gives one unit, or several
    if it exceeds either limit.
    """
    if locations_per_shard < 1:
        raise ValueError("locations_per_shard must be >= 1")
    by_component: dict[int, list[PlannedPatch]] = {}
    for p in patches:
        by_component.setdefault(p.component, []).append(p)
    components = sorted(by_component.values(), key=lambda ps: min(p.patch_id for p in ps))
    groups = [
        piece
        for comp in components
        for piece in split_component(comp, max_unit_patches, max_unit_tiles)
    ]
    units = []
    slot = 0
    for i, group in enumerate(groups):
        n_slots = math.ceil(len(group) / locations_per_shard) * locations_per_shard
        units.append(WorkUnit(i, tuple(group), slot, n_slots))
        slot += n_slots
    return units


def total_slots(units: list[WorkUnit]) -> int:
    """Slots the units own together (the store's first axis)."""
    return sum(u.n_slots for u in units)
