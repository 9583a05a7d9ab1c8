"""EnMAP L2A band tables and the band selection applied to every product.

The selection is positional (0-based indices into the file's band order), as in SpectralEarth,
HySpecNet-11k and TorchGeo: the standard 224-band L2A layout minus the water-vapour absorption
ranges 126..140 and 160..166, leaving 202 bands.  Wavelengths always come from each product's
own metadata; the reference table here is only used to make synthetic products and as a default.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

L2A_BAND_COUNT = 224
DEFAULT_DROP_RANGES: tuple[tuple[int, int], ...] = ((126, 140), (160, 166))


@lru_cache(maxsize=1)
def reference_bands() -> tuple[np.ndarray, np.ndarray]:
    """Centre wavelengths and FWHM (nm) of the 224 bands of a 2022 EnMAP L2A product."""
    text = resources.files("spectralearth_build.data").joinpath("enmap_l2a_bands.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    wl = np.array([float(r["wavelength_nm"]) for r in rows])
    fwhm = np.array([float(r["fwhm_nm"]) for r in rows])
    return wl, fwhm


@dataclass(frozen=True)
class BandSelection:
    """Which bands of a product are kept.

    ``expected_count`` is the band count every product must have; ``drop_ranges`` are inclusive
    0-based index ranges removed from it.
    """

    expected_count: int = L2A_BAND_COUNT
    drop_ranges: tuple[tuple[int, int], ...] = field(default=DEFAULT_DROP_RANGES)

    def __post_init__(self) -> None:
        ranges = tuple((int(a), int(b)) for a, b in self.drop_ranges)
        for a, b in ranges:
            if not 0 <= a <= b < self.expected_count:
                raise ValueError(
                    f"band drop range {a}..{b} is outside 0..{self.expected_count - 1}"
                )
        object.__setattr__(self, "drop_ranges", ranges)

    @property
    def kept_indices(self) -> np.ndarray:
        """0-based indices of the kept bands, ascending."""
        keep = np.ones(self.expected_count, dtype=bool)
        for a, b in self.drop_ranges:
            keep[a : b + 1] = False
        return np.flatnonzero(keep)

    @property
    def count(self) -> int:
        return int(self.kept_indices.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected_count": self.expected_count,
            "drop_ranges": [list(r) for r in self.drop_ranges],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandSelection:
        return cls(
            int(d.get("expected_count", L2A_BAND_COUNT)),
            tuple(tuple(r) for r in d.get("drop_ranges", DEFAULT_DROP_RANGES)),  # type: ignore[misc]
        )
