"""The tile record: what planning needs to know about one usable product.

Records are built from catalog rows (:func:`spectralearth_build.catalog.tile_records`) and are
the only input of the geometry code, which therefore never opens a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from .grid import PixelGrid


@dataclass(frozen=True)
class TileRecord:
    """One acquisition tile: identity, time, pixel grid, valid and clear-sky footprints.

    Footprints are in ``grid.crs``.  ``clear`` is the area where a patch passes the extraction
    cloud and snow checks (:mod:`spectralearth_build.enmap.footprint`), a subset of
    ``footprint``; None means unknown (every valid pixel counts as clear).
    """

    tile_id: str
    """Canonical product id (``ENMAP01-____L2A-DT..._V..._...Z``)."""
    datatake: int
    tile: int
    start_time: datetime
    grid: PixelGrid
    footprint: Polygon
    clear: BaseGeometry | None = None

    @property
    def crs(self) -> str:
        return self.grid.crs

    @property
    def planning_footprint(self) -> BaseGeometry:
        """Where patches may be placed: the clear-sky footprint when known, else the valid one."""
        return self.footprint if self.clear is None else self.clear

    def to_dict(self) -> dict[str, Any]:
        return {
            "tile_id": self.tile_id,
            "datatake": self.datatake,
            "tile": self.tile,
            "start_time": self.start_time.isoformat(),
            "grid": self.grid.to_dict(),
            "footprint": shapely.to_wkt(self.footprint, rounding_precision=-1),
            "clear": None
            if self.clear is None
            else shapely.to_wkt(self.clear, rounding_precision=-1),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TileRecord:
        return cls(
            str(d["tile_id"]),
            int(d["datatake"]),
            int(d["tile"]),
            datetime.fromisoformat(d["start_time"]),
            PixelGrid.from_dict(d["grid"]),
            shapely.from_wkt(d["footprint"]),
            None if d.get("clear") is None else shapely.from_wkt(d["clear"]),
        )
