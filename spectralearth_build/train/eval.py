"""Frozen-encoder evaluation on the label tasks: CORINE multi-label, CDL / NLCD segmentation.

Strategy.  The encoder is loaded (our pretraining checkpoints or SpectralEarth's, both through
:func:`~.models.load_pretrained`), put in eval mode (BatchNorm statistics frozen, unlike
SpectralEarth's probe) and run once over the train and test splits of the task: pooled features
``(N, D)`` for CORINE, dense features ``(N, D, h, w)`` for segmentation (ViT tokens laid back on
their grid, ResNet maps), kept in memory and reused by every probe and label fraction.  The
first timestamp of each location is its image; inputs are standardised with the training
statistics stored in the checkpoint (else the dataset's) and resized to the model's input size
when it has a fixed one.

Probes are fit on seeded subsets of the train split (1%, 10%, 100% by default, at least one
sample) and scored on the test split:

- CORINE: a linear layer and a small MLP (``D -> 256 -> 19``, ReLU) on standardised features
  (BCE, AdamW, full batch), and a scikit-learn random forest; metrics micro / macro F1 and F2,
  micro mAP, Hamming loss, micro / macro precision (threshold 0.5);
- CDL / NLCD: a linear (1x1 conv) or conv head (3x3 conv, BN, ReLU, 1x1) on the dense features,
  logits upsampled bilinearly to the mask (cross-entropy with the task's ignore index); metrics
  macro mIoU (classes present in the test masks or predictions), micro mIoU (SpectralEarth's
  ``average="micro"`` Jaccard) and pixel accuracy.

Writes ``eval_<task>.json`` and ``features_<task>.png`` (UMAP of the pooled features coloured by
class; t-SNE when there are fewer than 50 samples).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pretrain import CHECKPOINT_FORMAT, TrainInputError, make_backbone

TASKS = ("corine", "cdl", "nlcd")


@dataclass(frozen=True)
class EvalConfig:
    """Probes, label fractions and their training."""

    task: str = "corine"
    scheme: str = "spatial"
    """Split scheme of the labelled dataset: ``spatial`` (leak-free) or ``random``."""
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    """Shares of the train split the probes are fit on."""
    probes: tuple[str, ...] = ("linear", "mlp", "rf")
    """CORINE probes."""
    seg_head: str = "linear"
    """CDL / NLCD head: ``linear`` or ``conv``."""
    epochs: int = 200
    """Full-batch epochs of the CORINE probes."""
    seg_epochs: int = 50
    lr: float = 1e-2
    batch_size: int = 32
    """Encoder batch for feature extraction and the segmentation head."""
    rf_trees: int = 100
    seed: int = 0
    plot: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


# -- encoders ------------------------------------------------------------------------------------
def load_encoder(
    checkpoint: str | Path | None, backbone: str | None = None, backbone_kw: dict | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen encoder of ``checkpoint`` and facts about it.

    Args:
        checkpoint: a ``spectralearth-train pretrain`` checkpoint (backbone from its config), a
            SpectralEarth / timm-style checkpoint (needs ``backbone``), or None for a randomly
            initialised ``backbone`` (a baseline).
        backbone: backbone name; overrides the checkpoint's.
        backbone_kw: backbone options; override the checkpoint's.
    """
    from .models import load_pretrained

    info: dict[str, Any] = {"checkpoint": str(checkpoint) if checkpoint else None}
    state: Any = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise TrainInputError(f"{path}: no such checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            cfg = state["config"]["backbone"]
            backbone = backbone or cfg["name"]
            kw = {k: v for k, v in cfg.items() if k != "name"}
            backbone_kw = {**kw, **(backbone_kw or {})}
            info.update(
                method=state["config"]["method"]["name"],
                step=state["step"],
                band_mean=state.get("band_mean"),
                band_std=state.get("band_std"),
            )
            state = state["method"]
    if backbone is None:
        raise TrainInputError("name the backbone (--backbone) of a checkpoint not written here")
    model = make_backbone(backbone, **(backbone_kw or {}))
    if state is not None:
        report = load_pretrained(model, state)
        info.update(prefix=report.prefix, loaded=len(report.loaded), missing=list(report.missing))
    info.update(backbone=backbone, backbone_kw=backbone_kw or {})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def _input_size(model: nn.Module) -> int | None:
    size = getattr(model, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return int(size) if size else None


@torch.no_grad()
def extract_features(
    model: Any,
    dataset: Any,
    mean: np.ndarray,
    std: np.ndarray,
    dense: bool,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor | None, list[np.ndarray]]:
    """Pooled ``(N, D)`` and (``dense``) ``(N, D, h, w)`` float32 features and the targets.

    ``dataset`` is a task view (``ds[i]["image"]`` ``(T, C, P, P)``, ``ds.label_at(i)``).
    """
    mu = torch.as_tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
    sd = torch.as_tensor(std, dtype=torch.float32, device=device).clamp_min(1e-6)[
        None, :, None, None
    ]
    size = _input_size(model)
    model.to(device).eval()
    pooled, maps, labels = [], [], []
    for lo in range(0, len(dataset), batch_size):
        idx = range(lo, min(lo + batch_size, len(dataset)))
        x = np.stack([dataset.read_views(i, [0])[0] for i in idx])
        labels += [dataset.label_at(i) for i in idx]
        xt = (torch.from_numpy(x).to(device, torch.float32) - mu) / sd
        if size and xt.shape[-1] != size:
            xt = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
        feats = model.forward_features(xt)
        pooled.append(model.forward_head(feats, pre_logits=True).float().cpu())
        if dense:
            maps.append(_dense(model, feats).float().cpu())
    d_map = torch.cat(maps) if dense else None
    return torch.cat(pooled), d_map, labels


def _dense(model: Any, feats: Tensor) -> Tensor:
    """``(B, D, h, w)`` from ViT tokens ``(B, prefix + h*w, D)`` or a ResNet map."""
    if feats.ndim == 4:
        return feats
    n_prefix = int(getattr(getattr(model, "vit_core", model), "num_prefix_tokens", 1))
    tokens = feats[:, n_prefix:]
    side = int(round(tokens.shape[1] ** 0.5))
    return tokens.transpose(1, 2).reshape(feats.shape[0], -1, side, side)


# -- metrics -------------------------------------------------------------------------------------
def multilabel_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """CORINE metrics of targets ``y`` and scores ``scores`` ``(N, K)`` (probabilities)."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        fbeta_score,
        hamming_loss,
        precision_score,
    )

    pred = (scores >= threshold).astype(int)
    y = y.astype(int)
    out = {
        "micro_f1": f1_score(y, pred, average="micro", zero_division=0),
        "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
        "micro_f2": fbeta_score(y, pred, beta=2, average="micro", zero_division=0),
        "macro_f2": fbeta_score(y, pred, beta=2, average="macro", zero_division=0),
        "micro_map": average_precision_score(y, scores, average="micro") if y.any() else 0.0,
        "hamming_loss": hamming_loss(y, pred),
        "micro_precision": precision_score(y, pred, average="micro", zero_division=0),
        "macro_precision": precision_score(y, pred, average="macro", zero_division=0),
    }
    return {k: float(v) for k, v in out.items()}


def segmentation_metrics(conf: np.ndarray) -> dict[str, float]:
    """Metrics of a ``(K, K)`` confusion matrix (rows truth, columns prediction)."""
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    return {
        "macro_miou": float((tp[present] / union[present]).mean()) if present.any() else 0.0,
        "micro_miou": float(tp.sum() / union.sum()) if union.sum() else 0.0,
        "pixel_accuracy": float(tp.sum() / conf.sum()) if conf.sum() else 0.0,
    }


# -- probes --------------------------------------------------------------------------------------
def _subset(n: int, fraction: float, seed: int) -> np.ndarray:
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng([seed, int(fraction * 1e6)]).permutation(n)[:k])


def _fit_torch_probe(
    model: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float, seed: int
) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()
    return model.eval()


def corine_probes(
    train_x: Tensor, train_y: np.ndarray, test_x: Tensor, test_y: np.ndarray, cfg: EvalConfig
) -> dict[str, dict[str, dict[str, float]]]:
    """``{probe: {fraction: metrics}}`` of the CORINE probes."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    k = train_y.shape[1]
    results: dict[str, dict[str, dict[str, float]]] = {p: {} for p in cfg.probes}
    for frac in cfg.fractions:
        sel = _subset(len(train_x), frac, cfg.seed)
        xs, ys = (train_x[sel] - mu) / sd, train_y[sel]
        xt = (test_x - mu) / sd
        for probe in cfg.probes:
            if probe in ("linear", "mlp"):
                torch.manual_seed(cfg.seed)
                d = xs.shape[1]
                net: nn.Module = (
                    nn.Linear(d, k)
                    if probe == "linear"
                    else nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, k))
                )
                net = _fit_torch_probe(
                    net, xs, torch.as_tensor(ys, dtype=torch.float32), cfg.epochs, cfg.lr, cfg.seed
                )
                with torch.no_grad():
                    scores = torch.sigmoid(net(xt)).numpy()
            elif probe == "rf":
                scores = _random_forest(xs.numpy(), ys, xt.numpy(), cfg)
            else:
                raise TrainInputError(f"unknown probe {probe!r} (linear, mlp, rf)")
            results[probe][f"{frac:g}"] = {
                **multilabel_metrics(test_y, scores),
                "n_train": len(sel),
            }
    return results


