"""Reading source tiles: a small protocol, a rasterio implementation and an in-memory fake.

Extraction only needs four things from a tile: its pixel grid, its identity (datatake, tile,
processor version), a windowed read of some bands of the spectral image, and a windowed read of
a quality layer.  :class:`TileReader` names them; :class:`EnmapReader` serves them from real
products (through :class:`~spectralearth_build.enmap.product.EnmapProduct`, opening files only
inside each call so the reader pickles to Dask workers), and :class:`MemoryReader` from numpy
arrays, so the pipeline is testable without writing 224-band GeoTIFFs.  Both count their reads
(``reads``), which lets tests check that each tile is read once per work unit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..formats import NODATA
from ..grid import PixelGrid, Window

__all__ = ["NODATA", "QUALITY_FLAGS", "TileInfo", "TileReader", "EnmapReader", "MemoryReader"]

QUALITY_FLAGS = ("CLOUD", "CLOUDSHADOW", "HAZE", "SNOW")


@dataclass(frozen=True)
class TileInfo:
    """Identity of a source tile, as recorded in the dataset's view table."""

    tile_id: str
    datatake: int
    tile: int
    processor_version: str


class TileReader(Protocol):
    """What extraction reads from source tiles (arrays are ``(c, y, x)`` / ``(y, x)``)."""

    def grid(self, tile_id: str) -> PixelGrid: ...

    def info(self, tile_id: str) -> TileInfo: ...

    def read_image(self, tile_id: str, window: Window, band_indices: np.ndarray) -> np.ndarray:
        """int16 ``(c, y, x)`` of the 0-based ``band_indices`` inside ``window``."""
        ...

    def read_layer(self, tile_id: str, name: str, window: Window) -> np.ndarray | None:
        """uint8 ``(y, x)`` of quality layer ``name`` (``"CLOUD"``...); None if there is none."""
        ...

    def subset(self, tile_ids: set[str]) -> TileReader:
        """A reader for only these tiles (what a work unit ships to a worker)."""
        ...


class EnmapReader:
    """Reads EnMAP L2A products from their :class:`ProductSource` (folders, ZIPs, tar.gz)."""

    def __init__(self, sources: dict[str, Any], grids: dict[str, PixelGrid] | None = None):
        self.sources = dict(sources)
        self._grids = dict(grids or {})
        self.reads: Counter[tuple[str, str]] = Counter()

    @classmethod
    def from_catalog(cls, catalog: Any) -> EnmapReader:
        """Reader for the catalog's usable (``status == "ok"``) products."""
        from ..catalog import source_from_json

        ok = catalog[catalog["status"] == "ok"]
        sources = {r.product_id: source_from_json(r.source) for r in ok.itertuples(index=False)}
        grids = {
            r.product_id: PixelGrid(r.crs, tuple(r.transform), (int(r.height), int(r.width)))  # type: ignore[arg-type]
            for r in ok.itertuples(index=False)
        }
        return cls(sources, grids)

    def subset(self, tile_ids: set[str]) -> EnmapReader:
        return EnmapReader(
            {t: s for t, s in self.sources.items() if t in tile_ids},
            {t: g for t, g in self._grids.items() if t in tile_ids},
        )

    def _product(self, tile_id: str) -> Any:
        from ..enmap.product import EnmapProduct

        try:
            return EnmapProduct(self.sources[tile_id])
        except KeyError:
            raise KeyError(f"tile {tile_id} is not in this reader") from None

    def grid(self, tile_id: str) -> PixelGrid:
        if tile_id not in self._grids:
            self._grids[tile_id] = self._product(tile_id).grid
        return self._grids[tile_id]

    def info(self, tile_id: str) -> TileInfo:
        name = self.sources[tile_id].name
        return TileInfo(tile_id, name.datatake, name.tile, name.processor_version)

    def read_image(self, tile_id: str, window: Window, band_indices: np.ndarray) -> np.ndarray:
        self.reads[(tile_id, "IMAGE")] += 1
        return self._product(tile_id).read_image(window, band_indices)

    def read_layer(self, tile_id: str, name: str, window: Window) -> np.ndarray | None:
        product = self._product(tile_id)
        if not product.has_layer(name):
            return None
        self.reads[(tile_id, name)] += 1
        return product.read_layer(name, window)


@dataclass
class MemoryTile:
    """A tile held in memory: ``image`` is ``(bands, y, x)`` int16 on ``grid``."""

    info: TileInfo
    grid: PixelGrid
    image: np.ndarray
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    fail: str | None = None
    """If set, every image read raises ProductError with this reason (a corrupt file)."""


class MemoryReader:
    """In-memory fake :class:`TileReader` for tests."""

    def __init__(self, tiles: dict[str, MemoryTile], reads: Counter[tuple[str, str]] | None = None):
        self.tiles = dict(tiles)
        self.reads: Counter[tuple[str, str]] = Counter() if reads is None else reads

    def subset(self, tile_ids: set[str]) -> MemoryReader:
        """Subset sharing this reader's ``reads`` counter (when used in the same process)."""
        return MemoryReader({t: v for t, v in self.tiles.items() if t in tile_ids}, self.reads)

    def grid(self, tile_id: str) -> PixelGrid:
        return self.tiles[tile_id].grid

    def info(self, tile_id: str) -> TileInfo:
        return self.tiles[tile_id].info

    def read_image(self, tile_id: str, window: Window, band_indices: np.ndarray) -> np.ndarray:
        tile = self.tiles[tile_id]
        self.reads[(tile_id, "IMAGE")] += 1
        if tile.fail:
            from ..errors import ProductError

            raise ProductError(tile_id, "image read failed", tile.fail)
        _check_inside(tile.grid, window, tile_id)
        rows, cols = window.to_slices()
        return tile.image[np.asarray(band_indices)][:, rows, cols].copy()

    def read_layer(self, tile_id: str, name: str, window: Window) -> np.ndarray | None:
        tile = self.tiles[tile_id]
        if name not in tile.layers:
            return None
        self.reads[(tile_id, name)] += 1
        _check_inside(tile.grid, window, tile_id)
        rows, cols = window.to_slices()
        return tile.layers[name][rows, cols].copy()


def _check_inside(grid: PixelGrid, window: Window, tile_id: str) -> None:
    if not grid.contains_window(window):
        raise ValueError(f"{tile_id}: window {window} is outside the {grid.shape_yx} raster")
