"""The build report: what ``build-dataset`` did, written to ``OUT/report.json``."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_INVALID_PRODUCTS = 3
"""Exit status of ``build-dataset`` when products were skipped as invalid (unless allowed)."""


@dataclass
class BuildReport:
    """What a build did: counts, drops, skipped products, bytes and time per stage."""

    out: str
    products: dict[str, Any] = field(default_factory=dict)
    invalid_products: list[dict[str, str]] = field(default_factory=list)
    """Products skipped as unusable: ``{"product", "reason", "detail"}`` (scan or extraction)."""
    planned_patches: int = 0
    patches: int = 0
    views: int = 0
    patches_by_timestamps: dict[int, int] = field(default_factory=dict)
    dropped_views: dict[str, int] = field(default_factory=dict)
    dropped_patches: int = 0
    units: int = 0
    units_resumed: int = 0
    bytes_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patches_by_timestamps"] = {str(k): v for k, v in self.patches_by_timestamps.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildReport:
        report = cls(**{k: v for k, v in d.items() if k != "patches_by_timestamps"})
        report.patches_by_timestamps = {int(k): v for k, v in d["patches_by_timestamps"].items()}
        return report

    @property
    def exit_status(self) -> int:
        """:data:`EXIT_INVALID_PRODUCTS` if products were skipped as invalid, else 0."""
        return EXIT_INVALID_PRODUCTS if self.invalid_products else EXIT_OK

    def add_units(self, results: list[Any]) -> None:
        """Count what the units (:class:`~.extract.results.UnitResult`) stored and dropped."""
        from .extract.execute import drop_counts

        self.patches = sum(len(r.locations) for r in results)
        self.views = sum(len(r.views) for r in results)
        by_t = Counter(loc.n_views for r in results for loc in r.locations)
        self.patches_by_timestamps = dict(sorted(by_t.items()))
        self.dropped_views = drop_counts(results)
        self.dropped_patches = sum(len(r.dropped_patches) for r in results)
        failed = {p: d for r in results for p, d in r.failed_products.items()}
        self.invalid_products.extend(
            {"product": p, "reason": "read failed during extraction", "detail": d}
            for p, d in sorted(failed.items())
        )
