"""``spectralearth-train``: ``pretrain`` and ``eval`` commands.

Each command parses its options into a config and calls one library function.  Several GPUs:
``torchrun --nproc_per_node N -m spectralearth_build.train.cli pretrain ...`` (or the console
script's path); rank 0 prints and writes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(fn: F) -> F:
    """Domain errors become ``Error: ...`` and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..config import ConfigError
        from .pretrain import TrainInputError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, TrainInputError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        except (ValueError, RuntimeError) as exc:
            from ..errors import USER_ERRORS  # imported only on this path (it loads rasterio)

            if isinstance(exc, USER_ERRORS):
                raise click.ClickException(str(exc)) from exc
            raise

    return wrapper  # type: ignore[return-value]


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise click.BadParameter(
                f"expected section.key=value, got {item!r}", param_hint="--set"
            )
        out[key] = yaml.safe_load(raw)
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pretrain and evaluate hyperspectral foundation models on a built dataset."""


@main.command("pretrain")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Method config (configs/pretrain/<method>.yaml).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset folder written by build-dataset.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Run folder [runs/<config name>]."
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Optimiser steps of the run (schedules end there).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Samples per process and micro-batch.",
)
@click.option(
    "--accumulate",
    type=click.IntRange(min=1),
    default=None,
    help="Micro-batches per optimiser step.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers per process."
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Steps between checkpoints.",
)
@click.option(
    "--log-every", type=click.IntRange(min=1), default=None, help="Steps between log rows."
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default=None,
    help="auto: bf16 autocast on CUDA, fp32 on CPU.",
)
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the step.")
@click.option("--seed", type=int, default=None)
@click.option(
    "--device", default=None, help="cpu, cuda, cuda:1 (default: the local GPU, else CPU)."
)
@click.option("--resume", is_flag=True, help="Continue from <out>/checkpoints/last.pt.")
@click.option(
    "--resume-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Continue from this checkpoint.",
)
@click.option(
    "--stop-at",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many steps (the schedule still spans the whole run).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override any config value (repeatable), e.g. --set method.queue_size=4096.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_user_errors
def pretrain_command(
    config_path: Path,
    data: Path,
    out: Path | None,
    max_steps: int | None,
    batch_size: int | None,
    accumulate: int | None,
    workers: int | None,
    checkpoint_every: int | None,
    log_every: int | None,
    precision: str | None,
    compile_: bool | None,
    seed: int | None,
    device: str | None,
    resume: bool,
    resume_from: Path | None,
    stop_at: int | None,
    sets: tuple[str, ...],
    quiet: bool,
) -> None:
    """Self-supervised pretraining (MoCo-v2, DINO, MAE, Barlow Twins) on a built dataset."""
    from . import distributed as tdist
    from .pretrain import PretrainConfig, pretrain

    overrides = _parse_set(sets)
    for key, value in {
        "train.max_steps": max_steps,
        "train.batch_size": batch_size,
        "train.accumulate": accumulate,
        "data.num_workers": workers,
        "train.checkpoint_every": checkpoint_every,
        "train.log_every": log_every,
        "train.precision": precision,
        "train.compile": compile_,
        "train.seed": seed,
    }.items():
        if value is not None:
            overrides[key] = value
    cfg = PretrainConfig.from_yaml(config_path, overrides)
    out = out or Path("runs") / config_path.stem
    res = pretrain(
        cfg,
        data,
        out,
        resume=resume_from or resume,
        stop_at=stop_at,
        device=device,
        progress=not quiet and sys.stderr.isatty(),
    )
    if tdist.rank() == 0:
        last = f"{res.losses[-1]:.4f}" if res.losses else "-"
        click.echo(
            f"{cfg.method} {cfg.backbone}: steps {res.start_step}->{res.steps} of "
            f"{res.total_steps}, last loss {last}, {res.samples_per_s:.1f} samples/s; "
            f"checkpoint {res.checkpoint}; log {Path(res.out) / 'log.csv'}"
        )
    if tdist.is_dist():
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
