"""Self-supervised pretraining on a built store: one loop for every method, 1 to N processes.

Strategy.  Everything random that a sample sees is keyed by the optimiser step, so the run is a
pure function of (config, data, step):

- the sampler walks a per-epoch permutation of the locations (seeded by ``(seed, epoch)``) in
  global batches of ``batch_size * accumulate * world`` (the last incomplete batch of an epoch is
  dropped); process ``r`` takes positions ``r * batch_size * accumulate + m * batch_size + i`` for
  micro-batch ``m``;
- the two timestamps of a location are drawn from ``(seed, epoch, location)``; a location with
  one timestamp gives that view twice (two augmentations of one view);
- augmentation (random resized crop, flips, Gaussian blur, then per-band standardisation with the
  store's statistics) and MAE masks draw from :class:`~.methods.common.StepRandom`, which draws
  for the whole global batch and slices.

Hence one process and ``W`` processes at the same global batch see identical inputs, DDP with
global-batch BatchNorm (SyncBN on GPUs, :class:`~.distributed.GatherBatchNorm` on CPUs) computes
the same losses, and resuming from a checkpoint (model, optimiser, step, RNG states; the learning
rate is a function of the step and the queue and centre are buffers) continues bit-identically.
Rank 0 writes ``checkpoints/step_NNNNNNN.pt`` + ``checkpoints/last.pt``, ``log.csv`` and
``summary.json`` in the run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ..config import ConfigError, _section
from . import distributed as tdist
from .methods import METHODS, Method, build_method
from .methods.common import StepRandom, _seed_of
from .models import compile_trunks
from .ring import RingLoader, ring_available
from .transforms import AugmentConfig, AugmentParams, DeviceTransform, sample_params

CHECKPOINT_FORMAT = "spectralearth-train/1"
LOADERS = ("auto", "ring", "torch")
"""Values of ``data.loader``."""


class TrainInputError(ValueError):
    """A data folder, checkpoint or option of a training command is not what it expects."""


# -- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """How views are drawn and augmented."""

    crop_px: int = 128
    """Side of the augmented views (pixels)."""
    scale: tuple[float, float] = (0.08, 1.0)
    """Random resized crop: range of the crop area as a share of the patch."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Random resized crop: range of the aspect ratio."""
    flip: bool = True
    """Random horizontal and vertical flips."""
    blur_prob: float = 0.5
    """Probability of a Gaussian blur (sigma uniform in ``blur_sigma``)."""
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    temporal_pairs: bool = True
    """Positive pair = two timestamps of a location where it has two or more."""
    num_workers: int = 0
    """Loader worker processes per training process."""
    loader: str = "auto"
    """``ring`` (:class:`~.ring.RingLoader`: workers decode into a shared, page-locked ring of
    batch buffers, side-stream copies to the GPU), ``torch`` (``DataLoader``, pinned on CUDA) or
    ``auto`` (ring on CUDA, torch elsewhere).  Both give the same batches."""

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ConfigError(
                f"data.loader must be one of {', '.join(LOADERS)}, got {self.loader!r}"
            )


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (per optimiser step)."""

    name: str = "adamw"
    """``sgd`` or ``adamw``."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    """SGD momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    schedule: str = "cosine"
    """``constant``, ``cosine`` (to 0 at the end) or ``multistep``."""
    warmup: float = 0.0
    """Share of the run with a linear warm-up from 0."""
    milestones: tuple[float, ...] = (0.6, 0.8)
    """``multistep``: shares of the run at which the rate is multiplied by ``gamma``."""
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Run length, batch, precision and bookkeeping."""

    batch_size: int = 64
    """Samples per process and micro-batch."""
    accumulate: int = 1
    """Micro-batches per optimiser step (gradient accumulation)."""
    epochs: int = 100
    max_steps: int = 0
    """Optimiser steps of the run (overrides ``epochs`` when > 0; schedules end there)."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``."""
    compile: bool = False
    """``torch.compile`` the training forward (GPU)."""
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run: method and backbone (name + keyword arguments) and three sections.

    ``backbone.name`` is a name known to :func:`spectralearth_build.train.models.build_backbone`
    or ``module:callable`` for any other constructor.
    """

    method: str
    method_kw: dict[str, Any] = field(default_factory=dict)
    backbone: str = "spec_vit_s"
    backbone_kw: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": {"name": self.method, **self.method_kw},
            "backbone": {"name": self.backbone, **self.backbone_kw},
            "data": _plain(dataclasses.asdict(self.data)),
            "optim": _plain(dataclasses.asdict(self.optim)),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        d = dict(d or {})
        unknown = set(d) - {"method", "backbone", "data", "optim", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {sorted(unknown)}")
        method = dict(d.get("method") or {})
        name = method.pop("name", None)
        if name not in METHODS:
            raise ConfigError(f"method.name must be one of {sorted(METHODS)}, got {name!r}")
        backbone = dict(d.get("backbone") or {})
        bname = backbone.pop("name", "spec_vit_s")
        return cls(
            method=str(name),
            method_kw=method,
            backbone=str(bname),
            backbone_kw=backbone,
            data=_tuples(_section(DataConfig, d.get("data"), "data")),
            optim=_tuples(_section(OptimConfig, d.get("optim"), "optim")),
            train=_section(TrainConfig, d.get("train"), "train"),
        )

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> PretrainConfig:
        """Read ``path``; ``overrides`` maps ``section.key`` to a value (``train.max_steps``)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections")
        for key, value in (overrides or {}).items():
            section, _, name = key.partition(".")
            data.setdefault(section, {})[name] = value
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _tuples(cfg: Any) -> Any:
    """Lists read from YAML as tuples (the dataclasses are frozen and hashable)."""
    fixed = {k: tuple(v) for k, v in dataclasses.asdict(cfg).items() if isinstance(v, list)}
    return dataclasses.replace(cfg, **fixed)


