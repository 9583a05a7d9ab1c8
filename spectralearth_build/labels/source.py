"""A label product on disk: one raster, a VRT, or a folder of tiles on one pixel lattice.

:func:`resolve_source` reads only metadata (CRS, transform, size, dtype, nodata of every file)
and returns a :class:`LabelSource`, a plain value that travels to the workers.  Tiles of a
folder must share CRS, pixel size, lattice and dtype (as CORINE, CDL and NLCD tiles do), so
a location's window is one rectangle of the common lattice, filled from the tiles it touches.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, error_line
from .presets import PRESETS
from .spec import LabelSpec

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


@dataclass(frozen=True)
class SourceFile:
    """One raster: path, CRS, transform ``(a, b, c, d, e, f)``, ``shape_yx``, dtype, nodata tag."""

    path: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape_yx: tuple[int, int]
    dtype: str
    nodata: float | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "crs": self.crs,
            "transform": list(self.transform),
            "shape_yx": list(self.shape_yx),
            "dtype": self.dtype,
            "nodata": self.nodata,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceFile:
        return cls(
            d["path"],
            d["crs"],
            tuple(float(v) for v in d["transform"]),  # type: ignore[arg-type]
            (int(d["shape_yx"][0]), int(d["shape_yx"][1])),
            d["dtype"],
            d["nodata"],
            int(d["size"]),
        )


@dataclass(frozen=True)
class LabelSource:
    """The files of a label product and the values read as nodata.

    ``files[k]`` sits at ``offsets[k] = (row, col)`` of the common lattice, whose upper-left
    corner is ``origin_xy`` and pixel size ``res`` (CRS units).
    """

    files: tuple[SourceFile, ...]
    crs: str
    res: float
    origin_xy: tuple[float, float]
    offsets: tuple[tuple[int, int], ...]
    dtype: str
    nodata_values: tuple[float, ...]

    @property
    def fill_value(self) -> float:
        """Fill of the stored masks where a location has no label: first nodata, else 0."""
        if self.nodata_values:
            return self.nodata_values[0]
        return math.nan if self.dtype.startswith("float") else 0

    def fingerprint(self) -> str:
        """Hash of the file names, sizes and grids: detects a changed label product."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(repr((Path(f.path).name, f.size, f.transform, f.shape_yx)).encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "crs": self.crs,
            "res": self.res,
            "origin_xy": list(self.origin_xy),
            "offsets": [list(o) for o in self.offsets],
            "dtype": self.dtype,
            "nodata_values": list(self.nodata_values),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSource:
        return cls(
            tuple(SourceFile.from_dict(f) for f in d["files"]),
            d["crs"],
            float(d["res"]),
            (float(d["origin_xy"][0]), float(d["origin_xy"][1])),
            tuple((int(r), int(c)) for r, c in d["offsets"]),
            d["dtype"],
            tuple(float(v) for v in d["nodata_values"]),
        )


def _raster_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
        )
        if files:
            return files
        raise InputError(f"--labels {path}: folder holds no raster ({', '.join(RASTER_SUFFIXES)})")
    raise InputError(f"--labels {path}: no such file or folder")


def _read_meta(path: Path) -> SourceFile:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as f:
            if f.crs is None:
                raise InputError(f"{path}: label raster has no CRS")
            t = f.transform
            if t.b != 0 or t.d != 0 or t.e >= 0 or abs(abs(t.e) - t.a) > 1e-9 * t.a:
                raise InputError(f"{path}: label raster must be north-up with square pixels")
            _read_last_block(f, path)
            return SourceFile(
                str(path.resolve()),
                f.crs.to_string(),
                (t.a, t.b, t.c, t.d, t.e, t.f),
                (f.height, f.width),
                f.dtypes[0],
                None if f.nodata is None else float(f.nodata),
                path.stat().st_size,
            )
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({exc})") from None


def _read_last_block(f: Any, path: Path) -> None:
    """Decode the raster's last block: a truncated file keeps its header but loses its tail."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    bh, bw = f.block_shapes[0]
    r0, c0 = (f.height - 1) // bh * bh, (f.width - 1) // bw * bw
    try:
        f.read(1, window=Window(c0, r0, f.width - c0, f.height - r0))
    except (RasterioError, OSError) as exc:
        raise InputError(f"{path}: truncated or corrupt label raster ({error_line(exc)})") from None


def nodata_values(spec: LabelSpec, files: tuple[SourceFile, ...]) -> tuple[float, ...]:
    """Values read as nodata: the option's, else the preset default and the file's tag.

    CDL files may tag 0 as nodata, but 0 is CDL background (a class of the mask, ignored by
    the task), so the CDL preset ignores that tag.
    """
    if spec.nodata is not None:
        return (float(spec.nodata),)
    values: list[float] = []
    preset = PRESETS.get(spec.preset) if spec.preset else None
    if preset is not None and preset.nodata is not None:
        values.append(float(preset.nodata))
    tag = files[0].nodata
    if tag is not None and not (spec.preset == "cdl" and tag == 0) and tag not in values:
        values.append(tag)
    return tuple(values)


def resolve_source(spec: LabelSpec) -> LabelSource:
    """Read the metadata of ``spec.path`` and check the files form one lattice."""
    files = tuple(_read_meta(p) for p in _raster_files(Path(spec.path)))
    first = files[0]
    res = first.transform[0]
    for f in files[1:]:
        if f.crs != first.crs or abs(f.transform[0] - res) > 1e-9 * res or f.dtype != first.dtype:
            raise InputError(
                f"--labels {spec.name}: {f.path} differs from {first.path} in CRS, pixel size or "
                "dtype; tiles of one label product must share them"
            )
    x0 = min(f.transform[2] for f in files)
    y0 = max(f.transform[5] for f in files)
    offsets = []
    for f in files:
        col = (f.transform[2] - x0) / res
        row = (y0 - f.transform[5]) / res
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise InputError(
                f"--labels {spec.name}: {f.path} is not on the pixel lattice of {first.path}"
            )
        offsets.append((round(row), round(col)))
    if spec.kind == "categorical" and first.dtype.startswith("float"):
        raise InputError(
            f"--labels {spec.name}: categorical labels need an integer raster, got {first.dtype}"
        )
    return LabelSource(
        files, first.crs, res, (x0, y0), tuple(offsets), first.dtype, nodata_values(spec, files)
    )
