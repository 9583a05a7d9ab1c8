"""Build configuration: one frozen value per pipeline stage, loaded from YAML.

``BuildConfig.from_yaml(path)`` reads a file such as ``configs/default.yaml``; keys left out
keep their defaults, unknown keys are an error (a typo must not silently do nothing), and every
value must have its key's type (``true`` is not a count, ``32.5`` not a patch size).  Each
section's ``validate`` then checks every key's range; ``from_yaml`` runs it, and so does
``build_dataset`` before it touches the inputs, so a bad value is one ``Error:`` line before a
single product is read.  The config is stored in every output (catalog, plan and dataset
attributes) via ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .bands import BandSelection
from .errors import ConfigError
from .formats import COMPRESSORS

__all__ = ["BuildConfig", "ConfigError", "ExtractConfig", "PlanConfig", "ScanConfig"]


@dataclass(frozen=True)
class ScanConfig:
    """Which products are usable (``status == "ok"``) in the catalog."""

    max_cloud_cover: float = 50.0
    """Products with more cloud + cirrus cover (percent, from METADATA.XML) are ``cloudy``."""
    min_sun_elevation: float = 0.0
    """Products with the sun below this elevation (degrees) are ``night``."""
    footprint_simplify_px: float = 1.5
    """Douglas-Peucker tolerance for the valid-data footprint, in pixels."""
    verify_pixels: bool = True
    """Open the spectral image and read its last block to detect truncated files, and a
    decimated sample of three bands to reject an image with no data where the classes layer
    marks data."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings the scan cannot carry out."""
        _check_range("scan.max_cloud_cover", self.max_cloud_cover, 0.0, 100.0, "a percentage")
        _check_range("scan.min_sun_elevation", self.min_sun_elevation, -90.0, 90.0, "degrees")
        _check_range("scan.footprint_simplify_px", self.footprint_simplify_px, 0.0)
        _check_type("scan.verify_pixels", self.verify_pixels, bool)


@dataclass(frozen=True)
class PlanConfig:
    """Overlap graph, n-tuple search and patch placement (:mod:`spectralearth_build.geometry`)."""

    patch_px: int = 128
    """Patch side in pixels; two tiles overlap usefully if they share at least one patch area."""
    pixel_size_m: float = 30.0
    """Pixel size every tile must have (metres)."""
    min_gap_days: float = 1.0
    """Two tiles form a temporal pair only if their start times are at least this far apart."""
    beam_width: int = 8
    """n-tuples kept per tile and tuple size (the largest), and new members tried per tuple."""
    max_tuple_size: int = 16
    """Largest number of timestamps searched for."""
    max_overlap_fraction: float = 0.0
    """A patch may overlap accepted patches by at most this fraction of its area."""
    include_single: bool = True
    """Also plan single-timestamp patches where only one tile covers the ground."""
    candidate_stride_px: int = 8
    """Spacing of candidate patch positions in pixels (``gcd`` with ``patch_px`` is used); also
    the step of the patch lattice phases the planner chooses from (8 px: as fine as the
    grid-first baseline's offsets)."""
    complete_views: bool = True
    """Add to each placed patch every other compatible tile whose footprint fully covers it."""
    resample_margin_px: float = 1.0
    """Footprints from another UTM zone are shrunk by this many pixels before containment tests."""
    resample_pad_px: int = 2
    """Padding (pixels) of the source window of a resampled view."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings planning cannot carry out."""
        _check_range("plan.patch_px", self.patch_px, 2)
        if self.patch_px % 2:
            raise ConfigError(
                f"plan.patch_px must be an even number of pixels, got {self.patch_px}"
            )
        _check_range("plan.pixel_size_m", self.pixel_size_m, 0.0, low_open=True)
        _check_range("plan.min_gap_days", self.min_gap_days, 0.0)
        _check_range("plan.beam_width", self.beam_width, 1)
        _check_range("plan.max_tuple_size", self.max_tuple_size, 2)
        _check_range(
            "plan.max_overlap_fraction", self.max_overlap_fraction, 0.0, 1.0, high_open=True
        )
        _check_type("plan.include_single", self.include_single, bool)
        _check_range("plan.candidate_stride_px", self.candidate_stride_px, 1)
        _check_type("plan.complete_views", self.complete_views, bool)
        _check_range("plan.resample_margin_px", self.resample_margin_px, 0.0)
        _check_range("plan.resample_pad_px", self.resample_pad_px, 0)


