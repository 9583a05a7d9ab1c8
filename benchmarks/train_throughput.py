"""Training-step throughput: SpectralEarth's reference step against ours, in one run.

For each backbone / method / batch size two steps are timed side by side on the same device:

* ``reference``: SpectralEarth's model as its code runs it: the Conv3d spectral adapter and the
  timm ViT / ResNet, eager, bf16 autocast on CUDA, the torch default (foreach) optimiser;
* ``ours``: the same modules and parameters with the fast spectral adapter
  (``SpectralAdapter(impl="fast")``), a fused optimiser and ``--compile`` optionally.

Methods are the modules of ``spectralearth_build.train.methods`` (MoCo-v2, DINO, MAE) when they
import (they need lightly), else minimal stand-ins defined here and labelled so in the JSON;
``plain`` is a supervised step (linear head, cross-entropy) as a floor. Reported per case:
samples/s, the step split into adapter / backbone / loss+heads / optimiser (CUDA events from
module hooks: forward exactly, backward between the first adapter-output gradient and the
adapter's first-conv weight gradient; with several adapter calls per step, as DINO's two
views, the backward split is approximate), MFU from the FLOPs of the *reference* step counted
with ``torch.utils.flop_counter`` (so both impls are charged the same work), and peak memory.
The adapter alone (forward + backward, train mode) is timed for every implementation, and with
``--data STORE`` the end-to-end rate from the store through the loader and device transforms is
compared with the synthetic on-device batches (``--methods`` picks MoCo, MAE or both;
``--loader-workers 6,10,14`` also times the ring loader alone per worker count; ``--diagnose``
adds host syncs per step, the GPU's busy share, host time per step phase, and the transform-fed
step beside copies and CPU load).

    python benchmarks/train_throughput.py --device cuda            # one H200, ~3-4 min
    python benchmarks/train_throughput.py --device cpu --tiny      # smoke run (a test does it)
    python benchmarks/train_throughput.py --device cuda --data OUT # plus end to end from a store

Results go to ``benchmarks/results/train_throughput.json`` (``--out``), rewritten after every
case so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectralearth_build.train.hostcopy import to_device
from spectralearth_build.train.models import SpectralAdapter, build_backbone, compile_trunks
from spectralearth_build.train.models.adapter import triton_available

ROOT = Path(__file__).resolve().parent
#: our step: eager, and with the trunks compiled (``--compile``)
OURS = ("ours", "ours+compile")
BANDS = 202
#: store-fed steps the end-to-end diagnosis takes beyond the timed ones
DIAGNOSE_STEPS = 8
#: dense bf16 tensor-core peak, FLOP/s (the issue's 989 TFLOP/s for an H100/H200 SXM)
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12}


# -- methods ------------------------------------------------------------------------------------
class _Rand:
    """Minimal stand-in of ``methods.common.StepRandom`` (uniform draws per step)."""

    def __init__(self, step: int, batch: int, device: str):
        self.step, self.batch, self.device = step, batch, device

    def uniform(self, purpose: str, *shape: int) -> Tensor:
        g = torch.Generator().manual_seed(hash((self.step, purpose)) & 0xFFFFFFFF)
        return to_device(torch.rand((self.batch, *shape), generator=g), self.device)


class PlainStep(nn.Module):
    """Supervised floor: pooled features -> linear head -> cross-entropy on fixed labels."""

    name = "plain"
    n_views = 1

    def __init__(self, backbone: nn.Module, classes: int = 19):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, classes)

    def forward(self, views: list[Tensor], rand: Any, step: int) -> tuple[Tensor, dict]:
        logits = self.head(self.backbone(views[0])).float()
        labels = torch.arange(logits.shape[0], device=logits.device) % logits.shape[1]
        return F.cross_entropy(logits, labels), {}

    def after_step(self, pending: list[dict], step: int) -> None:
        pass


class StandInMoCo(nn.Module):
    """STAND-IN MoCo-v2 (used only when train.methods does not import): InfoNCE with a queue."""

    name = "moco"
    n_views = 2

    def __init__(self, backbone: nn.Module, queue: int = 32768, dim: int = 128):
        super().__init__()
        d = backbone.num_features
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(d, 2048), nn.ReLU(), nn.Linear(2048, dim))
        self.backbone_k = copy.deepcopy(backbone).requires_grad_(False)
        self.head_k = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim), dim=1))
        self.ptr = 0

    def forward(self, views: list[Tensor], rand: Any, step: int) -> tuple[Tensor, dict]:
        q = F.normalize(self.head(self.backbone(views[0])).float(), dim=1)
        with torch.no_grad():
            k = F.normalize(self.head_k(self.backbone_k(views[1])).float(), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.T], 1) / 0.1
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels), {"keys": k}

    @torch.no_grad()
    def after_step(self, pending: list[dict], step: int) -> None:
        for pt, ps in zip(self.backbone_k.parameters(), self.backbone.parameters()):
            pt.mul_(0.999).add_(ps, alpha=0.001)
        keys = pending[0]["keys"]
        idx = (self.ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[0]
        self.queue[idx] = keys
        self.ptr = int(idx[-1]) + 1


class StandInDINO(nn.Module):
    """STAND-IN DINO: student/teacher, 2 global views, centred teacher cross-entropy."""

    name = "dino"
    n_views = 2

    def __init__(self, backbone: nn.Module, out: int = 128):
        super().__init__()
        d = backbone.num_features
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(d, 2048), nn.GELU(), nn.Linear(2048, 2048), nn.GELU(),
            nn.Linear(2048, 256), nn.Linear(256, out, bias=False),
        )  # fmt: skip
        self.backbone_t = copy.deepcopy(backbone).requires_grad_(False)
        self.head_t = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, out))

    def forward(self, views: list[Tensor], rand: Any, step: int) -> tuple[Tensor, dict]:
        s = [self.head(self.backbone(v)).float() for v in views]
        with torch.no_grad():
            t = [self.head_t(self.backbone_t(v)).float() for v in views]
        loss = (
            sum(
                (-F.softmax((t[i] - self.center) / 0.04, -1) * F.log_softmax(s[j] / 0.1, -1))
                .sum(-1)
                .mean()
                for i in range(2)
                for j in range(2)
                if i != j
            )
            / 2
        )
        return loss, {"t": torch.cat(t).mean(0, keepdim=True)}

    @torch.no_grad()
    def after_step(self, pending: list[dict], step: int) -> None:
        for pt, ps in zip(self.backbone_t.parameters(), self.backbone.parameters()):
            pt.mul_(0.996).add_(ps, alpha=0.004)
        self.center.mul_(0.9).add_(pending[0]["t"], alpha=0.1)


class StandInMAE(nn.Module):
    """STAND-IN MAE: 90% masking, decoder 512 x 1, normalised-pixel loss over the bands."""

    name = "mae"
    n_views = 1

    def __init__(self, backbone: nn.Module, ratio: float = 0.9):
        super().__init__()
        from timm.models.vision_transformer import Block

        vit = backbone.vit_core
        self.backbone = backbone
        self.p = int(vit.patch_embed.patch_size[0])
        self.n = int(vit.patch_embed.num_patches)
        self.keep = max(1, round(self.n * (1 - ratio)))
        self.embed = nn.Linear(vit.embed_dim, 512)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 512))
        self.pos = nn.Parameter(torch.zeros(1, self.n, 512))
        self.block = Block(512, 16, qkv_bias=True)
        self.norm = nn.LayerNorm(512)
        self.pred = nn.Linear(512, self.p * self.p * BANDS)

    def forward(self, views: list[Tensor], rand: Any, step: int) -> tuple[Tensor, dict]:
        x = views[0]
        b = x.shape[0]
        vit = self.backbone.vit_core
        keep = rand.uniform("mask", self.n).argsort(1)[:, : self.keep]
        t = vit._pos_embed(vit.patch_embed(self.backbone.spectral_adapter(x)))
        tok = torch.gather(t[:, 1:], 1, keep[..., None].expand(-1, -1, t.shape[-1]))
        lat = vit.norm(vit.blocks(torch.cat([t[:, :1], tok], 1)))
        d = self.embed(lat[:, 1:])
        full = self.mask_token.to(d.dtype).expand(b, self.n, -1).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, d.shape[-1]), d)
        pred = self.pred(self.norm(self.block(full + self.pos.to(d.dtype)))).float()
        p = self.p
        tgt = x.float().reshape(b, BANDS, x.shape[2] // p, p, x.shape[3] // p, p)
        tgt = tgt.permute(0, 2, 4, 3, 5, 1).reshape(b, self.n, -1)
        tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = torch.ones(b, self.n, device=x.device).scatter_(1, keep, 0.0)
        return (((pred - tgt) ** 2).mean(-1) * mask).sum() / mask.sum(), {}

    def after_step(self, pending: list[dict], step: int) -> None:
        pass


#: smaller heads and queue for --tiny (keyword names of train.methods)
TINY_METHOD_KW: dict[str, dict[str, int]] = {
    "moco": {"queue_size": 256, "hidden_dim": 64, "out_dim": 32},
    "dino": {"hidden_dim": 64, "bottleneck_dim": 32, "out_dim": 32},
    "mae": {"decoder_dim": 32, "decoder_heads": 2},
}


def method_factory(tiny: bool) -> tuple[dict[str, Callable[[nn.Module], nn.Module]], str, Any]:
    """Method constructors: the project's modules if they import, else the stand-ins."""
    try:
        from spectralearth_build.train.methods import build_method
        from spectralearth_build.train.methods.common import StepRandom

        def make(name: str) -> Callable[[nn.Module], nn.Module]:
            kw = TINY_METHOD_KW[name] if tiny else {}
            return lambda bb: build_method(name, bb, total_steps=1000, **kw)

        table = {m: make(m) for m in ("moco", "dino", "mae")}
        source, rand = "spectralearth_build.train.methods", StepRandom
    except Exception as exc:  # noqa: BLE001  (lightly missing on the GPU node, branch not merged)
        table = {"moco": StandInMoCo, "dino": StandInDINO, "mae": StandInMAE}
        source, rand = f"stand-ins in this script ({type(exc).__name__}: {exc})", None
    table["plain"] = PlainStep
    return table, source, rand


