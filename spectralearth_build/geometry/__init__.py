"""Pure-geometry planning: overlap graph, n-tuple search and patch placement.

Everything here works on :class:`~spectralearth_build.records.TileRecord` footprints alone (no
pixel I/O) and imports neither rasterio, dask, zarr nor torch.  Entry point:
:func:`plan_patches`; the stages are also available on their own (:func:`build_overlap_graph`,
:func:`find_tuples`).
"""

from __future__ import annotations

from .graph import build_overlap_graph
from .planner import PlanResult, plan_patches
from .tiles import PlanningError, TileSet
from .tuples import NTuple, find_tuples

__all__ = [
    "PlanResult",
    "PlanningError",
    "NTuple",
    "TileSet",
    "build_overlap_graph",
    "find_tuples",
    "plan_patches",
]