@dataclass(frozen=True)
class ExtractConfig:
    """Pixel checks, store layout and work units (see docs/FORMAT.md)."""

    max_cloud_fraction: float = 0.01
    """A view with more cloud + cloud shadow + haze (fraction of pixels) is dropped."""
    max_snow_fraction: float = 0.10
    """A view with more snow (fraction of pixels) is dropped."""
    resampling: str = "nearest"
    """rasterio resampling method for views from another UTM zone."""
    locations_per_shard: int = 0
    """Locations per Zarr shard (chunks are one location each); 0 = the largest power of two
    whose uncompressed shard fits in ``shard_max_mib``."""
    shard_max_mib: int = 256
    compressor: str = "blosc-lz4"
    """``blosc-lz4`` (lz4 on bit-shuffled int16), ``blosc-zstd`` (zstd on bit-shuffled int16),
    ``zstd``, ``gzip`` or ``none``; the default feeds a GPU best of those measured by
    benchmarks/store_codecs.py (results/store_codecs.json); ``blosc-zstd`` is 12% smaller and
    decodes at about half the speed."""
    compression_level: int = 5
    max_unit_tiles: int = 24
    """Large connected components are split into units reading at most about this many tiles."""
    max_unit_patches: int = 512
    """... and holding at most this many patches."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings extraction cannot carry out."""
        from rasterio.enums import Resampling

        _check_type("extract.compressor", self.compressor, str)
        if self.compressor not in COMPRESSORS and self.compressor != "deflate":
            raise ConfigError(
                f"extract.compressor {self.compressor!r}: expected one of {COMPRESSORS}"
            )
        _check_type("extract.resampling", self.resampling, str)
        if self.resampling not in Resampling.__members__:
            raise ConfigError(
                f"extract.resampling {self.resampling!r} is not a rasterio method "
                f"(one of {sorted(Resampling.__members__)})"
            )
        for name in ("max_cloud_fraction", "max_snow_fraction"):
            _check_range(f"extract.{name}", getattr(self, name), 0.0, 1.0, "a fraction")
        for name in ("max_unit_tiles", "max_unit_patches", "shard_max_mib"):
            _check_range(f"extract.{name}", getattr(self, name), 1)
        _check_range("extract.locations_per_shard", self.locations_per_shard, 0, what="0 = auto")
        low, high = COMPRESSION_LEVELS.get(self.compressor, (None, None))
        if low is not None:
            _check_range(
                "extract.compression_level",
                self.compression_level,
                low,
                high,
                f"for {self.compressor}",
            )
        else:
            _check_type("extract.compression_level", self.compression_level, int)


COMPRESSION_LEVELS: dict[str, tuple[int, int]] = {
    "blosc-lz4": (0, 9),
    "blosc-zstd": (0, 9),
    "zstd": (1, 22),
    "gzip": (0, 9),
    "deflate": (0, 9),
}
"""Levels each compressor accepts (``none`` ignores the level)."""


