"""Size presets of the synthetic archive generator.

``tiny`` is for tests (a few seconds, swaths of 112 px), ``demo`` for the README quickstart
(swaths of 320 px: 128-px patches with 2 to 7 timestamps exist), ``full`` has the real tile
size (1000-px swaths in rasters of about 1200 px).  Any field can be overridden by keyword.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..bands import L2A_BAND_COUNT


class SynthError(ValueError):
    """Invalid synthetic-archive parameters."""


@dataclass(frozen=True)
class SynthParams:
    """Sizes and counts of a synthetic archive."""

    tile_px: int
    """Swath width and tile length along track, in 30-m pixels."""
    n_bands: int = L2A_BAND_COUNT
    """Spectral bands per product (an evenly spaced subset of the 224 real ones if fewer)."""
    tiles_per_datatake: int = 2
    """Consecutive tiles along track in each datatake."""
    revisits_eu: int = 8
    """Acquisition dates over the European site (at least 7: the special cases need them)."""
    revisits_us: int = 4
    """Acquisition dates over the US site (at least 3)."""
    landscape_scale: float = 1.0
    """Factor on the land-cover map's lengths (units, fields, sections; 0.05..4).  Below 1 a
    small patch holds several classes; 1.0 is left out of :meth:`to_dict`, so archives made
    with the default keep their manifest."""

    def __post_init__(self) -> None:
        if not 48 <= self.tile_px <= 2000:
            raise SynthError(f"tile_px must be within 48..2000, got {self.tile_px}")
        if not 1 <= self.n_bands <= L2A_BAND_COUNT:
            raise SynthError(f"n_bands must be within 1..{L2A_BAND_COUNT}, got {self.n_bands}")
        if not 1 <= self.tiles_per_datatake <= 20:
            raise SynthError(
                f"tiles_per_datatake must be within 1..20, got {self.tiles_per_datatake}"
            )
        if not 7 <= self.revisits_eu <= 40:
            raise SynthError(f"revisits_eu must be within 7..40, got {self.revisits_eu}")
        if not 3 <= self.revisits_us <= 40:
            raise SynthError(f"revisits_us must be within 3..40, got {self.revisits_us}")
        if not 0.05 <= self.landscape_scale <= 4.0:
            raise SynthError(f"landscape_scale must be within 0.05..4, got {self.landscape_scale}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["landscape_scale"] == 1.0:
            del d["landscape_scale"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthParams:
        return cls(**{k: _cast(k, v) for k, v in d.items()})


def _cast(name: str, value: Any) -> Any:
    """A parameter's value as its type: ``landscape_scale`` is a float, the others ints."""
    return float(value) if name == "landscape_scale" else int(value)


PRESETS: dict[str, SynthParams] = {
    "tiny": SynthParams(tile_px=112, tiles_per_datatake=2, revisits_eu=8, revisits_us=4),
    "demo": SynthParams(tile_px=320, tiles_per_datatake=2, revisits_eu=8, revisits_us=5),
    "full": SynthParams(tile_px=1000, tiles_per_datatake=3, revisits_eu=10, revisits_us=6),
}


def resolve_params(preset: str, **overrides: Any) -> SynthParams:
    """The preset's parameters with ``overrides`` (None values are ignored) applied."""
    if preset not in PRESETS:
        raise SynthError(f"unknown preset {preset!r} (expected one of {sorted(PRESETS)})")
    fields = {f.name for f in dataclasses.fields(SynthParams)}
    unknown = set(overrides) - fields
    if unknown:
        raise SynthError(f"unknown synth parameter(s) {sorted(unknown)} (known: {sorted(fields)})")
    given = {k: _cast(k, v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PRESETS[preset], **given)
