"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import BuildConfig
from ..errors import USER_ERRORS

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML build config (see configs/default.yaml); defaults apply to keys left out.",
)

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")

tiles_option = click.option(
    "--tiles",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of EnMAP L2A products (folders, ZIPs, tar.gz).",
)


def load_config(config_path: Path | None) -> BuildConfig:
    """The config of ``--config`` (defaults when no file is given)."""
    return BuildConfig.from_yaml(config_path) if config_path else BuildConfig()


def show_progress(quiet: bool) -> bool:
    """Progress bars only for interactive, non-quiet runs."""
    return not quiet and sys.stderr.isatty()


def user_errors(fn: F) -> F:
    """Turn domain errors into a one-line ``Error: ...`` and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def echo_products(summary: dict[str, Any], head: str, reason_prefix: str = "") -> None:
    """Print a catalog summary: ``head`` then counts by status, then one line per reason."""
    counts = ", ".join(f"{n} {k}" for k, n in summary["by_status"].items() if n or k == "ok")
    click.echo(f"{head}{counts}")
    for reason, n in summary["by_reason"].items():
        click.echo(f"  {n:6d}  {reason_prefix}{reason}")


def cluster_options(fn: F) -> F:
    """``--workers N`` / ``--scheduler ADDRESS`` (they exclude each other) for a Dask command.

    The command receives ``workers`` (None: one per core; 0: no Dask) and ``scheduler``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("workers") is not None and kwargs.get("scheduler") is not None:
            raise click.ClickException("--workers and --scheduler exclude each other")
        return fn(*args, **kwargs)

    workers = click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="Worker processes of a local Dask cluster (default: one per core; 0: no Dask, "
        "run in this process).",
    )
    scheduler = click.option(
        "--scheduler",
        default=None,
        help="Use an existing Dask cluster: scheduler address (tcp://host:port) or scheduler file.",
    )
    return workers(scheduler(wrapper))  # type: ignore[return-value]
