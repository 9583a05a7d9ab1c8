"""Reading one EnMAP L2A product: metadata, grid, spectral image, quality layers, footprint.

:class:`EnmapProduct` wraps a :class:`~.discovery.ProductSource` and opens files only inside
its methods (no handle is kept), so products can be pickled to Dask workers.  Pixel arrays are
``int16`` reflectance x 10000 shaped ``(c, y, x)``; quality layers are ``uint8`` shaped ``(y, x)``.
Problems with the product raise :class:`ProductError` naming the product and the reason.
"""

from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow
from shapely.geometry import MultiPolygon, Polygon

from ..bands import BandSelection
from ..errors import ProductError, error_line
from ..formats import NODATA
from ..grid import PixelGrid, Window
from .discovery import IMAGE, METADATA, FileTooLargeError, ProductSource
from .footprint import clear_footprint, clip_to_valid, snow_blocked, valid_footprint
from .metadata import MetadataError, ProductMetadata, parse_metadata

# Reading a .tar.gz through /vsitar/ makes GDAL save a seek index beside the archive
# (``x.tar.gz.properties``) unless told not to: scanning must never write into the input folder.
os.environ.setdefault("CPL_VSIL_GZIP_WRITE_PROPERTIES", "NO")

MAX_RASTER_PX = 20_000
"""Largest side of a product raster (EnMAP tiles are about 1,300 px): a crafted header cannot
make the footprint read allocate more than a few hundred MB."""
VALID_SAMPLE_PX = 256
"""Samples per side of the decimated read that checks the image has data (:meth:`check`)."""
CLASS_LAND, CLASS_WATER, CLASS_BACKGROUND = 1, 2, 3
CLEAR_SKY_FLAGS = (("CLOUD", 1), ("CLOUDSHADOW", 1), ("HAZE", 1), ("CIRRUS", 2))
"""Quality layers removed from the clear-sky area, and the level from which a pixel counts
(``CIRRUS`` grades 1 thin, 2 medium, 3 thick)."""


def _rio_window(window: Window | None) -> RioWindow | None:
    if window is None:
        return None
    return RioWindow(window.col_off, window.row_off, window.width, window.height)


