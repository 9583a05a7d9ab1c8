"""Domain errors shared by the library and the CLI (which turns them into clean messages)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError
from .enmap.metadata import MetadataError
from .enmap.product import ProductError


class InputError(ValueError):
    """A user-supplied path or table is missing or not what the command expects."""


class IncompleteDatasetError(RuntimeError):
    """A dataset directory exists but its build has not finished (resume it with --resume)."""


class OutputWriteError(RuntimeError):
    """The output could not be written: file system full, quota or file size limit reached."""


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


@contextmanager
def output_errors(out: str | Path) -> Iterator[None]:
    """Turn "no space" OS errors while writing under ``out`` into :class:`OutputWriteError`.

    The message names the file when the error carries it (else ``out``) and says how to go on.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        where = exc.filename or out
        raise OutputWriteError(
            f"cannot write {where}: {exc.strerror or 'no space'} (file system full or a file "
            "size limit reached); free space and rerun with --resume"
        ) from exc


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    MetadataError,
    ProductError,
    InputError,
    IncompleteDatasetError,
    OutputWriteError,
    FileNotFoundError,
)