# -- building blocks ------------------------------------------------------------------------------
def make_backbone(name: str, **kw: Any) -> nn.Module:
    """A backbone by registry name or ``module:callable``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)(**kw)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"backbone {name!r}: {exc}") from exc
    from .models import build_backbone

    return build_backbone(name, **kw)


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based) of a ``total``-step run."""
    warm = int(round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == "multistep":
        n = sum(step >= int(round(m * total)) for m in cfg.milestones)
        return cfg.lr * cfg.gamma**n
    raise ConfigError(f"optim.schedule must be constant, cosine or multistep, got {cfg.schedule!r}")


def make_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on matrices and kernels only (not biases, norms, tokens)."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))  # type: ignore[arg-type]
    raise ConfigError(f"optim.name must be sgd or adamw, got {cfg.name!r}")


class StepSampler(torch.utils.data.Sampler):
    """Micro-batches of ``(location, epoch)`` keys for one process, from step ``start_step``.

    Args:
        n: locations.
        batch_size: samples per micro-batch.
        accumulate: micro-batches per step.
        world, rank: processes and this one's rank.
        seed: permutation seed.
        start_step, stop_step: the optimiser steps to cover.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        accumulate: int,
        world: int,
        rank: int,
        seed: int,
        start_step: int,
        stop_step: int,
    ):
        self.n, self.b, self.k, self.world, self.rank = n, batch_size, accumulate, world, rank
        self.seed, self.start, self.stop = seed, start_step, stop_step
        self.global_batch = batch_size * accumulate * world
        self.steps_per_epoch = n // self.global_batch

    def __len__(self) -> int:
        return (self.stop - self.start) * self.k

    def __iter__(self) -> Any:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, j = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                perm = np.random.default_rng(_seed_of(self.seed, "perm", epoch)).permutation(self.n)
                perm_epoch = epoch
            assert perm is not None
            base = j * self.global_batch + self.rank * self.b * self.k
            for m in range(self.k):
                lo = base + m * self.b
                yield [(int(i), epoch) for i in perm[lo : lo + self.b]]


def build_loader(
    ds: torch.utils.data.Dataset, sampler: StepSampler, cfg: DataConfig, dev: torch.device
) -> RingLoader | torch.utils.data.DataLoader:
    """The loader ``cfg.loader`` names over ``ds`` and ``sampler`` (``auto``: ring on CUDA).

    Batches hold int16 images, on ``dev`` with the ring loader on CUDA, else on the CPU
    (pinned on CUDA); the device transform moves them (a no-op for device tensors).
    """
    kind = cfg.loader
    if kind == "auto":
        kind = "ring" if dev.type == "cuda" and ring_available() else "torch"
    if kind == "ring":
        device = dev if dev.type == "cuda" else None
        return RingLoader(ds, sampler, num_workers=cfg.num_workers, device=device)
    return torch.utils.data.DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )


def augment_config(cfg: DataConfig) -> AugmentConfig:
    """The device transform's augmentation for ``cfg``."""
    return AugmentConfig(
        crop_scale=tuple(cfg.scale),  # type: ignore[arg-type]
        crop_ratio=tuple(cfg.ratio),  # type: ignore[arg-type]
        size=cfg.crop_px,
        hflip=0.5 if cfg.flip else 0.0,
        vflip=0.5 if cfg.flip else 0.0,
        blur=cfg.blur_prob,
        blur_sigma=tuple(cfg.blur_sigma),  # type: ignore[arg-type]
    )


def _slice_params(params: AugmentParams, start: int, stop: int) -> AugmentParams:
    return AugmentParams(
        **{f.name: getattr(params, f.name)[start:stop] for f in dataclasses.fields(params)}
    )


def augment(
    images: Tensor, rand: StepRandom, aug: AugmentConfig, transform: DeviceTransform
) -> list[Tensor]:
    """int16 ``(B, V, C, P, P)`` -> ``V`` float ``(B, C, crop, crop)`` standardised views.

    Crops, flips and blurs of view ``v`` are drawn for the whole global batch from the step's
    generator ``aug{v}`` and sliced to this process's samples.
    """
    x = images.to(transform.device, non_blocking=True)
    p_h, p_w = x.shape[-2:]
    views = []
    for v in range(x.shape[1]):
        params = sample_params(aug, rand.global_batch, p_h, p_w, rand.generator(f"aug{v}"))
        part = _slice_params(params, rand.start, rand.stop)
        out, _ = transform.augment_with(x[:, v], part, aug)  # normalised and augmented
        views.append(out)
    return views


# -- checkpoints ----------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`pretrain` (clear error if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise TrainInputError(f"{path}: no such checkpoint")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainInputError(f"{path}: not a checkpoint written by spectralearth-train pretrain")
    return ckpt


# -- the loop -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """What :func:`pretrain` did."""

    out: str
    start_step: int
    steps: int
    """Last optimiser step done + 1."""
    total_steps: int
    losses: list[float]
    """Loss of every logged step of this invocation (mean over ranks)."""
    samples_per_s: float
    checkpoint: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _device(requested: str | None, local_rank: int) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pretrain(
    cfg: PretrainConfig,
    data: str | Path,
    out: str | Path,
    resume: bool | str | Path = False,
    stop_at: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> RunResult:
    """Pretrain ``cfg.method`` on the store ``data``; write checkpoints and logs under ``out``.

    Args:
        cfg: the run configuration.
        data: folder written by ``build-dataset``.
        out: run folder (created).
        resume: ``True`` to continue from ``out/checkpoints/last.pt``, or a checkpoint path.
        stop_at: stop after this many optimiser steps in total (an interruption; the schedule
            still spans the whole run).
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: this process's GPU if any, else CPU.
        progress: show a tqdm bar (loss, samples/s, ETA) on rank 0.
    """
    from .data import SingleView, TemporalPair

    rank_env = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, rank_env)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    rank, _, world = tdist.init_from_env(str(dev))
    out = Path(out)
    tc = cfg.train

    pairs = cfg.data.temporal_pairs and METHODS[cfg.method].n_views == 2
    ds = (TemporalPair if pairs else SingleView)(data, seed=tc.seed)
    global_batch = tc.batch_size * tc.accumulate * world
    if len(ds) < global_batch:
        raise TrainInputError(
            f"{data}: {len(ds)} locations, fewer than one global batch of {global_batch}"
        )
    steps_per_epoch = len(ds) // global_batch
    total = int(tc.max_steps) if tc.max_steps else tc.epochs * steps_per_epoch
    stop = min(total, stop_at) if stop_at is not None else total

    torch.manual_seed(tc.seed)
    backbone = make_backbone(cfg.backbone, **cfg.backbone_kw)
    try:
        method = build_method(cfg.method, backbone, total, **cfg.method_kw)
    except TypeError as exc:
        raise ConfigError(f"method {cfg.method}: {exc}") from exc
    converted = tdist.convert_sync_batchnorm(method, dev)
    assert isinstance(converted, Method)
    method = converted
    method.to(dev).train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.optim)

    start = 0
    ckpt_dir = out / "checkpoints"
    if resume:
        path = ckpt_dir / "last.pt" if resume is True else Path(resume)
        ckpt = load_checkpoint(path)
        if _run_keys(ckpt["config"]) != _run_keys(cfg.to_dict()) or (
            ckpt["global_batch"] != global_batch
        ):
            raise ConfigError(
                f"{path}: written with another config or global batch; resume with the same ones"
            )
        method.load_state_dict(ckpt["method"])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
        _set_rng_state(ckpt["rng"])

    model: Any = method
    if world > 1:
        model = _ddp(method, dev)
    if tc.compile:
        # the encoders' trunks only (ViT blocks, ResNet stages), in place: the method's forward
        # takes the step (DINO's schedules) and draws MAE masks on the CPU, which would recompile
        # or break the graph every step, and the adapter runs tuned Triton kernels
        compile_trunks(method)
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and dev.type == "cuda")
    # views in bf16 where the model casts them to bf16 anyway (same values, one pass fewer),
    # float32 where the loss reads them as targets (MAE)
    half = bf16 and dev.type == "cuda" and not method.pixel_targets
    view_dtype = torch.bfloat16 if half else torch.float32
    transform = DeviceTransform(ds.band_mean, ds.band_std, None, device=dev, dtype=view_dtype)
    aug = augment_config(cfg.data)
    autocast = (
        (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
        if bf16
        else nullcontext
    )

    sampler = StepSampler(len(ds), tc.batch_size, tc.accumulate, world, rank, tc.seed, start, stop)
    loader = build_loader(ds, sampler, cfg.data, dev)

    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log_path = out / "log.csv"
    log_fields = ["step", "epoch", "loss", "lr", "samples_per_s", "elapsed_s", "data_share"]
    log_rows: list[dict[str, Any]] = []
    if is_main and start > 0 and log_path.exists():
        with log_path.open() as f:
            log_rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]

    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    losses: list[float] = []
    last_ckpt: str | None = None
    t0 = time.perf_counter()
    t_log, n_log = t0, 0
    t_data = t_data_total = 0.0  # time spent waiting for the loader (this interval, whole run)
    it = iter(loader)
    step = start
    for step in range(start, stop):
        lr = lr_at(step, total, cfg.optim)
        for g in opt.param_groups:
            g["lr"] = lr
        pending = []
        loss_sum = torch.zeros((), device=dev)
        for m in range(tc.accumulate):
            t_wait = time.perf_counter()
            images = next(it)["image"]
            t_data += time.perf_counter() - t_wait
            if images.ndim == 4:  # one timestamp: augmented twice for a pair method
                images = images[:, None].expand(-1, method.n_views, -1, -1, -1)
            lo = rank * tc.batch_size * tc.accumulate + m * tc.batch_size
            rand = StepRandom(tc.seed, step, global_batch, lo, lo + images.shape[0], str(dev))
            views = augment(images, rand, aug, transform)
            sync = world > 1 and m < tc.accumulate - 1
            with model.no_sync() if sync and hasattr(model, "no_sync") else nullcontext():
                with autocast():
                    loss, pend = model(views, rand, step)
                (loss / tc.accumulate).backward()
            pending.append(pend)
            loss_sum += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_step(pending, step)
        n_log += global_batch

        done = step + 1
        if done % tc.log_every == 0 or done == stop:
            loss_val = float(tdist.all_reduce_mean(loss_sum / tc.accumulate).item())
            now = time.perf_counter()
            sps = n_log / max(now - t_log, 1e-9)
            share = t_data / max(now - t_log, 1e-9)
            t_data_total += t_data
            t_log, n_log, t_data = now, 0, 0.0
            losses.append(loss_val)
            row = {
                "step": done,
                "epoch": f"{done / steps_per_epoch:.4f}",
                "loss": f"{loss_val:.6g}",
                "lr": f"{lr:.6g}",
                "samples_per_s": f"{sps:.2f}",
                "elapsed_s": f"{now - t0:.2f}",
                "data_share": f"{share:.4f}",
            }
            for k, v in method.schedule_values(step).items():
                row[k] = f"{v:.6g}"
                if k not in log_fields:
                    log_fields.append(k)
            log_rows.append(row)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_val:.4f}", samples_s=f"{sps:.1f}")
        if bar is not None:
            bar.update(1)
        if is_main and (done % tc.checkpoint_every == 0 or done == stop):
            payload = {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "step": done,
                "total_steps": total,
                "global_batch": global_batch,
                "world_size": world,
                "method": method.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": _rng_state(),
                "encoder_prefix": "backbone.",
                "band_mean": ds.band_mean.tolist(),
                "band_std": ds.band_std.tolist(),
            }
            path = ckpt_dir / f"step_{done:07d}.pt"
            save_checkpoint(path, payload)
            save_checkpoint(ckpt_dir / "last.pt", payload)
            last_ckpt = str(path)
            _write_log(log_path, log_fields, log_rows)
    if bar is not None:
        bar.close()
    if isinstance(loader, RingLoader):
        loader.close()
    elapsed = time.perf_counter() - t0
    n_steps = max(stop - start, 0)
    result = RunResult(
        out=str(out),
        start_step=start,
        steps=stop,
        total_steps=total,
        losses=losses,
        samples_per_s=n_steps * global_batch / max(elapsed, 1e-9),
        checkpoint=last_ckpt,
    )
    if is_main:
        _write_log(log_path, log_fields, log_rows)
        summary = {
            **result.to_dict(),
            "world_size": world,
            "global_batch": global_batch,
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "loader_share": t_data_total / max(elapsed, 1e-9),
            "loader": "ring" if isinstance(loader, RingLoader) else "torch",
            "config": cfg.to_dict(),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result


def _run_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A config without ``data.loader``, for the resume check.

    Both loaders give the same batches, so a run may be resumed with the other (and from
    checkpoints written before the key existed).
    """
    data = {k: v for k, v in (config.get("data") or {}).items() if k != "loader"}
    return {**config, "data": data}


def _ddp(method: nn.Module, dev: torch.device) -> nn.Module:
    """DDP without per-forward buffer broadcasts.

    The methods keep queue, centre and BN statistics equal on every rank themselves.
    """
    import inspect

    ddp = nn.parallel.DistributedDataParallel
    kw: dict[str, Any] = {"device_ids": [dev.index] if dev.type == "cuda" else None}
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        kw["forward_sync_buffers"] = False  # torch >= 2.14 (buffers are equal at init)
    else:
        kw["broadcast_buffers"] = False
    return ddp(method, **kw)


def _write_log(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
