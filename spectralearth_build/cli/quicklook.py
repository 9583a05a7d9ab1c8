"""``spectralearth-build quicklook``: pseudo-RGB PNGs of a dataset's locations."""

from __future__ import annotations

from pathlib import Path

import click

from ..report.quicklook import write_quicklooks
from .common import quiet_option, show_progress, user_errors


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out", "dest", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs."
)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Locations sampled."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option(
    "--patch-id",
    "patch_ids",
    type=int,
    multiple=True,
    help="Show this location (repeatable) instead of a sample.",
)
@quiet_option
@user_errors
def quicklook_command(
    dataset: Path, dest: Path, n: int, seed: int, patch_ids: tuple[int, ...], quiet: bool
) -> None:
    """Write pseudo-RGB quicklooks (all timestamps, labels) of sampled locations of DATASET."""
    paths = write_quicklooks(
        dataset, dest, n=n, seed=seed, patch_ids=patch_ids or None, progress=show_progress(quiet)
    )
    n_loc = sum(p.name.startswith("location-") for p in paths)
    sheet = " and a contact sheet" if len(paths) > n_loc else ""
    click.echo(f"wrote {n_loc} location quicklook{'s' if n_loc != 1 else ''}{sheet} to {dest}")
