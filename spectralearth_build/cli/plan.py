"""``spectralearth-build plan``: overlap graph, n-tuple search and patch plan.

Planning groups (connected components of the overlap graph, see
:mod:`spectralearth_build.geometry.planner`) run in parallel on a Dask cluster with
``--workers N`` or ``--scheduler``; the plan file is the same bytes either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .common import config_option, load_config, user_errors

CATALOG_COLUMNS = (
    "product_id",
    "status",
    "datatake",
    "tile",
    "start_time",
    "crs",
    "transform",
    "height",
    "width",
    "footprint_native",
)
"""Catalog columns planning needs (``clear_native``, the clear-sky footprint, is used if there)."""


def load_tile_records(path: Path) -> list[Any]:
    """The ``ok`` tiles of a catalog file, with clean errors for missing or foreign files."""
    from ..catalog import read_catalog, tile_records

    if not path.exists():
        raise InputError(f"--catalog {path}: no such file")
    if path.is_dir():
        raise InputError(f"--catalog {path}: is a folder, expected a catalog GeoParquet file")
    try:
        catalog = read_catalog(path)
    except Exception as exc:  # pyarrow/geopandas raise many types for a foreign file
        raise InputError(
            f"--catalog {path}: not a catalog GeoParquet written by 'spectralearth-build scan' "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    missing = [c for c in CATALOG_COLUMNS if c not in catalog.columns]
    if missing:
        raise InputError(f"--catalog {path}: missing catalog column(s) {missing}")
    try:
        return tile_records(catalog)
    except Exception as exc:
        raise InputError(
            f"--catalog {path}: unreadable tile rows ({type(exc).__name__}: {exc})"
        ) from exc


def print_plan_summary(summary: dict[str, Any]) -> None:
    """Print a plan summary: tiles, edges, tuples and patches by number of timestamps."""
    click.echo(
        f"{summary['tiles']} tiles, {summary['edges']} overlap edges, "
        f"{summary['components']} components, max degree {summary['max_degree']} "
        f"(mean {summary['mean_degree']}, {summary['tiles_with_degree_30_or_more']} tiles >= 30)"
    )
    click.echo(f"largest components: {summary['largest_components']}")
    click.echo(
        f"{summary['planning_groups']} planning groups (largest "
        f"{summary['largest_planning_groups'][:5]}), "
        f"{summary['tiles_without_clear_patch']} tiles without a clear patch-sized area"
    )
    click.echo(
        "component sizes (size: count): "
        + ", ".join(f"{k}: {v}" for k, v in summary["component_size_histogram"].items())
    )
    click.echo(
        f"{summary['patches']} patches ({summary['multi_timestamp_patches']} multi-timestamp), "
        f"{summary['views']} views ({summary['resampled_views']} resampled)"
    )
    click.echo("patches by number of timestamps:")
    for t, n in summary["patches_by_timestamps"].items():
        click.echo(f"  {int(t):3d}: {n}")
    click.echo(
        "seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.get("seconds", {}).items())
    )


@click.command()
@click.option(
    "--catalog",
    "catalog_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Catalog GeoParquet written by 'spectralearth-build scan'.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Plan GeoParquet.")
@config_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes of a local Dask cluster planning groups in parallel (0: plan in "
    "this process).",
)
@click.option(
    "--scheduler",
    default=None,
    help="Plan on an existing Dask cluster: scheduler address (tcp://host:port) or file.",
)
@user_errors
def plan_command(
    catalog_path: Path,
    out: Path,
    config_path: Path | None,
    workers: int,
    scheduler: str | None,
) -> None:
    """Plan multi-timestamp patches from the usable tiles of a catalog."""
    from ..cluster import client_map, dask_client
    from ..geometry import PlanningError, plan_patches
    from ..plan import write_plan

    config = load_config(config_path)
    tiles = load_tile_records(catalog_path)
    with dask_client(workers, scheduler) as client:
        try:
            result = plan_patches(tiles, config.plan, map_fn=client_map(client))
        except PlanningError as exc:
            raise click.ClickException(f"{catalog_path}: {exc}") from exc
    write_plan(result.patches, out, result.file_metadata(config))
    print_plan_summary(result.summary)
    click.echo(f"plan written to {out}")
