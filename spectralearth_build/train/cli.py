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
        from .models.errors import ModelError
        from .pretrain import TrainInputError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, TrainInputError, ModelError, FileNotFoundError) as exc:
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


def _floats(ctx: Any, param: Any, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not all(0 < f <= 1 for f in out):
        raise click.BadParameter("fractions must lie in (0, 1]")
    return out


@main.command("eval")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Our pretraining checkpoint or a SpectralEarth one (then give --backbone).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset folder with paired labels.",
)
@click.option("--task", required=True, type=click.Choice(["corine", "cdl", "nlcd"]))
@click.option("--backbone", default=None, help="Backbone name (spec_vit_s, spec_rn50, ...).")
@click.option(
    "--backbone-arg",
    "backbone_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backbone option (repeatable), e.g. --backbone-arg embed_dim=64.",
)
@click.option("--random-init", is_flag=True, help="Evaluate a randomly initialised --backbone.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [beside the checkpoint, else eval/].",
)
@click.option(
    "--scheme",
    type=click.Choice(["spatial", "random"]),
    default="spatial",
    show_default=True,
    help="Split scheme.",
)
@click.option(
    "--fractions",
    default="0.01,0.1,1",
    show_default=True,
    callback=_floats,
    help="Shares of the train split the probes are fit on.",
)
@click.option(
    "--probes", default="linear,mlp,rf", show_default=True, help="CORINE probes (comma-separated)."
)
@click.option(
    "--head",
    "seg_head",
    type=click.Choice(["linear", "conv"]),
    default="linear",
    show_default=True,
    help="CDL / NLCD head.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="CORINE probe epochs (full batch).",
)
@click.option("--seg-epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA if available).")
@click.option("--no-plot", is_flag=True, help="Skip the UMAP / t-SNE figure.")
@_user_errors
def eval_command(
    checkpoint: Path | None,
    data: Path,
    task: str,
    backbone: str | None,
    backbone_args: tuple[str, ...],
    random_init: bool,
    out: Path | None,
    scheme: str,
    fractions: tuple[float, ...],
    probes: str,
    seg_head: str,
    epochs: int,
    seg_epochs: int,
    seed: int,
    device: str | None,
    no_plot: bool,
) -> None:
    """Frozen-encoder probes on a label task: JSON of metrics and a feature plot."""
    from .eval import EvalConfig, evaluate

    if checkpoint is None and not random_init:
        raise click.UsageError("give --checkpoint, or --random-init with --backbone")
    kw = {}
    for item in backbone_args:
        key, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {item!r}", param_hint="--backbone-arg"
            )
        kw[key] = yaml.safe_load(raw)
    cfg = EvalConfig(
        task=task,
        scheme=scheme,
        fractions=fractions,
        probes=tuple(p for p in probes.split(",") if p),
        seg_head=seg_head,
        epochs=epochs,
        seg_epochs=seg_epochs,
        seed=seed,
        plot=not no_plot,
    )
    out = out or (checkpoint.parent.parent / "eval" if checkpoint else Path("eval"))
    rep = evaluate(
        data,
        cfg,
        out,
        checkpoint=None if random_init else checkpoint,
        backbone=backbone,
        backbone_kw=kw or None,
        device=device,
    )
    click.echo(
        f"{task}: {rep['n_train']} train / {rep['n_test']} test samples, "
        f"features {rep['feature_dim']}-d"
    )
    for probe, by_frac in rep["results"].items():
        for frac, m in by_frac.items():
            keys = (
                ("micro_map", "micro_f1", "macro_f1")
                if task == "corine"
                else ("macro_miou", "micro_miou", "pixel_accuracy")
            )
            vals = ", ".join(f"{k} {m[k]:.3f}" for k in keys)
            click.echo(f"  {probe:6s} {float(frac) * 100:5.1f}% train: {vals}")
    click.echo(f"wrote {Path(out) / f'eval_{task}.json'}")


if __name__ == "__main__":
    main()
