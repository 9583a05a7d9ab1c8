"""``spectralearth-build labels``: pair an existing dataset with label rasters.

Exit status: 0 when every label is paired; 1 with a one-line ``Error:`` for a missing,
unreadable, truncated or CRS-less label raster or one that covers no location of the dataset
(all are checked before any label is paired, so the dataset is unchanged), a label raster
found corrupt while pairing, or a full disk; rerunning the same command continues a stopped
pairing.  Also provides the ``--labels`` option and the summary that ``build-dataset`` shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .common import cluster_options

labels_option = click.option(
    "--labels",
    "label_options",
    multiple=True,
    metavar="NAME=PATH[,key=value...]",
    help="Label raster, VRT or folder of tiles to pair with every location (repeatable). "
    "NAME corine, cdl or nlcd uses that preset; other names take kind=categorical|continuous, "
    "nodata=, year=, resampling=auto|nearest|mode|bilinear|average, product=.",
)


def parse_labels(options: tuple[str, ...]) -> list[Any]:
    """``--labels`` values as :class:`~spectralearth_build.labels.spec.LabelSpec` s."""
    from ..labels.spec import parse_label_option

    specs = [parse_label_option(o) for o in options]
    for s in specs:
        if not Path(s.path).exists():
            raise InputError(f"--labels {s.name}: {s.path}: no such file or folder")
    return specs


def run_pairing(
    out: Path,
    specs: list[Any],
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    replace: bool = False,
    split_config: Any = None,
    shard_locations: int | None = None,
) -> Any:
    """Pair ``specs`` with dataset ``out`` on a Dask client of its own (see :mod:`..cluster`)."""
    from ..cluster import dask_client
    from ..errors import output_errors

    with output_errors(out, "rerun the same command"), dask_client(workers, scheduler) as client:
        return pair_on_client(out, specs, client, progress, replace, split_config, shard_locations)


def pair_on_client(
    out: Path,
    specs: list[Any],
    client: Any,
    progress: bool,
    replace: bool = False,
    split_config: Any = None,
    shard_locations: int | None = None,
) -> Any:
    """Pair ``specs`` with dataset ``out`` on ``client`` (a ``distributed.Client`` or None)."""
    from ..labels.store import pair_labels

    return pair_labels(
        out,
        specs,
        client=client,
        progress=progress,
        shard_locations=shard_locations,
        replace=replace,
        split_config=split_config,
        log=click.echo,
    )


def print_label_summary(report: Any) -> None:
    """Coverage per label, then split sizes and class balance per task."""
    for name, meta in report.labels.items():
        cov = meta["coverage"]
        click.echo(
            f"label {name}: {cov['ok']} of {cov['locations']} locations labelled "
            f"({meta['product']}, {meta.get('year') or 'year unknown'}, {meta['crs']}, "
            + ", ".join(f"{k} {v}" for k, v in meta.get("resampling", {}).items())
            + ")"
        )
        missing = {k: v for k, v in cov.items() if k not in ("ok", "locations") and v}
        if missing:
            click.echo("  no label: " + ", ".join(f"{v} {k}" for k, v in missing.items()))
    for task, meta in report.tasks.items():
        for scheme, s in meta["splits"].items():
            click.echo(
                f"task {task} {scheme}: train {s['train']}, val {s['val']}, test {s['test']}"
                + (f", dropped {s['dropped']}" if s.get("dropped") else "")
                + f"; class frequency within {s['max_class_deviation']:.3f} of the whole"
            )
            if s.get("warning"):
                click.echo(f"warning: task {task} {scheme}: {s['warning']}", err=True)


@click.command()
@click.option(
    "--dataset",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset folder written by build-dataset.",
)
@labels_option
@cluster_options
@click.option("--replace", is_flag=True, help="Pair a NAME again that exists with other options.")
@click.option(
    "--block-km",
    type=click.FloatRange(min=0.001),
    default=50.0,
    show_default=True,
    help="Block size of the spatial splits.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits.")
@click.option(
    "--shard-locations",
    type=click.IntRange(min=1),
    default=None,
    help="Locations per shard (and work unit) of the mask arrays (default 256).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def labels_command(
    out: Path,
    label_options: tuple[str, ...],
    workers: int | None,
    scheduler: str | None,
    replace: bool,
    block_km: float,
    seed: int,
    shard_locations: int | None,
    quiet: bool,
) -> None:
    """Pair every location of a dataset with label rasters; write task splits."""
    from ..errors import USER_ERRORS
    from ..labels.splits import SplitConfig
    from .common import show_progress

    try:
        specs = parse_labels(label_options)
        report = run_pairing(
            out,
            specs,
            workers,
            scheduler,
            show_progress(quiet),
            replace,
            SplitConfig(seed=seed, block_m=block_km * 1000.0),
            shard_locations,
        )
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    print_label_summary(report)
