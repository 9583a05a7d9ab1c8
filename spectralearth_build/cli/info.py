"""``spectralearth-build info``: a one-screen summary of a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..report.info import format_info, store_info
from .common import user_errors


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def info_command(dataset: Path, as_json: bool) -> None:
    """Summarise DATASET: locations, views, bands, codec and size, labels, build config."""
    info = store_info(dataset)
    click.echo(json.dumps(info, indent=1, sort_keys=True) if as_json else format_info(info))
