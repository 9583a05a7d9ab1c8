"""``build-dataset``: scan, plan and extract in one command."""

from __future__ import annotations

import click


@click.command()
def build_command() -> None:
    """Build a dataset from a folder of EnMAP L2A products."""
    raise click.ClickException("not implemented yet")
