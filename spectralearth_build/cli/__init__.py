"""The ``spectralearth-build`` command group and the ``build-dataset`` alias.

Each command lives in its own module, parses its options into a config and calls one library
function.
"""

from __future__ import annotations

import click

from .. import __version__
from .build import build_command
from .labels import labels_command
from .plan import plan_command
from .scan import scan_command
from .synth import synth_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spectralearth-build")
def main() -> None:
    """Build SpectralEarth-style hyperspectral datasets from EnMAP L2A archives."""


main.add_command(synth_command, "synth")
main.add_command(scan_command, "scan")
main.add_command(plan_command, "plan")
main.add_command(build_command, "build")
main.add_command(labels_command, "labels")


def build_dataset_main() -> None:
    """Entry point of ``build-dataset`` (same as ``spectralearth-build build``)."""
    build_command(prog_name="build-dataset")
