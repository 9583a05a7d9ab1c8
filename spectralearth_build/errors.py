"""Domain errors shared by the library and the CLI (which turns them into clean messages).

Defined here, with no I/O imports, so that the loader and the CLI can catch them without
pulling in rasterio; the modules that raise them (:mod:`.config`, :mod:`.enmap.metadata`,
:mod:`.enmap.product`) import them from here.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


class MetadataError(ValueError):
    """METADATA.XML is missing, unreadable or lacks a required element."""


class ProductError(Exception):
    """A product cannot be used; ``reason`` is a short machine-friendly cause."""

    def __init__(self, product: str, reason: str, detail: str = ""):
        self.product = product
        self.reason = reason
        self.detail = detail
        super().__init__(f"{product}: {reason}" + (f" ({detail})" if detail else ""))


class InputError(ValueError):
    """A user-supplied path or table is missing or not what the command expects."""


class IncompleteDatasetError(RuntimeError):
    """A dataset directory exists but its build has not finished (resume it with --resume)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    MetadataError,
    ProductError,
    InputError,
    IncompleteDatasetError,
    FileNotFoundError,
)
"""Errors the CLI reports as one line ``Error: ...`` with exit status 1."""
