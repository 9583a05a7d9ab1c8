"""EnMAP product file names.

``ENMAP01-____L2A-DT0000001049_20220612T105735Z_001_V010111_20220613T102034Z-SPECTRAL_IMAGE.TIF``
holds the datatake, the acquisition start (UTC), the tile number within the datatake, the
processor version and the processing time.  Readers also meet names without the
``ENMAP01-____L2A-`` prefix and pre-launch products with 9-digit datatakes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

PREFIX = "ENMAP01-____L2A-"

_NAME_RE = re.compile(
    r"(?:ENMAP01-_{4}L2A-)?"
    r"DT(?P<datatake>\d{9,10})_(?P<start>\d{8}T\d{6})Z_(?P<tile>\d{3})_"
    r"V(?P<version>\d{6})_(?P<processing>\d{8}T\d{6})Z"
    r"(?:-(?P<suffix>[A-Za-z0-9_]+)(?:\.(?P<ext>[A-Za-z0-9.]+))?)?$",
)


class ProductNameError(ValueError):
    """A file name is not an EnMAP L2A product name."""


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


@dataclass(frozen=True, order=True)
class ProductName:
    """The identifying parts of an EnMAP L2A product name."""

    datatake: int
    start_time: datetime
    tile: int
    processor_version: str
    """Six digits, e.g. ``"010111"`` for processor 01.01.11; compares in version order."""
    processing_time: datetime
    datatake_digits: int = 10

    @classmethod
    def parse(cls, name: str) -> ProductName:
        """Parse a product, file or folder name (any suffix and extension, any case of suffix)."""
        base = name.rstrip("/").rsplit("/", 1)[-1]
        for ext in (".tar.gz", ".tgz", ".zip", ".ZIP"):
            if base.endswith(ext):
                base = base[: -len(ext)]
        m = _NAME_RE.match(base)
        if not m:
            raise ProductNameError(f"{name!r} is not an EnMAP L2A product name")
        return cls(
            datatake=int(m["datatake"]),
            start_time=_utc(m["start"]),
            tile=int(m["tile"]),
            processor_version=m["version"],
            processing_time=_utc(m["processing"]),
            datatake_digits=len(m["datatake"]),
        )

    @staticmethod
    def suffix_of(name: str) -> str | None:
        """The upper-cased file suffix (``"SPECTRAL_IMAGE"``, ``"METADATA"``) or None."""
        base = name.rsplit("/", 1)[-1]
        m = _NAME_RE.match(base)
        return m["suffix"].upper() if m and m["suffix"] else None

    @property
    def stem(self) -> str:
        """The canonical product id, with prefix and without suffix."""
        return (
            f"{PREFIX}DT{self.datatake:0{self.datatake_digits}d}_"
            f"{self.start_time:%Y%m%dT%H%M%S}Z_{self.tile:03d}_V{self.processor_version}_"
            f"{self.processing_time:%Y%m%dT%H%M%S}Z"
        )

    @property
    def acquisition_key(self) -> tuple[int, int, datetime]:
        """(datatake, tile, start): products sharing it are one acquisition, reprocessed."""
        return (self.datatake, self.tile, self.start_time)

    @property
    def version_dotted(self) -> str:
        v = self.processor_version
        return f"{v[0:2]}.{v[2:4]}.{v[4:6]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "datatake": self.datatake,
            "start_time": self.start_time.isoformat(),
            "tile": self.tile,
            "processor_version": self.processor_version,
            "processing_time": self.processing_time.isoformat(),
            "datatake_digits": self.datatake_digits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProductName:
        return cls(
            int(d["datatake"]),
            datetime.fromisoformat(d["start_time"]),
            int(d["tile"]),
            str(d["processor_version"]),
            datetime.fromisoformat(d["processing_time"]),
            int(d.get("datatake_digits", 10)),
        )
