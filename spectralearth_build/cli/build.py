"""``build-dataset``: scan, plan and extract in one command.

Exit status: 0 when the build is complete and no product was skipped as invalid; 3
(:data:`~spectralearth_build.build.EXIT_INVALID_PRODUCTS`) when the dataset was built but some
products were skipped as invalid (corrupt, truncated, unreadable; listed in the summary and in
``OUT/report.json``), unless ``--allow-invalid`` is given; 1 with a one-line ``Error:`` for a
user mistake (missing folder, bad config, a resume with another config); 2 for bad options.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..build import BuildReport, build_dataset
from ..errors import InputError
from .common import (
    cluster_options,
    config_option,
    echo_products,
    load_config,
    quiet_option,
    show_progress,
    tiles_option,
    user_errors,
)
from .labels import labels_option, pair_on_client, parse_labels, print_label_summary


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def print_build_summary(report: BuildReport) -> None:
    """The closing summary: patches by timestamps, skipped products, drops, bytes, times."""
    prod = report.products
    if prod:
        echo_products(prod, f"products: {prod['products']} found, ", "skipped: ")
    click.echo(
        f"patches: {report.patches} written ({report.views} views) of {report.planned_patches} "
        f"planned, in {report.units} work unit{'s' if report.units != 1 else ''}"
        + (f" ({report.units_resumed} done earlier)" if report.units_resumed else "")
    )
    for t, n in sorted(report.patches_by_timestamps.items()):
        click.echo(f"  {n:6d}  with {t} timestamp{'s' if t != 1 else ''}")
    if report.dropped_views or report.dropped_patches:
        click.echo(f"dropped: {report.dropped_patches} patches left with no valid view; views:")
        for reason, n in report.dropped_views.items():
            click.echo(f"  {n:6d}  {reason}")
    if report.invalid_products:
        click.echo(f"invalid products skipped: {len(report.invalid_products)}")
        for p in report.invalid_products:
            click.echo(
                f"  {p['product']}: {p['reason']}" + (f" ({p['detail']})" if p["detail"] else "")
            )
    click.echo(f"written: {_human_bytes(report.bytes_written)} to {report.out}")
    if report.seconds:
        click.echo("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


@click.command()
@tiles_option
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@config_option
@cluster_options
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the build in OUT (a rerun into an existing build folder does so too).",
)
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Exit 0 even if products were skipped as invalid (default: exit status 3).",
)
@labels_option
@quiet_option
@user_errors
def build_command(
    tiles: Path,
    out: Path,
    config_path: Path | None,
    workers: int | None,
    scheduler: str | None,
    resume: bool,
    allow_invalid: bool,
    label_options: tuple[str, ...],
    quiet: bool,
) -> None:
    """Build a dataset from a folder of EnMAP L2A products: scan, plan, extract to OUT."""
    if not tiles.exists():
        raise InputError(f"--tiles {tiles}: no such file or folder")
    config = load_config(config_path)
    label_specs = parse_labels(label_options)
    paired: list[Any] = []

    def pair(client: Any) -> None:  # on the build's own Dask client
        paired.append(pair_on_client(out, label_specs, client, show_progress(quiet)))

    report = build_dataset(
        tiles,
        out,
        config,
        workers=workers,
        scheduler=scheduler,
        resume=resume,
        progress=show_progress(quiet),
        log=None if quiet else click.echo,
        then=pair if label_specs else None,
    )
    print_build_summary(report)
    for label_report in paired:
        print_label_summary(label_report)
    if report.invalid_products and not allow_invalid:
        click.echo(
            f"exit status {report.exit_status}: products were skipped as invalid "
            "(--allow-invalid to accept)",
            err=True,
        )
        sys.exit(report.exit_status)