OPTIM = {  # SpectralEarth's recipes
    "plain": ("sgd", 1e-3, 1e-4),
    "moco": ("sgd", 1e-3, 1e-4),
    "dino": ("adamw", 1e-3, 1e-5),
    "mae": ("adamw", 1e-4, 0.05),
}


def make_optimizer(method: str, params: list[Tensor], fused: bool) -> torch.optim.Optimizer:
    kind, lr, wd = OPTIM[method]
    extra = {"fused": True} if fused else {}
    try:
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, **extra)
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **extra)
    except (RuntimeError, TypeError):
        return make_optimizer(method, params, fused=False)


# -- timing -------------------------------------------------------------------------------------
class Clock:
    """CUDA events on GPU, perf_counter on CPU; ``ms(a, b)`` after ``sync``."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1e3


class Phases:
    """Module hooks recording the adapter and trunk forward intervals and the adapter backward."""

    def __init__(self, method: nn.Module, clock: Clock):
        self.clock = clock
        self.handles: list[Any] = []
        self.reset()
        for mod in method.modules():
            if isinstance(mod, SpectralAdapter):
                self._hook(mod, "adapter")
                w = mod[0].weight
                if w.requires_grad:
                    self.handles.append(w.register_hook(self._bwd_end))
            if hasattr(mod, "vit_core"):  # patch embedding to final norm (blocks may be compiled)
                v = mod.vit_core
                self._hook(v.patch_embed, "trunk", close=v.norm)
            elif hasattr(mod, "resnet") and hasattr(mod, "spectral_adapter"):
                self._hook(mod.resnet, "trunk")

    def reset(self) -> None:
        self.adapter: list[tuple[Any, Any]] = []
        self.trunk: list[tuple[Any, Any]] = []
        self.adapter_bwd: list[Any] = []
        self.bwd_end: Any = None
        self._open: dict[int, Any] = {}

    def _hook(self, mod: nn.Module, into: str, close: nn.Module | None = None) -> None:
        """Record ``into`` intervals from ``mod``'s forward start to ``close``'s (or its) end."""
        end = mod if close is None else close

        def pre(m: nn.Module, args: Any) -> None:
            self._open[id(end)] = self.clock.mark()

        def post(m: nn.Module, args: Any, out: Any) -> None:
            if id(m) not in self._open:
                return
            getattr(self, into).append((self._open.pop(id(m)), self.clock.mark()))
            if into == "adapter" and isinstance(out, Tensor) and out.requires_grad:
                out.register_hook(self._bwd_start)

        self.handles += [mod.register_forward_pre_hook(pre), end.register_forward_hook(post)]

    def _bwd_start(self, g: Tensor) -> None:
        self.adapter_bwd.append(self.clock.mark())

    def _bwd_end(self, g: Tensor) -> None:
        self.bwd_end = self.clock.mark()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def synthetic_views(n: int, batch: int, px: int, device: str) -> list[Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(batch, BANDS, px, px, device=device, generator=g) for _ in range(n)]


class Case:
    """One method around one backbone, ready to step."""

    def __init__(self, args: argparse.Namespace, model: str, method: str, impl: str, methods: Any):
        table, _, rand_cls = methods
        kw = dict(args.model_kw) if model.startswith("spec_vit") else {}
        adapter = "reference" if impl == "reference" else args.adapter
        bb = build_backbone(model, adapter_impl=adapter, adapter_recompute=args.recompute, **kw)
        self.method = table[method](bb).to(args.device)
        self.name, self.impl, self.device = method, impl, args.device
        self.rand_cls = rand_cls
        params = [p for p in self.method.parameters() if p.requires_grad]
        ours = impl in OURS
        self.opt = make_optimizer(method, params, fused=ours and args.device == "cuda")
        self.forward: Callable[..., Any] = self.method
        if impl == "ours+compile":  # as ``pretrain`` with ``train.compile: true``
            compile_trunks(self.method)
        self.autocast = args.device == "cuda"

    def rand(self, step: int, batch: int) -> Any:
        if self.rand_cls is None or self.name == "plain":
            return _Rand(step, batch, self.device)
        return self.rand_cls(0, step, batch, 0, batch, self.device)

    def step(
        self,
        views: list[Tensor],
        step: int,
        phases: Phases | None,
        clock: Clock,
        lap: Callable[[str], None] | None = None,
    ) -> dict:
        """One training step; ``lap(phase)`` (if given) is called as each phase is queued."""
        lap = lap or (lambda phase: None)
        marks: dict[str, Any] = {"start": clock.mark()}
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            loss, pending = self.forward(
                views[: self.method.n_views], self.rand(step, len(views[0])), step
            )
        marks["fwd"] = clock.mark()
        lap("forward")
        loss.backward()
        marks["bwd"] = clock.mark()
        lap("backward")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.method.after_step([pending], step)
        marks["end"] = clock.mark()
        lap("optimiser")
        return marks


class Laps:
    """Host wall and main-thread CPU ms per step phase, over the steps timed with it."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.steps = 0
        self.start()

    def start(self) -> None:
        self._t, self._c = time.perf_counter(), time.thread_time()

    def __call__(self, phase: str) -> None:
        t, c = time.perf_counter(), time.thread_time()
        self.wall[phase] = self.wall.get(phase, 0.0) + t - self._t
        self.cpu[phase] = self.cpu.get(phase, 0.0) + c - self._c
        self._t, self._c = t, c

    def summary(self) -> dict[str, dict[str, float]]:
        n = max(self.steps, 1)
        return {
            phase: {
                "wall": round(self.wall[phase] * 1e3 / n, 2),
                "cpu": round(self.cpu[phase] * 1e3 / n, 2),
            }
            for phase in self.wall
        }


