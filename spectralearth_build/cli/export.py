"""``spectralearth-build export``: write a dataset in another layout (SpectralEarth's).

Exit status: 0 when the export is complete; 1 with a one-line ``Error:`` for an unknown task,
an ``--out`` holding something else (or an export with other options), or a full disk.
Rerunning the same command into the same ``--out`` continues a stopped export.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import USER_ERRORS, output_errors
from .common import cluster_options


@click.command()
@click.option(
    "--dataset",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset folder written by build-dataset.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["spectralearth"]),
    default="spectralearth",
    show_default=True,
    help="Target layout.",
)
@click.option(
    "--out", "dest", required=True, type=click.Path(path_type=Path), help="Folder to write."
)
@click.option(
    "--scheme",
    type=click.Choice(["spatial", "random"]),
    default="spatial",
    show_default=True,
    help="Split scheme written to splits/.",
)
@click.option("--task", "tasks", multiple=True, help="Task to export (repeatable; default: all).")
@cluster_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def export_command(
    out: Path,
    fmt: str,
    dest: Path,
    scheme: str,
    tasks: tuple[str, ...],
    workers: int | None,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Export a dataset, its label masks and splits to another folder layout.

    Rerunning an export that was stopped (or ran out of space) into the same --out continues it.
    """
    from ..cluster import dask_client
    from ..labels.export import export_spectralearth
    from .common import show_progress

    try:
        with (
            output_errors(dest, "rerun the same export"),
            dask_client(workers, scheduler) as client,
        ):
            report = export_spectralearth(
                out,
                dest,
                scheme=scheme,
                tasks=list(tasks) or None,
                client=client,
                progress=show_progress(quiet),
            )
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"exported {report.locations} locations, {report.images} images to {report.dest} "
        f"({fmt} layout, {report.seconds:.1f} s)"
    )
    for task, n in report.masks.items():
        s = report.samples[task]
        click.echo(
            f"  {task}: {n} masks; {scheme} splits train {s['train']}, val {s['val']}, "
            f"test {s['test']} samples"
        )
