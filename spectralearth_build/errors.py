"""Domain errors shared by the library and the CLI (which turns them into clean messages).

Defined here, with no I/O imports, so that the loader and the CLI can catch them without
pulling in rasterio; the modules that raise them (:mod:`.config`, :mod:`.enmap.metadata`,
:mod:`.enmap.product`) import them from here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


class OutputWriteError(RuntimeError):
    """The output could not be written: file system full, quota or file size limit reached."""


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


@contextmanager
def output_errors(out: str | Path, rerun: str = "rerun with --resume") -> Iterator[None]:
    """Turn "no space" OS errors while writing under ``out`` into :class:`OutputWriteError`.

    The message names the file when the error carries it (else ``out``) and says how to go on
    (``free space and <rerun>``).
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        where = exc.filename or out
        # the system's words for the errno: pyarrow's strerror wraps them in its own text
        raise OutputWriteError(
            f"cannot write {where}: {os.strerror(exc.errno)} (file system full or a file "
            f"size limit reached); free space and {rerun}"
        ) from exc


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an ``OSError`` raised inside that carries no file name the name ``path``.

    For writers that lose it (zarr's attribute writes), so :func:`output_errors` names the file.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def error_line(exc: BaseException) -> str:
    """One line of an I/O error's text: GDAL's own message when rasterio wrapped it."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and "previous exception" in text:
        text = str(cause)
    return text.splitlines()[0] if text else type(exc).__name__


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    MetadataError,
    ProductError,
    InputError,
    IncompleteDatasetError,
    OutputWriteError,
    FileNotFoundError,
)
"""Errors the CLI reports as one line ``Error: ...`` with exit status 1."""