def split(marks: dict, phases: Phases, clock: Clock) -> dict[str, float]:
    """Step time split into adapter / backbone / loss+heads / optimiser (ms)."""
    total = clock.ms(marks["start"], marks["end"])
    fwd = clock.ms(marks["start"], marks["fwd"])
    bwd = clock.ms(marks["fwd"], marks["bwd"])
    ad_f = sum(clock.ms(a, b) for a, b in phases.adapter)
    tr_f = sum(clock.ms(a, b) for a, b in phases.trunk)
    ad_b = 0.0
    if phases.adapter_bwd and phases.bwd_end is not None:
        ad_b = clock.ms(
            min(phases.adapter_bwd, key=lambda e: clock.ms(marks["fwd"], e)), phases.bwd_end
        )
    return {
        "total_ms": total,
        "adapter_ms": ad_f + ad_b,
        "backbone_ms": tr_f + max(bwd - ad_b, 0.0),
        "loss_heads_ms": max(fwd - ad_f - tr_f, 0.0),
        "optimiser_ms": clock.ms(marks["bwd"], marks["end"]),
    }


def count_flops(args: argparse.Namespace, model: str, method: str, methods: Any) -> float:
    """FLOPs of one reference step (forward + backward) per sample, at a small batch."""
    from torch.utils.flop_counter import FlopCounterMode

    b0 = 2
    case = Case(args, model, method, "reference", methods)
    views = synthetic_views(2, b0, args.px, args.device)
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=case.autocast):
            loss, _ = case.method(views[: case.method.n_views], case.rand(0, b0), 0)
        loss.backward()
    del case
    return fc.get_total_flops() / b0


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_case(args: argparse.Namespace, model: str, method: str, impl: str, batch: int,
             methods: Any, flops: float | None, peak: float | None) -> dict:  # fmt: skip
    clock = Clock(args.device)
    out: dict[str, Any] = {"model": model, "method": method, "impl": impl, "batch": batch}
    try:
        case = Case(args, model, method, impl, methods)
        views = synthetic_views(case.method.n_views, batch, args.px, args.device)
        phases = None if case.forward is not case.method else Phases(case.method, clock)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t_compile = time.perf_counter()
        for s in range(args.warmup):
            case.step(views, s, None, clock)
        clock.sync()
        out["warmup_s"] = time.perf_counter() - t_compile
        splits = []
        t0 = clock.mark()
        for s in range(args.steps):
            if phases is not None:
                phases.reset()
            marks = case.step(views, args.warmup + s, phases, clock)
            clock.sync()
            if phases is not None:
                splits.append(split(marks, phases, clock))
        t1 = clock.mark()
        clock.sync()
        wall = clock.ms(t0, t1) / args.steps
        if phases is not None:
            phases.remove()
            mean = {k: sum(d[k] for d in splits) / len(splits) for k in splits[0]}
            out.update({k: round(v, 3) for k, v in mean.items()})
        out["step_ms"] = round(wall, 3)
        out["samples_per_s"] = round(batch / (wall / 1e3), 2)
        if flops is not None:
            out["ref_flops_per_sample"] = flops
            if peak:
                out["mfu"] = round(flops * batch / (wall / 1e3) / peak, 4)
        if args.device == "cuda":
            out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del case, views, phases
    except torch.OutOfMemoryError:
        out["error"] = "out of memory"
    except Exception as exc:  # noqa: BLE001  (recorded, the run goes on)
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=4)
    free()
    return out


