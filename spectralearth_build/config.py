"""Build configuration: one frozen value per pipeline stage, loaded from YAML.

``BuildConfig.from_yaml(path)`` reads a file such as ``configs/default.yaml``; keys left out
keep their defaults, unknown keys are an error (a typo must not silently do nothing).  The
config is stored in every output (catalog, plan and dataset attributes) via ``to_dict``.
"""

from __future__ import annotations

import dataclasses
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
    """Open the spectral image and read its last block to detect truncated files."""


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

        if self.compressor not in COMPRESSORS and self.compressor != "deflate":
            raise ConfigError(
                f"extract.compressor {self.compressor!r}: expected one of {COMPRESSORS}"
            )
        if self.resampling not in Resampling.__members__:
            raise ConfigError(f"extract.resampling {self.resampling!r} is not a rasterio method")
        for name in ("max_cloud_fraction", "max_snow_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"extract.{name} must be a fraction in 0..1")
        for name in ("max_unit_tiles", "max_unit_patches", "shard_max_mib"):
            if getattr(self, name) < 1:
                raise ConfigError(f"extract.{name} must be >= 1")
        if self.locations_per_shard < 0:
            raise ConfigError("extract.locations_per_shard must be >= 0 (0 = auto)")


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the dataset: same config + same inputs = same dataset."""

    bands: BandSelection = field(default_factory=BandSelection)
    scan: ScanConfig = field(default_factory=ScanConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings the pipeline cannot carry out."""
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
        try:
            bands = BandSelection.from_dict(d.get("bands") or {})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid 'bands' section: {exc}") from exc
        return cls(
            bands=bands,
            scan=_section(ScanConfig, d.get("scan"), "scan"),
            plan=_section(PlanConfig, d.get("plan"), "plan"),
            extract=_section(ExtractConfig, d.get("extract"), "extract"),
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
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

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


def _section(cls: type[_T], values: dict[str, Any] | None, name: str) -> _T:
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in '{name}': {sorted(unknown)}; known: {sorted(fields)}")
    converted = {}
    for key, value in values.items():
        default = fields[key].default
        try:
            converted[key] = type(default)(value) if default is not dataclasses.MISSING else value
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"'{name}.{key}' = {value!r}: {exc}") from exc
    return cls(**converted)
