"""``spectralearth-build synth-store``: a synthetic dataset straight in the store format.

Imports no raster stack (see :mod:`spectralearth_build.synthstore`), so it runs on a GPU node
that has only numpy, pandas, pyarrow and zarr.  ``--workers N`` (or ``auto``: one per usable
core) writes shard blocks in N processes; the store is the same bytes for any N.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .common import config_option, load_config, quiet_option, show_progress, user_errors


class Workers(click.ParamType):
    """A number of processes: a whole number >= 1, or ``auto`` for one per usable core."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            return len(cores) if cores else os.cpu_count() or 1
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r}: expected a whole number >= 1 or 'auto'", param, ctx)


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--locations", type=click.IntRange(min=1), required=True, help="Number of locations.")
@click.option(
    "--max-views",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Each location gets 1..N views (T_max = N).",
)
@click.option(
    "--patch-px", type=click.IntRange(min=1), default=128, show_default=True, help="Patch side."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--workers",
    type=Workers(),
    default=1,
    show_default=True,
    help="Processes writing shard blocks ('auto': one per core); the store is identical for any.",
)
@config_option
@quiet_option
@user_errors
def synth_store_command(
    out: Path,
    locations: int,
    max_views: int,
    patch_px: int,
    seed: int,
    workers: int,
    config_path: Path | None,
    quiet: bool,
) -> None:
    """Write a synthetic dataset (random-walk spectra, real wavelengths) into OUT."""
    from ..synthstore import write_synthetic_store

    summary = write_synthetic_store(
        out,
        locations,
        max_views=max_views,
        patch_px=patch_px,
        seed=seed,
        config=load_config(config_path),
        progress=show_progress(quiet),
        workers=workers,
    )
    click.echo(
        f"wrote {summary['locations']} locations ({summary['views']} views, T_max "
        f"{summary['t_max']}, {summary['bands']} bands): {summary['bytes'] / 1e6:.1f} MB to {out}"
    )