def adapter_alone(args: argparse.Namespace, batch: int) -> list[dict]:
    """The adapter alone, train mode, forward + backward, every implementation."""
    clock = Clock(args.device)
    variants: list[tuple[str, dict[str, Any]]] = [
        ("reference", {"impl": "reference"}),
        ("fast", {"impl": "fast"}),
        ("fast_recompute", {"impl": "fast", "recompute": True}),
        ("fast_bn_module", {"impl": "fast", "fold": False}),
    ]
    if args.device == "cuda" and triton_available():
        variants.append(("triton", {"impl": "triton"}))
    if args.device == "cuda" and args.compile_adapter:
        variants.append(("fast_compiled", {"impl": "fast", "compile": True}))
    x = synthetic_views(1, batch, args.px, args.device)[0]
    res = []
    base = None
    for name, v in variants:
        r: dict[str, Any] = {"variant": name, "batch": batch}
        try:
            torch.manual_seed(0)
            ad = SpectralAdapter(impl=v["impl"], recompute=v.get("recompute", False))
            ad.fold_first_layer = v.get("fold", True)
            ad = ad.to(args.device).train()
            fn: Callable[[Tensor], Tensor] = torch.compile(ad) if v.get("compile") else ad
            g = None
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t_w = time.perf_counter()
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    clock.sync()
                    r["warmup_s"] = round(time.perf_counter() - t_w, 2)
                    t0 = clock.mark()
                with torch.autocast(
                    args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"
                ):
                    y = fn(x)
                if g is None:
                    g = torch.randn_like(y)
                y.backward(g)
                ad.zero_grad(set_to_none=True)
            t1 = clock.mark()
            clock.sync()
            r["fwd_bwd_ms"] = round(clock.ms(t0, t1) / args.steps, 3)
            if args.device == "cuda":
                r["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if name == "reference":
                base = r["fwd_bwd_ms"]
            if base:
                r["speedup_vs_reference"] = round(base / r["fwd_bwd_ms"], 2)
            del ad, fn, y, g
        except torch.OutOfMemoryError:
            r["error"] = "out of memory"
        except Exception as exc:  # noqa: BLE001
            r["error"] = f"{type(exc).__name__}: {exc}"
        free()
        res.append(r)
    return res


def equality_check(args: argparse.Namespace) -> dict[str, Any]:
    """Our adapters vs the reference on this device: outputs, gradients, running statistics."""
    impls = ["fast"] + (["triton"] if args.device == "cuda" and triton_available() else [])
    x = torch.randn(4, BANDS, 32, 32, device=args.device)
    res: dict[str, Any] = {}
    for impl in impls:
        torch.manual_seed(0)
        ref = SpectralAdapter(impl="reference").to(args.device).train()
        ours = copy.deepcopy(ref)
        ours.impl = impl
        r: dict[str, Any] = {}
        for label, autocast in (("float32", False), ("bf16_autocast", True)):
            if autocast and args.device != "cuda":
                continue
            outs, grads = [], []
            for m in (ref, ours):
                with torch.autocast(args.device, dtype=torch.bfloat16, enabled=autocast):
                    y = m(x)
                y.float().square().mean().backward()
                outs.append(y.float().detach())
                grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
                m.zero_grad(set_to_none=True)
            scale = outs[0].abs().max().item()
            r[label] = {
                "out_max_abs_diff_rel": (outs[0] - outs[1]).abs().max().item() / scale,
                "grad_max_abs_diff_rel": max(
                    (
                        (grads[0][n] - grads[1][n]).abs().max()
                        / grads[0][n].abs().max().clamp_min(1e-12)
                    ).item()
                    for n in grads[0]
                    # conv biases before a training-mode BatchNorm have ~zero true gradients
                    if not n.endswith("bias") or n.startswith(("1.", "4.", "7."))
                ),
            }
        sd0, sd1 = ref.state_dict(), ours.state_dict()
        r["running_stats_max_abs_diff"] = max(
            (sd0[k].float() - sd1[k].float()).abs().max().item() for k in sd0
        )
        res[impl] = r
    if args.device == "cuda":
        a = torch.randn(64, 8, device="cuda", dtype=torch.bfloat16)
        try:
            torch.mm(a.t(), a, out_dtype=torch.float32)  # type: ignore[call-arg]
            res["mm_out_dtype"] = True
        except Exception:  # noqa: BLE001
            res["mm_out_dtype"] = False
    return res


def _cycle(loader: Any) -> Any:
    """Batches of ``loader`` over and over; fails on a loader with no batch (a store smaller
    than one batch with ``drop_last``), which would otherwise spin forever."""
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise ValueError("the loader yields no batch: the store has fewer samples than a batch")


def _seconds(
    case: Case, feed: Callable[[], list[Tensor]], steps: int, first: int, clock: Clock
) -> float:
    """Wall seconds of ``steps`` steps of ``case`` on the views ``feed()`` returns."""
    t = time.perf_counter()
    for k in range(steps):
        case.step(feed(), first + k, None, clock)
    clock.sync()
    return time.perf_counter() - t


def _rate(
    case: Case, feed: Callable[[], list[Tensor]], steps: int, first: int, batch: int, clock: Clock
) -> float:
    """Samples/s of ``steps`` steps of ``case`` on the views ``feed()`` returns."""
    return round(batch * steps / _seconds(case, feed, steps, first, clock), 2)


def _gpu_counters(device: str) -> dict[str, float]:
    """Main-thread CPU seconds, the CUDA allocator's retries and its cudaMalloc calls so far
    (differences matter)."""
    out = {"thread_cpu_s": time.thread_time()}
    if device == "cuda":
        stats = torch.cuda.memory_stats()
        out["alloc_retries"] = float(stats.get("num_alloc_retries", 0))
        out["device_allocs"] = float(stats.get("num_device_alloc", 0))
    return out


def _cpu() -> dict[str, Any]:
    """The host CPU's model and hardware threads per core (Linux; empty elsewhere)."""
    out: dict[str, Any] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["model"] = line.split(":", 1)[1].strip()
                break
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        out["threads_per_core"] = sum(
            int(b) - int(a) + 1 if "-" in part else 1
            for part in siblings.strip().split(",")
            for a, _, b in [part.partition("-")]
        )
    except (OSError, ValueError):
        pass
    return out


def _workers(spec: str, method: str) -> int:
    """Loader workers for ``method`` from ``--workers``: ``N`` or ``moco=N,mae=M``."""
    if "=" not in spec:
        return int(spec)
    table = dict(part.split("=", 1) for part in spec.split(","))
    if method not in table:
        raise ValueError(f"--workers {spec!r} names no count for {method}")
    return int(table[method])


def _sync_points(step: Callable[[], Any]) -> dict[str, int]:
    """Where one call of ``step`` makes the host wait for the device: ``file:line`` of the
    innermost project frame of each synchronising call (CUDA sync debug mode), with counts."""
    found: dict[str, int] = {}
    here = str(Path(__file__).resolve().parents[1])

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if "called a synchronizing" not in str(message):  # e.g. the mode's "prototype" notice
            return
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(here)]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else filename
        key = f"{where} ({str(message).split(',')[0][:60]})"
        found[key] = found.get(key, 0) + 1

    import warnings

    try:
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().synchronize()  # the measurement's own wait, not counted
    return found


