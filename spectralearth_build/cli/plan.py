"""``spectralearth-build plan``: overlap graph, n-tuple search and patch plan."""

from __future__ import annotations

import click


@click.command()
def plan_command() -> None:
    """Plan multi-timestamp patches from a catalog."""
    raise click.ClickException("not implemented yet")