class EnmapProduct:
    """Lazy access to one product's files."""

    def __init__(self, source: ProductSource):
        self.source = source

    @property
    def product_id(self) -> str:
        return self.source.product_id

    def __repr__(self) -> str:
        return f"EnmapProduct({self.source.location!r})"

    # -- metadata -----------------------------------------------------------------------------
    @cached_property
    def metadata(self) -> ProductMetadata:
        if not self.source.has(METADATA):
            raise ProductError(self.source.location, "metadata missing", "no METADATA.XML file")
        try:
            data = self.source.read_bytes(METADATA)
        except FileTooLargeError as exc:
            raise ProductError(self.source.location, "metadata too large", str(exc)) from exc
        except (OSError, KeyError, EOFError) as exc:
            raise ProductError(self.source.location, "metadata unreadable", str(exc)) from exc
        try:
            return parse_metadata(data, self.source.location)
        except MetadataError as exc:
            raise ProductError(self.source.location, "metadata malformed", str(exc)) from exc

    # -- spectral image -----------------------------------------------------------------------
    def _open(self, suffix: str) -> rasterio.DatasetReader:
        try:
            path = self.source.gdal_path(suffix)
        except FileNotFoundError as exc:
            raise ProductError(self.source.location, f"{suffix.lower()} missing", str(exc)) from exc
        try:
            return rasterio.open(path)
        except (RasterioError, OSError) as exc:
            if not self.source.containers and os.path.isfile(path) and os.path.getsize(path) == 0:
                raise ProductError(self.source.location, "zero-byte file", path) from exc
            raise ProductError(
                self.source.location, f"{suffix.lower()} unreadable", str(exc).splitlines()[0]
            ) from exc

    @cached_property
    def grid(self) -> PixelGrid:
        """Pixel grid of the spectral image (CRS from the file, checked against the metadata)."""
        with self._open(IMAGE) as src:
            if src.crs is None:
                raise ProductError(self.source.location, "no CRS", "spectral image has no CRS")
            epsg = src.crs.to_epsg()
            if epsg is None:
                raise ProductError(self.source.location, "unknown CRS", src.crs.to_string()[:120])
            if max(src.height, src.width) > MAX_RASTER_PX:
                raise ProductError(
                    self.source.location,
                    "raster too large",
                    f"{src.height} x {src.width} px (at most {MAX_RASTER_PX} per side)",
                )
            t = src.transform
            if t.b != 0 or t.d != 0 or t.e >= 0:
                raise ProductError(self.source.location, "not north-up", str(tuple(t)[:6]))
            return PixelGrid(f"EPSG:{epsg}", tuple(t)[:6], (src.height, src.width))  # type: ignore[arg-type]

    def check(self, bands: BandSelection, verify_pixels: bool = True) -> PixelGrid:
        """Validate the image against the metadata and the band selection; return its grid.

        With ``verify_pixels`` the last block of the image is decoded, which catches truncated
        files whose header is intact, and a decimated sample is checked to hold data where the
        classes layer says so (:meth:`check_valid_data`).
        """
        meta = self.metadata
        loc = self.source.location
        with self._open(IMAGE) as src:
            # Decode the last block first: a truncated file can keep a readable header while
            # losing its tail (and with it the GeoTIFF keys), which would read as "no CRS".
            if verify_pixels:
                try:
                    last = list(src.block_windows(src.count))[-1][1]
                    src.read(src.count, window=last)
                except (RasterioError, OSError) as exc:
                    raise ProductError(
                        loc, "truncated or corrupt image", str(exc).splitlines()[0]
                    ) from exc
            if src.count != meta.band_count:
                raise ProductError(
                    loc,
                    "wrong band count",
                    f"image has {src.count} bands, metadata {meta.band_count}",
                )
            if src.count != bands.expected_count:
                raise ProductError(
                    loc, "wrong band count", f"{src.count} bands, expected {bands.expected_count}"
                )
            if src.dtypes[0] != "int16":
                raise ProductError(loc, "wrong data type", f"{src.dtypes[0]}, expected int16")
        grid = self.grid
        try:
            meta_epsg = meta.epsg
        except ValueError as exc:
            raise ProductError(loc, "unknown CRS", str(exc)) from exc
        if grid.crs != f"EPSG:{meta_epsg}":
            raise ProductError(loc, "CRS mismatch", f"image {grid.crs}, metadata {meta.projection}")
        self.check_layers(grid)
        if verify_pixels:
            self.check_valid_data(grid, bands)
        return grid

    def check_valid_data(self, grid: PixelGrid, bands: BandSelection) -> None:
        """Raise ``no valid pixels`` if the image is nodata wherever the classes layer has data.

        The footprint comes from QL_QUALITY_CLASSES, so an image that lost its pixels (all
        -32768) behind an intact classes layer would pass the scan and have every view dropped
        at extraction.  A decimated read (about :data:`VALID_SAMPLE_PX` samples per side, the
        same nearest-neighbour positions in both files) of three kept bands and of the classes
        layer decides: the product is rejected only if some sampled pixel is marked as data and
        none of them has a value in any of the three bands, so a product whose data falls
        between the samples is left to the footprint and extraction as before.
        """
        if not self.has_layer("CLASSES"):
            return  # the footprint then comes from the image itself
        from rasterio.enums import Resampling

        step = max(1, -(-max(grid.height, grid.width) // VALID_SAMPLE_PX))
        out_shape = (-(-grid.height // step), -(-grid.width // step))
        kept = bands.kept_indices
        sample = sorted({int(kept[0]), int(kept[len(kept) // 2]), int(kept[-1])})
        try:
            with self._open("QL_QUALITY_CLASSES") as src:
                marked = src.read(1, out_shape=out_shape, resampling=Resampling.nearest)
            marked = marked != CLASS_BACKGROUND
            if not marked.any():
                return  # the footprint reports it
            with self._open(IMAGE) as src:
                image = src.read(
                    [b + 1 for b in sample],
                    out_shape=(len(sample), *out_shape),
                    resampling=Resampling.nearest,
                )
        except (RasterioError, OSError) as exc:
            raise ProductError(
                self.source.location, "truncated or corrupt image", error_line(exc)
            ) from exc
        if not (image[:, marked] != NODATA).any():
            raise ProductError(
                self.source.location,
                "no valid pixels",
                f"spectral image is nodata at all {int(marked.sum())} sampled pixels that "
                f"QL_QUALITY_CLASSES marks as data (bands {', '.join(str(b + 1) for b in sample)}, "
                f"every {step} px)",
            )

    def check_layers(self, grid: PixelGrid) -> None:
        """Check that every quality layer lies on the image's pixel grid.

        Extraction reads the layers with the image's windows, so a layer of another size or
        position would flag the wrong pixels: it is a ProductError.
        """
        for suffix, _ in self.source.files:
            if not suffix.startswith("QL_QUALITY_"):
                continue
            with self._open(suffix) as src:
                shape, t = (src.height, src.width), tuple(src.transform)[:6]
            if shape != grid.shape_yx or not np.allclose(t, grid.transform, rtol=0, atol=1e-6):
                raise ProductError(
                    self.source.location,
                    "quality layer size mismatch",
                    f"{suffix} is {shape[0]} x {shape[1]} px, image {grid.height} x {grid.width}"
                    if shape != grid.shape_yx
                    else f"{suffix} transform {t}, image {tuple(grid.transform)}",
                )

    def read_image(
        self, window: Window | None = None, band_indices: np.ndarray | None = None
    ) -> np.ndarray:
        """Spectral image ``(c, y, x)`` int16, bands in file order (0-based ``band_indices``)."""
        with self._open(IMAGE) as src:
            idx = None if band_indices is None else [int(i) + 1 for i in band_indices]
            try:
                return src.read(indexes=idx, window=_rio_window(window), boundless=False)
            except (RasterioError, OSError) as exc:
                raise ProductError(
                    self.source.location, "image read failed", str(exc).splitlines()[0]
                ) from exc

    @property
    def wavelengths(self) -> np.ndarray:
        """Band centre wavelengths (nm) in file order, from the product's own metadata."""
        return np.asarray(self.metadata.wavelengths, dtype=np.float64)

    @property
    def fwhm(self) -> np.ndarray:
        return np.asarray(self.metadata.fwhm, dtype=np.float64)

    def read_selected(
        self, bands: BandSelection, window: Window | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The selected bands ``(c, y, x)`` int16 and their wavelengths (nm), in file order."""
        if self.metadata.band_count != bands.expected_count:
            raise ProductError(
                self.source.location,
                "wrong band count",
                f"metadata lists {self.metadata.band_count} bands, expected {bands.expected_count}",
            )
        idx = bands.kept_indices
        return self.read_image(window, idx), self.wavelengths[idx]

    # -- quality layers -----------------------------------------------------------------------
    def has_layer(self, name: str) -> bool:
        return self.source.has(f"QL_QUALITY_{name}")

    def read_layer(self, name: str, window: Window | None = None) -> np.ndarray:
        """Quality layer ``name`` (``"CLASSES"``, ``"CLOUD"``, ...) as uint8 ``(y, x)``."""
        with self._open(f"QL_QUALITY_{name}") as src:
            try:
                return src.read(1, window=_rio_window(window))
            except (RasterioError, OSError) as exc:
                raise ProductError(
                    self.source.location,
                    f"quality layer {name} unreadable",
                    str(exc).splitlines()[0],
                ) from exc

    def quality_mask(
        self, name: str, window: Window | None = None, min_level: int = 1
    ) -> np.ndarray:
        """Bool ``(y, x)`` of pixels flagged in ``QL_QUALITY_<name>``.

        ``CLOUD``, ``CLOUDSHADOW``, ``HAZE`` and ``SNOW`` flag with 1; ``CIRRUS`` grades 1 thin,
        2 medium, 3 thick, so ``min_level`` selects from which grade on a pixel counts.
        """
        return self.read_layer(name, window) >= min_level

    def valid_mask(self, window: Window | None = None) -> np.ndarray:
        """Bool ``(y, x)``: not background in QL_QUALITY_CLASSES, else image band 1 != nodata.

        Real CLASSES layers also hold 0 (unclassified) inside the swath; those pixels carry data.
        """
        if self.has_layer("CLASSES"):
            return self.read_layer("CLASSES", window) != CLASS_BACKGROUND
        return self.read_image(window, np.array([0]))[0] != NODATA

    def _valid_and_transform(self) -> tuple[np.ndarray, tuple[float, ...]]:
        if self.has_layer("CLASSES"):
            with self._open("QL_QUALITY_CLASSES") as src:
                classes = src.read(1)
                transform = tuple(src.transform)[:6]
            return classes != CLASS_BACKGROUND, transform
        return self.valid_mask(), self.grid.transform

    def footprint(self, simplify_px: float = 1.5) -> Polygon:
        """Valid-data footprint in the product's CRS (see :mod:`.footprint`)."""
        mask, transform = self._valid_and_transform()
        poly = valid_footprint(mask, transform, simplify_px)
        if poly is None:
            raise ProductError(self.source.location, "no valid pixels")
        return poly

    def footprints(
        self, patch_px: int, max_snow_fraction: float, simplify_px: float = 1.5
    ) -> tuple[Polygon, MultiPolygon]:
        """Valid-data and clear-sky footprints in the product's CRS (see :mod:`.footprint`).

        Args:
            patch_px: patch side (pixels) the snow window rule is evaluated for.
            max_snow_fraction: largest snow fraction of a patch that extraction accepts.
            simplify_px: erosion and simplification tolerance, pixels.

        Returns:
            ``(valid, clear)``: the valid footprint (a polygon) and the clear-sky area (a
            MultiPolygon with holes, empty when no patch-sized clear region exists).  Quality
            layers the product lacks count as unflagged.
        """
        valid, transform = self._valid_and_transform()
        poly = valid_footprint(valid, transform, simplify_px)
        if poly is None:
            raise ProductError(self.source.location, "no valid pixels")
        clear = valid.copy()
        for name, level in (*CLEAR_SKY_FLAGS, ("SNOW", 1)):
            if not self.has_layer(name):
                continue
            flagged = self.quality_mask(name, min_level=level)
            if flagged.shape != valid.shape:
                raise ProductError(
                    self.source.location,
                    f"quality layer {name} has the wrong shape",
                    f"{flagged.shape}, expected {valid.shape}",
                )
            if name == "SNOW":
                flagged = snow_blocked(flagged, patch_px, max_snow_fraction)
            clear &= ~flagged
        clear_fp = clear_footprint(clear, transform, patch_px, simplify_px)
        return poly, clip_to_valid(clear_fp, poly, patch_px * abs(transform[0]))