def _gpu_busy_share(
    step: Callable[[], Any], steps: int, trace: Path | None = None
) -> dict[str, float]:
    """Share of the wall time of ``steps`` calls of ``step`` during which a kernel or copy ran
    on the GPU (union of the profiler's device intervals), and the wall ms per step."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    path = trace or Path(os.environ.get("TMPDIR", "/tmp")) / f"trace_{os.getpid()}.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text()).get("traceEvents", [])
    spans = sorted(
        (e["ts"], e["ts"] + e.get("dur", 0))
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
    )
    busy, end = 0.0, -1.0
    first = spans[0][0] if spans else 0.0
    last = max((b for _, b in spans), default=0.0)
    for a, b in spans:
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    if trace is None:
        path.unlink()
    else:
        import gzip

        with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
            dst.write(src.read())
        path.unlink()
    return {
        "wall_ms_per_step": round(wall * 1e3 / steps, 1),
        "gpu_busy_share_of_device_span": round(busy / max(last - first, 1e-9), 3),
        "gpu_busy_ms_per_step": round(busy / 1e3 / steps, 1),
    }


def end_to_end(args: argparse.Namespace, methods: Any, synthetic: dict) -> dict:
    """Steps fed from a store through the ring loader and device transforms, vs synthetic batches.

    Batches are pretrain's: ``StepSampler`` (a seeded permutation per epoch) over
    ``TemporalPair`` (MoCo) or ``SingleView`` (MAE), through ``RingLoader`` (``--workers``
    processes decoding into a shared ring; on CUDA page-locked, copied on a side stream), then
    the device transforms and the ``Case`` step.  Every store file is read once first, so the
    store is in the page cache (``synth-store`` leaves it there too).  Per case: samples/s from
    the store, the synthetic rate of the same step, their ratio, the share of the timed steps
    spent waiting in ``next()`` for the loader, and the loader's settings.
    """
    if not args.data:
        return {"status": "skipped", "reason": "no --data store given"}
    try:
        from spectralearth_build.train.data import SingleView, TemporalPair
        from spectralearth_build.train.pretrain import StepSampler
        from spectralearth_build.train.ring import RingLoader
        from spectralearth_build.train.transforms import DeviceTransform, recipe
    except Exception as exc:  # noqa: BLE001
        return {"status": "skipped", "reason": f"datasets/transforms unavailable: {exc}"}
    import dataclasses

    files = [f for f in Path(args.data).rglob("*") if f.is_file()]
    for f in files:  # into the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    clock = Clock(args.device)
    out: dict[str, Any] = {
        "status": "ok",
        "store": str(args.data),
        "store_bytes": sum(f.stat().st_size for f in files),
        "store_in_page_cache": True,
        "loader": "RingLoader",
        "sampler": "StepSampler",
        "cases": [],
    }
    wanted = args.methods.split(",")
    for method in [m for m in ("moco", "mae") if m in wanted]:
        batch = args.e2e_batch
        r: dict[str, Any] = {
            "model": "spec_vit_small" if not args.tiny else "tiny",
            "method": method,
            "batch": batch,
        }
        loader = None
        try:
            ds = (TemporalPair if method == "moco" else SingleView)(args.data)
            if len(ds) < batch:
                raise ValueError(f"the store has {len(ds)} locations, fewer than a batch")
            n_batches = args.warmup + args.e2e_steps + (DIAGNOSE_STEPS if args.diagnose else 0)
            sampler = StepSampler(len(ds), batch, 1, 1, 0, 0, 0, n_batches)
            dev = args.device if args.device == "cuda" else None
            loader = RingLoader(
                ds,
                sampler,
                num_workers=_workers(args.workers, method),
                device=dev,
                nice=args.worker_nice,
                slots=args.slots,
            )
            aug = dataclasses.replace(recipe(method), size=args.px)
            # as pretrain: bf16 views on CUDA unless the loss reads pixels (MAE)
            half = args.device == "cuda" and method != "mae"
            tf = DeviceTransform.from_dataset(
                ds, augment=aug, device=args.device, dtype=torch.bfloat16 if half else torch.float32
            )
            r["impl"] = getattr(args, "e2e_impl", "ours")  # the synthetic baseline's step
            case = Case(args, args.models[0], method, r["impl"], methods)
            it = iter(loader)

            def batch_views(it: Any = it, tf: Any = tf, pair: bool = method == "moco"):
                t = time.perf_counter()
                img = next(it)["image"]
                wait = time.perf_counter() - t
                return (list(tf.pair(img)) if pair else [tf(img)]), wait

            for s in range(args.warmup):
                case.step(batch_views()[0], s, None, clock)
            clock.sync()
            steps = args.e2e_steps
            # the same step object on synthetic batches before and after the store-fed steps:
            # on-device float views (the step benchmark's input), then on-device int16 batches
            # through the transforms
            n_views = case.method.n_views
            syn_views = synthetic_views(n_views, batch, args.px, args.device)
            shape = (batch, 2) if method == "moco" else (batch,)
            raw = torch.randn(*shape, BANDS, args.px, args.px, device=args.device) * 500 + 2000
            raw = raw.to(torch.int16)
            r["transforms"] = "fused kernel" if tf.uses_fused(raw) else "two products"
            pair = method == "moco"
            first = args.warmup + steps
            before = _rate(case, lambda v=syn_views: v, steps, first, batch, clock)
            waits: list[float] = []

            def from_store(waits: list[float] = waits) -> list[Tensor]:
                views, wait = batch_views()
                waits.append(wait)
                return views

            c0 = _gpu_counters(args.device)
            s0 = dict(loader.stats)
            elapsed = _seconds(case, from_store, steps, args.warmup, clock)
            c1 = _gpu_counters(args.device)
            s1 = dict(loader.stats)
            waited = sum(waits)
            r["steps"] = steps
            r["main_thread_cpu_ms_per_step"] = round(
                (c1["thread_cpu_s"] - c0["thread_cpu_s"]) * 1e3 / steps, 1
            )
            if "alloc_retries" in c1:
                r["alloc_retries"] = c1["alloc_retries"] - c0["alloc_retries"]
                r["device_allocs"] = c1["device_allocs"] - c0["device_allocs"]
            r["samples_per_s"] = round(batch * steps / elapsed, 2)
            after = _rate(case, lambda v=syn_views: v, steps, first, batch, clock)
            r["synthetic_same_step_before_after"] = [before, after]
            r["synthetic_same_step_samples_per_s"] = round((before + after) / 2, 2)

            def transformed(t: Any = tf, x: Tensor = raw, two: bool = pair) -> list[Tensor]:
                return list(t.pair(x)) if two else [t(x)]

            r["synthetic_with_transforms_samples_per_s"] = _rate(
                case, transformed, steps, first, batch, clock
            )
            r["ratio_to_synthetic_same_step"] = round(
                r["samples_per_s"] / r["synthetic_same_step_samples_per_s"], 3
            )
            r["ratio_to_synthetic_with_transforms"] = round(
                r["samples_per_s"] / r["synthetic_with_transforms_samples_per_s"], 3
            )
            syn = synthetic.get((method, batch))
            if syn:
                r["synthetic_samples_per_s"] = syn
                r["ratio_to_synthetic"] = round(r["samples_per_s"] / syn, 3)
            r["loader_wait_share"] = round(waited / elapsed, 4)
            copy_s = s1["copy_s"] - s0["copy_s"]  # copies retired during the timed steps
            if copy_s > 0:
                r["h2d_copy_gbps"] = round((s1["copy_bytes"] - s0["copy_bytes"]) / copy_s / 1e9, 2)
                r["h2d_copy_share"] = round(copy_s / elapsed, 3)
            r["loader_settings"] = loader.settings()
            if args.diagnose and args.device == "cuda":
                r["diagnosis"] = _diagnose(args, case, from_store, transformed, method)
            del case, it
        except Exception as exc:  # noqa: BLE001
            r["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if loader is not None:
                loader.close()
        free()
        out["cases"].append(r)
    return out


def loader_alone(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Views/s of the ring loader alone (no training step) from ``--data`` to the device, per
    number of workers in ``--loader-workers``, and one view's decode time in this process."""
    from spectralearth_build.train.data import SingleView
    from spectralearth_build.train.pretrain import StepSampler
    from spectralearth_build.train.ring import RingLoader

    ds = SingleView(args.data)
    batch, n, warm = args.e2e_batch, args.e2e_steps, 2
    rows: list[dict[str, Any]] = []
    sample = ds.empty_sample()
    n_keys = min(len(ds), 64)
    t, c = time.perf_counter(), time.thread_time()
    for k in range(n_keys):
        ds.sample_into(k, sample)
    rows.append(
        {
            "workers": "in process",
            "ms_per_view_wall": round((time.perf_counter() - t) * 1e3 / n_keys, 3),
            "ms_per_view_cpu": round((time.thread_time() - c) * 1e3 / n_keys, 3),
        }
    )
    dev = args.device if args.device == "cuda" else None
    for workers in args.loader_workers:
        sampler = StepSampler(len(ds), batch, 1, 1, 0, 0, 0, warm + n)
        with RingLoader(ds, sampler, num_workers=workers, device=dev) as loader:
            it = iter(loader)
            for _ in range(warm):
                next(it)
            t = time.perf_counter()
            for _ in range(n):
                next(it)
            if dev:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t
            rows.append(
                {
                    "workers": workers,
                    "views_per_s": round(batch * n / elapsed, 1),
                    "views_per_s_per_worker": round(batch * n / elapsed / workers, 1),
                }
            )
        print(json.dumps({"loader_alone": rows[-1]}), flush=True)
    return rows


