"""``spectralearth-build synth``: write a synthetic EnMAP L2A archive (see :mod:`..synth`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..synth import PRESETS, SynthError, make_archive
from .common import quiet_option, show_progress, user_errors


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write (must be empty or absent).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="tiny",
    show_default=True,
    help="Size preset: tiny (tests), demo (quickstart), full (real tile size).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--broken", is_flag=True, help="Also write broken products (expected: invalid).")
@click.option(
    "--packaging",
    type=click.Choice(["folders", "mixed"]),
    default="folders",
    show_default=True,
    help="mixed: some products as ZIPs, in a tar.gz, COG, without prefix, METADATA.xml.",
)
@click.option("--tile-px", type=int, default=None, help="Swath width / tile length in pixels.")
@click.option(
    "--bands",
    "n_bands",
    type=int,
    default=None,
    help="Spectral bands (evenly spaced subset of the 224 EnMAP bands).",
)
@click.option(
    "--tiles", "tiles_per_datatake", type=int, default=None, help="Consecutive tiles per datatake."
)
@click.option(
    "--revisits",
    type=int,
    default=None,
    help="Acquisition dates over the European site (US: about 60% of it, >= 3).",
)
@click.option(
    "--landscape-scale",
    type=float,
    default=None,
    help="Factor on the land-cover map's lengths (default 1: 9 km units, 700 m fields).",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Processes writing products (output is identical for any number).",
)
@click.option("--overwrite", is_flag=True, help="Replace a previous synthetic archive in --out.")
@quiet_option
@user_errors
def synth_command(
    out: Path,
    preset: str,
    seed: int,
    broken: bool,
    packaging: str,
    tile_px: int | None,
    n_bands: int | None,
    tiles_per_datatake: int | None,
    revisits: int | None,
    landscape_scale: float | None,
    workers: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Write a synthetic archive of EnMAP L2A products, label rasters and a manifest."""
    revisits_us = None if revisits is None else max(3, round(0.6 * revisits))
    try:
        report = make_archive(
            out,
            preset=preset,
            seed=seed,
            broken=broken,
            packaging=packaging,
            workers=workers,
            progress=show_progress(quiet),
            overwrite=overwrite,
            tile_px=tile_px,
            n_bands=n_bands,
            tiles_per_datatake=tiles_per_datatake,
            revisits_eu=revisits,
            revisits_us=revisits_us,
            landscape_scale=landscape_scale,
        )
    except SynthError as exc:
        raise click.ClickException(str(exc)) from exc
    by_status = ", ".join(f"{n} {s}" for s, n in report.by_status().items())
    click.echo(
        f"wrote {len(report.products)} products ({by_status}) and {len(report.labels)} label "
        f"rasters to {out}: {_size(report.total_bytes)}"
    )
