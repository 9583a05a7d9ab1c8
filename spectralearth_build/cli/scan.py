"""``spectralearth-build scan``: discover and catalog products."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from ..catalog import scan, summarize, write_catalog
from ..errors import InputError
from .common import (
    config_option,
    echo_products,
    load_config,
    quiet_option,
    show_progress,
    tiles_option,
    user_errors,
)


@click.command()
@tiles_option
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Catalog GeoParquet.")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes for scanning.")
@click.option(
    "--strict", is_flag=True, help="Exit with status 1 if any product is invalid (default: report)."
)
@config_option
@quiet_option
@user_errors
def scan_command(
    tiles: Path, out: Path, workers: int, strict: bool, config_path: Path | None, quiet: bool
) -> None:
    """Catalog every product under TILES: identifiers, grid, footprint, status and reason."""
    if not tiles.exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    config = load_config(config_path)
    progress = show_progress(quiet)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            catalog = scan(tiles, config, map_fn=pool.map, progress=progress)
    else:
        catalog = scan(tiles, config, progress=progress)
    write_catalog(catalog, out, config)
    summary = summarize(catalog)
    echo_products(summary, f"{summary['products']} products: ")
    click.echo(f"catalog written to {out}")
    if strict and summary["by_status"]["invalid"]:
        sys.exit(1)