def _diagnose(
    args: argparse.Namespace,
    case: Case,
    from_store: Callable[[], list[Tensor]],
    transformed: Callable[[], list[Tensor]],
    method: str,
) -> dict[str, Any]:
    """Why store-fed steps are slower than transform-fed ones: host syncs per step, the GPU's
    busy share under the profiler, and the transform-fed rate beside CPU load like the loader's."""
    from host_to_device import memory_load  # a sibling script, as plan_full_scale's imports

    clock = Clock(args.device)
    first = 10_000
    # the ring's copy without its workers: each step copies a batch's bytes from page-locked
    # memory on a side stream, which the next step waits for
    nbytes = args.e2e_batch * (2 if method == "moco" else 1) * BANDS * args.px**2 * 2
    host = torch.ones(nbytes, dtype=torch.uint8).pin_memory()
    dev_buf = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    side = torch.cuda.Stream()
    last: list[Any] = []

    def transformed_with_copy(piece: int, after_queued: bool) -> list[Tensor]:
        consumer = torch.cuda.current_stream()
        if last:
            consumer.wait_event(last.pop())
        if after_queued:
            side.wait_stream(consumer)
        with torch.cuda.stream(side):
            for a in range(0, nbytes, piece):
                dev_buf[a : a + piece].copy_(host[a : a + piece], non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(side)
        last.append(ev)
        return transformed()

    out: dict[str, Any] = {"copy_bytes_per_step": nbytes, "transforms_fed_with_copy": {}}
    variants = {  # name: (bytes per piece, the copy waits for the work queued before it)
        "after_queued_work_one_piece": (nbytes, True),
        "after_queued_work_64_mib_pieces": (64 << 20, True),
        "at_once_one_piece": (nbytes, False),  # as the ring loader copies
    }
    for name, (piece, after) in variants.items():
        out["transforms_fed_with_copy"][f"{name}_samples_per_s"] = _rate(
            case,
            lambda p=piece, w=after: transformed_with_copy(p, w),
            args.e2e_steps,
            first,
            args.e2e_batch,
            clock,
        )
        torch.cuda.synchronize()
        last.clear()
    feeds = {"store": from_store, "transforms": transformed}
    # where the host spends a transform-fed step (no host sync inside: the host runs ahead, so
    # wall time is queueing work, or waiting for room in the launch queue)
    laps = Laps()
    for k in range(args.e2e_steps):
        laps.start()
        views = transformed()
        laps("transforms")
        case.step(views, first + k, None, clock, lap=laps)
        laps.steps += 1
    clock.sync()
    out["host_ms_per_step_by_phase"] = laps.summary()
    out.update({"sync_points": {}, "profile": {}})
    for name, feed in feeds.items():
        out["sync_points"][name] = _sync_points(lambda f=feed: case.step(f(), first, None, clock))
    trace_dir = Path(args.trace_dir) if args.trace_dir else None
    for name, feed in feeds.items():
        trace = trace_dir / f"trace_{method}_{name}.json" if trace_dir else None
        out["profile"][name] = _gpu_busy_share(
            lambda f=feed: case.step(f(), first, None, clock), 3, trace
        )
    n_burn = _workers(args.workers, method)
    with memory_load(n_burn):
        out["transforms_fed_with_cpu_load_samples_per_s"] = _rate(
            case, transformed, args.e2e_steps, first, args.e2e_batch, clock
        )
    out["cpu_load"] = f"{n_burn} processes streaming 256 MiB buffers"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny ViT only, 16 px, batch 2, 1 step")
    ap.add_argument("--models", default=None, help="spec_vit_small,spec_resnet50 (default)")
    ap.add_argument("--batches", default=None, help="comma-separated (default 64,256)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--methods", default="plain,moco,dino,mae")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time our step with the trunks compiled (as pretrain's train.compile)",
    )
    ap.add_argument("--compile-adapter", action="store_true", help="also time a compiled adapter")
    ap.add_argument("--recompute", action="store_true", help="our adapter recomputes layer 1")
    ap.add_argument(
        "--adapter",
        default="auto",
        choices=["auto", "fast", "triton"],
        help="our adapter (auto: triton on CUDA where Triton imports, else fast)",
    )
    ap.add_argument("--skip-adapter", action="store_true")
    ap.add_argument("--data", default=None, help="a built store for the end-to-end mode")
    ap.add_argument(
        "--e2e-only", action="store_true", help="only the end-to-end mode (needs --data)"
    )
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="end to end: also host syncs per step, GPU busy share, rate under CPU load",
    )
    ap.add_argument("--trace-dir", default=None, help="with --diagnose: keep profiler traces")
    ap.add_argument("--e2e-batch", type=int, default=None)
    ap.add_argument("--e2e-steps", type=int, default=None, help="timed steps (default 4x --steps)")
    ap.add_argument(
        "--workers",
        default=str(min(12, os.cpu_count() or 1)),
        help="end to end: loader workers, N or per method (moco=10,mae=14)",
    )
    ap.add_argument("--worker-nice", type=int, default=0, help="end to end: loader workers' nice")
    ap.add_argument("--slots", type=int, default=3, help="end to end: the ring loader's slots")
    ap.add_argument(
        "--loader-workers",
        default=None,
        help="end to end: also time the ring loader alone with these worker counts (4,8,14)",
    )
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip cases after this long")
    ap.add_argument("--out", default=str(ROOT / "results" / "train_throughput.json"))
    args = ap.parse_args()
    tiny = args.tiny
    args.px = 16 if tiny else 128
    args.model_kw = {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 16} if tiny else {}
    default_models = "spec_vit_small" if tiny else "spec_vit_small,spec_resnet50"
    args.models = (args.models or default_models).split(",")
    batches = [int(b) for b in (args.batches or ("2" if tiny else "64,256")).split(",")]
    args.steps = args.steps or (1 if tiny else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    args.e2e_batch = args.e2e_batch or batches[-1]
    args.e2e_steps = args.e2e_steps or 4 * args.steps
    args.loader_workers = (
        [int(w) for w in args.loader_workers.split(",")] if args.loader_workers else []
    )
    if args.adapter == "auto":
        args.adapter = "triton" if args.device == "cuda" and triton_available() else "fast"
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()

    dev_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    peak = next((v for k, v in PEAK_BF16.items() if k in dev_name), None)
    methods = method_factory(tiny)
    import timm

    result: dict[str, Any] = {
        "device": args.device,
        "device_name": dev_name or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "tiny": tiny,
        "image_px": args.px,
        "autocast": "bf16" if args.device == "cuda" else "off (float32)",
        "peak_flops": peak,
        "methods_source": methods[1],
        "ours": {
            "adapter": args.adapter,
            "recompute": args.recompute,
            "compile": "trunks (models.compile_trunks), as ours+compile" if args.compile else False,
            "optimiser": "fused" if args.device == "cuda" else "default",
        },  # fmt: skip
        "steps": args.steps,
        "warmup": args.warmup,
        "cases": [],
        "adapter_alone": [],
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        out_path.write_text(json.dumps(result, indent=1))

    plan = [
        ("spec_vit_small", m) for m in args.methods.split(",") if "spec_vit_small" in args.models
    ]
    if "moco" in args.methods and "spec_resnet50" in args.models:
        plan.append(("spec_resnet50", "moco"))
    flops: dict[tuple[str, str], float | None] = {}
    if args.e2e_only:
        plan, batches, args.skip_adapter = [], [args.e2e_batch], True
    for model, method in plan:
        try:
            flops[(model, method)] = count_flops(args, model, method, methods)
        except Exception as exc:  # noqa: BLE001
            flops[(model, method)] = None
            result.setdefault("flop_errors", []).append(f"{model}/{method}: {exc}")
        free()
    result["ref_flops_per_sample"] = {f"{m}/{k}": v for (m, k), v in flops.items()}
    try:
        result["adapter_equality"] = (
            "skipped: --e2e-only" if args.e2e_only else equality_check(args)
        )
    except Exception as exc:  # noqa: BLE001
        result["adapter_equality"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({"adapter_equality": result["adapter_equality"]}), flush=True)
    if not args.skip_adapter:
        for b in batches:
            result["adapter_alone"] += adapter_alone(args, b)
            save()
    impls = ["reference", "ours"] + (["ours+compile"] if args.compile else [])
    synthetic: dict[tuple[str, int], float] = {}
    for batch in batches:
        for model, method in plan:
            for impl in impls:
                if time.perf_counter() - t_start > args.budget_s:
                    skip = {"model": model, "method": method, "impl": impl, "batch": batch}
                    result["cases"].append({**skip, "error": "skipped: time budget"})
                    continue
                r = run_case(
                    args, model, method, impl, batch, methods, flops[(model, method)], peak
                )
                print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
                result["cases"].append(r)
                if impl == impls[-1] and model == "spec_vit_small" and "samples_per_s" in r:
                    synthetic[(method, batch)] = r["samples_per_s"]  # the end-to-end baseline
                save()
    # speedups and the targets
    by = {(c["model"], c["method"], c["batch"], c["impl"]): c for c in result["cases"]}
    speed = {}
    for (m, k, b, impl), c in by.items():
        ref = by.get((m, k, b, "reference"), {})
        if impl in OURS and "samples_per_s" in c and "samples_per_s" in ref:
            key = f"{m}/{k}/{b}" + ("/compiled" if impl == "ours+compile" else "")
            speed[key] = round(c["samples_per_s"] / ref["samples_per_s"], 2)
    result["speedup_ours_vs_reference"] = speed
    ad = {(a["variant"], a["batch"]): a for a in result["adapter_alone"]}
    big = batches[-1]
    result["targets"] = {
        "vit_s_step_speedup_at_largest_batch": {
            k: v for k, v in speed.items() if k.startswith("spec_vit_small") and f"/{big}" in k
        },
        "target_step_speedup": 3.0,
        "adapter_fwd_bwd_speedup_at_largest_batch": ad.get((args.adapter, big), {}).get(
            "speedup_vs_reference"
        ),
        "target_adapter_speedup": 5.0,
    }
    args.e2e_impl = impls[-1]
    result["end_to_end"] = end_to_end(args, methods, synthetic)
    if args.loader_workers and args.data:
        result["loader_alone"] = loader_alone(args)  # the store is in the page cache now
    save()
    print(json.dumps({"speedup": speed, "targets": result["targets"]}, indent=1))
    print(f"wrote {out_path} in {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
