"""Domain errors shared by the library and the CLI (which turns them into clean messages)."""

from __future__ import annotations

from .config import ConfigError
from .enmap.metadata import MetadataError
from .enmap.product import ProductError


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
