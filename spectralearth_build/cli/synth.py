"""``spectralearth-build synth``: write a synthetic EnMAP L2A archive (filled in by synth/)."""

from __future__ import annotations

import click


@click.command()
def synth_command() -> None:
    """Write a synthetic archive of EnMAP L2A products."""
    raise click.ClickException("not implemented yet")
