"""``spectralearth-build report``: (re)write the build report of an existing dataset."""

from __future__ import annotations

from pathlib import Path

import click

from ..report.page import write_report
from .common import user_errors


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "dest",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the report (default: DATASET/report).",
)
@user_errors
def report_command(dataset: Path, dest: Path | None) -> None:
    """Write the figures and index.html of DATASET's build report (works offline)."""
    index = write_report(dataset, dest)
    n_png = len(list(index.parent.glob("*.png")))
    click.echo(f"report written to {index} ({n_png} figures)")
