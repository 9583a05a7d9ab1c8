"""Pixel grids: a CRS, an affine transform and a shape, as one hashable value.

Every raster and every patch in the pipeline is described by a :class:`PixelGrid`.  Grids are
compared and combined as values (``grid.window_in(other)``, ``grid.crop(...)``) so that the
geometry code never needs an open file.  Transforms use rasterio's coefficient order
``(a, b, c, d, e, f)``: ``x = a * col + b * row + c`` and ``y = d * col + e * row + f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Transform = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Window:
    """A pixel window ``(row_off, col_off, height, width)`` in a source raster."""

    row_off: int
    col_off: int
    height: int
    width: int

    def to_slices(self) -> tuple[slice, slice]:
        """Row and column slices, for indexing an array shaped ``(..., y, x)``."""
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )

    def to_list(self) -> list[int]:
        """``[row_off, col_off, height, width]``, the order used in plan and view tables."""
        return [self.row_off, self.col_off, self.height, self.width]

    def to_dict(self) -> dict[str, int]:
        return {
            "row_off": self.row_off,
            "col_off": self.col_off,
            "height": self.height,
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Window:
        return cls(int(d["row_off"]), int(d["col_off"]), int(d["height"]), int(d["width"]))


@dataclass(frozen=True)
class PixelGrid:
    """A north-up pixel grid: ``crs`` (e.g. ``"EPSG:32632"``), ``transform`` and ``shape_yx``."""

    crs: str
    transform: Transform
    shape_yx: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", tuple(map(float, self.transform)))
        object.__setattr__(self, "shape_yx", (int(self.shape_yx[0]), int(self.shape_yx[1])))
        if len(self.transform) != 6:
            raise ValueError(f"transform needs 6 coefficients, got {len(self.transform)}")

    # -- basic properties -------------------------------------------------------------------
    @property
    def res(self) -> float:
        """Pixel size in CRS units (grids are square-pixelled and north-up)."""
        return self.transform[0]

    @property
    def origin_xy(self) -> tuple[float, float]:
        """Coordinates of the upper-left corner of the upper-left pixel."""
        return self.transform[2], self.transform[5]

    @property
    def height(self) -> int:
        return self.shape_yx[0]

    @property
    def width(self) -> int:
        return self.shape_yx[1]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the whole grid."""
        a, _, c, _, e, f = self.transform
        x0, x1 = c, c + a * self.width
        y0, y1 = f, f + e * self.height
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    @property
    def is_north_up(self) -> bool:
        return self.transform[1] == 0.0 and self.transform[3] == 0.0 and self.transform[4] < 0

    # -- relations between grids -------------------------------------------------------------
    def lattice_offset(self) -> tuple[float, float]:
        """Origin modulo the pixel size: equal offsets mean a shared pixel lattice."""
        r = self.res
        return math.fmod(self.transform[2], r) % r, math.fmod(self.transform[5], r) % r

    def same_lattice(self, other: PixelGrid, tol: float = 1e-6) -> bool:
        """True when both grids share CRS, pixel size and pixel lattice (no resampling needed)."""
        if self.crs != other.crs or abs(self.res - other.res) > tol:
            return False
        a, b = self.lattice_offset(), other.lattice_offset()
        r = self.res
        return all(min(abs(p - q), r - abs(p - q)) < tol for p, q in zip(a, b))

    def window_in(self, other: PixelGrid) -> Window:
        """The pixel window of this grid inside ``other`` (same lattice required)."""
        if not self.same_lattice(other):
            raise ValueError(f"grids are not on one pixel lattice: {self} vs {other}")
        col = round((self.transform[2] - other.transform[2]) / other.res)
        row = round((other.transform[5] - self.transform[5]) / other.res)
        return Window(row, col, self.height, self.width)

    def crop(self, window: Window) -> PixelGrid:
        """The sub-grid covered by ``window`` (which may reach outside this grid)."""
        a, b, c, d, e, f = self.transform
        return PixelGrid(
            self.crs,
            (a, b, c + a * window.col_off, d, e, f + e * window.row_off),
            (window.height, window.width),
        )

    def contains_window(self, window: Window) -> bool:
        return (
            window.row_off >= 0
            and window.col_off >= 0
            and window.row_off + window.height <= self.height
            and window.col_off + window.width <= self.width
        )

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs, "transform": list(self.transform), "shape_yx": list(self.shape_yx)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PixelGrid:
        return cls(str(d["crs"]), tuple(d["transform"]), tuple(d["shape_yx"]))  # type: ignore[arg-type]
