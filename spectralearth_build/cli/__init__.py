"""The ``spectralearth-build`` command group and the ``build-dataset`` alias.

Each command lives in its own module, parses its options into a config and calls one library
function.  Command modules are imported only when their command runs (or ``--help`` lists
them), so ``synth-store`` works on a machine without GDAL.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__

LAZY_COMMANDS = {
    "synth": ".synth:synth_command",
    "synth-store": ".synthstore:synth_store_command",
    "scan": ".scan:scan_command",
    "plan": ".plan:plan_command",
    "build": ".build:build_command",
    "labels": ".labels:labels_command",
    "export": ".export:export_command",
}
"""Command name -> ``module:attribute`` (relative to this package)."""


class LazyGroup(click.Group):
    """A click group that imports a command's module on first use (click's lazy-group recipe)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module, __name__), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="spectralearth-build")
def main() -> None:
    """Build SpectralEarth-style hyperspectral datasets from EnMAP L2A archives."""


def build_dataset_main() -> None:
    """Entry point of ``build-dataset`` (same as ``spectralearth-build build``)."""
    from .build import build_command

    build_command(prog_name="build-dataset")
