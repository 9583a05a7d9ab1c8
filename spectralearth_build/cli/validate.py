"""``spectralearth-build validate``: check a finished dataset (see :mod:`..validate`).

Exit status: 0 when every check passes; 4 (:data:`~spectralearth_build.validate.EXIT_MISMATCH`)
when a check fails (the verdict and the first mismatches are printed); 1 with a one-line
``Error:`` when ``OUT`` is not a complete dataset or ``--tiles`` does not exist.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..cluster import client_map, dask_client
from ..errors import InputError
from ..validate import validate_dataset
from .common import cluster_options, quiet_option, show_progress, user_errors

SHOWN = 20
"""Mismatches printed (all of them go to ``--json``)."""


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--tiles",
    type=click.Path(path_type=Path),
    default=None,
    help="Source products (the build's --tiles): compare a sample of views with them.",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    help="Views re-read from the sources with --tiles (all if larger than the dataset).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the view sample.")
@cluster_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the full verdict as JSON to this file.",
)
@quiet_option
@user_errors
def validate_command(
    out: Path,
    tiles: Path | None,
    sample: int,
    seed: int,
    workers: int | None,
    scheduler: str | None,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Check the dataset in OUT: completeness, consistency, statistics and (with --tiles) pixels."""
    if tiles is not None and not tiles.exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    with dask_client(workers, scheduler) as client:
        report = validate_dataset(
            out, tiles, sample, seed, map_fn=client_map(client), progress=show_progress(quiet)
        )
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    compared = f", {report.views_compared} views compared with sources" if tiles else ""
    click.echo(
        f"{out}: {report.locations} locations, {report.views} views, "
        f"{report.shards_read} shards read{compared}"
    )
    if report.ok:
        click.echo("valid")
        return
    n = len(report.mismatches)
    click.echo(f"INVALID: {n} mismatch{'es' if n != 1 else ''}")
    for m in report.mismatches[:SHOWN]:
        click.echo(f"  {m}")
    if n > SHOWN:
        click.echo(f"  ... and {n - SHOWN} more")
    sys.exit(report.exit_status)