def _random_forest(x: np.ndarray, y: np.ndarray, xt: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=cfg.rf_trees, random_state=cfg.seed, n_jobs=1)
    rf.fit(x, y.astype(int))
    probs = rf.predict_proba(xt)
    probs = probs if isinstance(probs, list) else [probs]
    out = np.zeros((len(xt), y.shape[1]))
    for j, (p, classes) in enumerate(zip(probs, rf.classes_)):
        if 1 in list(classes):
            out[:, j] = p[:, list(classes).index(1)]
    return out


def _seg_head(kind: str, d: int, k: int) -> nn.Module:
    if kind == "linear":
        return nn.Conv2d(d, k, 1)
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(d, 128, 3, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, k, 1),
        )
    raise TrainInputError(f"unknown segmentation head {kind!r} (linear, conv)")


def segmentation_probes(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    n_classes: int,
    ignore: int,
    cfg: EvalConfig,
    device: torch.device,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{head: {fraction: metrics}}`` of a segmentation head on dense features."""
    mu = train_f.mean((0, 2, 3), keepdim=True)
    sd = train_f.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    size = train_y.shape[-2:]
    out: dict[str, dict[str, float]] = {}
    for frac in cfg.fractions:
        sel = torch.as_tensor(_subset(len(train_f), frac, cfg.seed))
        torch.manual_seed(cfg.seed)
        head = _seg_head(cfg.seg_head, train_f.shape[1], n_classes).to(device)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(cfg.seed)
        head.train()
        for _ in range(cfg.seg_epochs):
            order = sel[torch.randperm(len(sel), generator=g)]
            for lo in range(0, len(order), cfg.batch_size):
                b = order[lo : lo + cfg.batch_size]
                x = ((train_f[b] - mu) / sd).to(device)
                y = train_y[b].to(device)
                logits = F.interpolate(head(x), size=size, mode="bilinear", align_corners=False)
                if (y != ignore).any():
                    opt.zero_grad()
                    F.cross_entropy(logits, y, ignore_index=ignore).backward()
                    opt.step()
        head.eval()
        conf = np.zeros((n_classes, n_classes), dtype=np.int64)
        with torch.no_grad():
            for lo in range(0, len(test_f), cfg.batch_size):
                x = ((test_f[lo : lo + cfg.batch_size] - mu) / sd).to(device)
                y = test_y[lo : lo + cfg.batch_size].to(device)
                pred = F.interpolate(head(x), size=size, mode="bilinear", align_corners=False)
                pred = pred.argmax(1)
                valid = y != ignore
                idx = (y[valid] * n_classes + pred[valid]).cpu().numpy()
                conf += np.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)
        out[f"{frac:g}"] = {**segmentation_metrics(conf), "n_train": int(len(sel))}
    return {cfg.seg_head: out}


# -- plot ----------------------------------------------------------------------------------------
def plot_features(
    feats: np.ndarray, classes: np.ndarray, names: list[str], path: Path, seed: int
) -> str:
    """Plot a 2-D embedding of ``feats`` ``(N, D)`` coloured by ``classes``; returns its kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(feats)
    if n >= 50:
        import umap

        xy = umap.UMAP(random_state=seed, n_jobs=1).fit_transform(feats)
        how = "umap"
    elif n >= 5:
        from sklearn.manifold import TSNE

        xy = TSNE(
            perplexity=max(1.0, min(30.0, (n - 1) / 3)), random_state=seed, init="pca"
        ).fit_transform(feats)
        how = "tsne"
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=min(2, n, feats.shape[1])).fit_transform(feats)
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        how = "pca"
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for c in np.unique(classes):
        m = classes == c
        label = names[c] if 0 <= c < len(names) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=12, label=label)
    ax.set_title(f"features ({how}), coloured by class")
    ax.legend(fontsize=6, markerscale=1, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return how


# -- entry point ---------------------------------------------------------------------------------
def evaluate(
    data: str | Path,
    cfg: EvalConfig,
    out: str | Path,
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    backbone_kw: dict | None = None,
    encoder: nn.Module | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate a frozen encoder on ``cfg.task`` of the labelled dataset ``data``.

    Args:
        data: dataset folder with paired labels.
        cfg: probes and fractions.
        out: folder for ``eval_<task>.json`` and the feature plot.
        checkpoint: see :func:`load_encoder`.
        backbone: see :func:`load_encoder`.
        backbone_kw: see :func:`load_encoder`.
        encoder: an already built encoder instead (used as is, frozen).
        device: default CUDA if available, else CPU.

    Returns:
        The JSON written.
    """
    from ..dataset import open_dataset

    if cfg.task not in TASKS:
        raise TrainInputError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    if encoder is None:
        encoder, info = load_encoder(checkpoint, backbone, backbone_kw)
    else:
        encoder.eval()
        info = {"checkpoint": None, "backbone": type(encoder).__name__}
    train: Any = open_dataset(data, task=cfg.task, split="train", scheme=cfg.scheme)
    test: Any = open_dataset(data, task=cfg.task, split="test", scheme=cfg.scheme)
    if len(train) == 0 or len(test) == 0:
        raise TrainInputError(
            f"{data}: task {cfg.task} has {len(train)} train and {len(test)} test samples "
            f"in the {cfg.scheme} split; both must be non-empty"
        )
    mean = np.asarray(info.get("band_mean") or train.band_mean)
    std = np.asarray(info.get("band_std") or train.band_std)
    dense = cfg.task != "corine"
    tr_x, tr_map, tr_lab = extract_features(encoder, train, mean, std, dense, dev, cfg.batch_size)
    te_x, te_map, te_lab = extract_features(encoder, test, mean, std, dense, dev, cfg.batch_size)
    t_feat = time.perf_counter() - t0
    names = list(train.classes)
    if not dense:
        tr_y, te_y = np.stack(tr_lab), np.stack(te_lab)
        results = corine_probes(tr_x, tr_y, te_x, te_y, cfg)
        colour_tr, colour_te = tr_y.argmax(1), te_y.argmax(1)
    else:
        assert tr_map is not None and te_map is not None
        ignore = int(train.ignore_index)
        tr_m = torch.as_tensor(np.stack(tr_lab))
        te_m = torch.as_tensor(np.stack(te_lab))
        results = segmentation_probes(tr_map, tr_m, te_map, te_m, len(names), ignore, cfg, dev)
        colour_tr, colour_te = _majority(tr_m, ignore), _majority(te_m, ignore)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "task": cfg.task,
        "encoder": {k: v for k, v in info.items() if k not in ("band_mean", "band_std")},
        "config": cfg.to_dict(),
        "n_train": len(train),
        "n_test": len(test),
        "feature_dim": int(tr_x.shape[1]),
        "classes": names,
        "results": results,
        "feature_seconds": round(t_feat, 2),
        "device": str(dev),
    }
    if cfg.plot:
        png = out / f"features_{cfg.task}.png"
        feats = torch.cat([tr_x, te_x]).numpy()
        how = plot_features(feats, np.concatenate([colour_tr, colour_te]), names, png, cfg.seed)
        report["plot"] = {"path": str(png), "method": how}
    (out / f"eval_{cfg.task}.json").write_text(json.dumps(report, indent=2))
    return report


def _majority(masks: Tensor, ignore: int) -> np.ndarray:
    """Most frequent labelled class of each mask (``ignore`` if none)."""
    out = []
    for m in masks:
        v = m[m != ignore]
        out.append(int(torch.bincount(v).argmax()) if len(v) else ignore)
    return np.asarray(out)