def _check_type(key: str, value: Any, kind: type) -> None:
    """``value`` must be a ``kind`` (int: not a bool; float: an int or a float, finite)."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{key} = {value!r}: expected {_KIND_NAMES.get(kind, kind.__name__)}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    what: str = "",
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` (of the type of ``low``) must lie in ``[low, high]`` (ends open on request)."""
    kind = type(low if low is not None else high)
    _check_type(key, value, float if kind is float else int)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        rule = " and ".join(x for x in (lo, hi) if x)
        raise ConfigError(f"{key} must be {rule}{f' ({what})' if what else ''}, got {value!r}")


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the dataset: same config + same inputs = same dataset."""

    bands: BandSelection = field(default_factory=BandSelection)
    scan: ScanConfig = field(default_factory=ScanConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings the pipeline cannot carry out.

        Checks every key of every section (types and ranges); it reads no input, so a build
        calls it before scanning.
        """
        b = self.bands
        _check_range("bands.expected_count", b.expected_count, 1)
        for a, z in b.drop_ranges:
            if not 0 <= a <= z < b.expected_count:
                raise ConfigError(
                    f"bands.drop_ranges: {a}..{z} is not a band index range in "
                    f"0..{b.expected_count - 1}"
                )
        if b.count == 0:
            raise ConfigError("bands.drop_ranges drop every band: the band selection is empty")
        self.scan.validate()
        self.plan.validate()
        self.extract.validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "bands": self.bands.to_dict(),
            "scan": dataclasses.asdict(self.scan),
            "plan": dataclasses.asdict(self.plan),
            "extract": dataclasses.asdict(self.extract),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BuildConfig:
        d = dict(d or {})
        unknown = set(d) - {"bands", "scan", "plan", "extract"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {sorted(unknown)}")
        return cls(
            bands=_bands(d.get("bands")),
            scan=_section(ScanConfig, d.get("scan"), "scan", strict=True),
            plan=_section(PlanConfig, d.get("plan"), "plan", strict=True),
            extract=_section(ExtractConfig, d.get("extract"), "extract", strict=True),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> BuildConfig:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections")
        try:
            config = cls.from_dict(data)
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return config

    def replace(self, **sections: Any) -> BuildConfig:
        """A copy with some stage configs replaced or updated from dicts."""
        out = self
        for name, value in sections.items():
            current = getattr(out, name)
            if isinstance(value, dict):
                value = dataclasses.replace(current, **value)
            out = dataclasses.replace(out, **{name: value})
        return out


_T = TypeVar("_T")


def _bands(values: Any) -> BandSelection:
    """The ``bands`` section: known keys only, an integer count and pairs of integers."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"'bands' must be a mapping of keys, got {values!r}")
    values = dict(values or {})
    fields = {f.name for f in dataclasses.fields(BandSelection)}
    unknown = set(values) - fields
    if unknown:
        raise ConfigError(f"unknown key(s) in 'bands': {sorted(unknown)}; known: {sorted(fields)}")
    if "expected_count" in values:
        _check_range("bands.expected_count", values["expected_count"], 1)
    ranges = values.get("drop_ranges", [])
    if not isinstance(ranges, (list, tuple)) or not all(
        isinstance(r, (list, tuple))
        and len(r) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
        for r in ranges
    ):
        raise ConfigError(
            f"bands.drop_ranges = {ranges!r}: expected a list of [first, last] band indices"
        )
    try:
        return BandSelection.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bands.drop_ranges: {exc}") from exc


def _section(cls: type[_T], values: dict[str, Any] | None, name: str, strict: bool = False) -> _T:
    """``cls`` from a section's dict; unknown keys are an error.

    Values are converted to the type of each key's default, or with ``strict`` checked to have
    that type (an integral float is taken as an integer).
    """
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"'{name}' must be a mapping of keys, got {values!r}")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{name}': {sorted(unknown)}; known: {sorted(fields)}")
    converted = {}
    for key, value in values.items():
        default = fields[key].default
        if strict and default is not dataclasses.MISSING:
            converted[key] = _strict_value(f"{name}.{key}", value, type(default))
            continue
        try:
            converted[key] = type(default)(value) if default is not dataclasses.MISSING else value
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"'{name}.{key}' = {value!r}: {exc}") from exc
    return cls(**converted)


def _strict_value(key: str, value: Any, kind: type) -> Any:
    """``value`` checked to be a ``kind`` (an integral float is taken as an integer)."""
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        _check_type(key, value, kind)
    except ConfigError as exc:  # the quoted form that names the key and the value
        raise ConfigError(f"'{key}' = {value!r}: {str(exc).rsplit(': ', 1)[-1]}") from None
    return float(value) if kind is float else value
