"""Loading SpectralEarth's and our checkpoints into a backbone.

A checkpoint may be a bare ``state_dict``, a Lightning checkpoint (``{"state_dict": ...}``) or a
training checkpoint holding the weights under ``"model"``; its keys may carry wrapper prefixes
(``model.``, ``backbone.``, ``encoder.``, ``module.`` from DDP, ``_orig_mod.`` from
``torch.compile``, in any chain). :func:`load_pretrained` tries every prefix chain found in the
file and keeps the one under which most keys name a parameter of the model, loads those keys,
and reports what is missing and what is left over. Published checkpoints are loaded with
``strict=False`` in SpectralEarth's code, so a mismatch there passes silently; here a missing
*encoder* key (anything but the classification head and BatchNorm's ``num_batches_tracked``) or
a shape mismatch raises :class:`CheckpointError` naming the keys, unless
``strict_encoder=False``.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError

WRAPPER_PREFIXES: tuple[str, ...] = ("model.", "backbone.", "encoder.", "module.", "_orig_mod.")
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict")
#: parameters that are not part of the encoder: classification heads
HEAD_PREFIXES: tuple[str, ...] = ("vit_core.head.", "resnet.fc.", "head.", "fc.")
_PREFIX_RE = re.compile("^(?:" + "|".join(re.escape(p) for p in WRAPPER_PREFIXES) + ")*")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: model keys filled from the checkpoint.
        missing: model keys the checkpoint did not provide.
        unexpected: checkpoint keys (after stripping) that name nothing in the model.
        prefix: the wrapper prefix stripped from the checkpoint keys ("" if none).
        ignored: number of checkpoint keys without that prefix (other modules of a training
            checkpoint, e.g. a momentum encoder or projection heads).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    prefix: str
    ignored: int

    @property
    def missing_encoder(self) -> tuple[str, ...]:
        """Missing keys that belong to the encoder (not a head, not ``num_batches_tracked``)."""
        return tuple(k for k in self.missing if is_encoder_key(k))

    def to_dict(self) -> dict[str, Any]:
        return {
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "prefix": self.prefix,
            "ignored": self.ignored,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadReport:
        return cls(
            loaded=tuple(d["loaded"]),
            missing=tuple(d["missing"]),
            unexpected=tuple(d["unexpected"]),
            prefix=str(d["prefix"]),
            ignored=int(d["ignored"]),
        )

    def summary(self) -> str:
        """One line: counts and the first few missing / unexpected keys."""
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.prefix:
            parts.append(f"stripped prefix {self.prefix!r}")
        if self.missing:
            parts.append(f"missing {len(self.missing)} ({_names(self.missing)})")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} ({_names(self.unexpected)})")
        if self.ignored:
            parts.append(f"ignored {self.ignored} keys of other modules")
        return "; ".join(parts)


def is_encoder_key(key: str) -> bool:
    """True for keys that a loaded encoder must have (heads and BN counters excluded)."""
    return not (key.startswith(HEAD_PREFIXES) or key.endswith("num_batches_tracked"))


def _names(keys: tuple[str, ...] | list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def read_state_dict(path: str | Path, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from Lightning / training containers.

    Args:
        path: a file written by ``torch.save``.
        weights_only: refuse pickled objects other than tensors and plain containers (safe for
            files of unknown origin); pass False for trusted Lightning files that pickle configs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        hint = " (if the file is trusted, load it with weights_only=False)" if weights_only else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the checkpoint{hint}: {first}") from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor mapping inside a checkpoint object (Lightning, ``{"model": ...}``, bare)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_map(obj):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_map(obj):
        raise CheckpointError(
            f"{where}: no state_dict found (expected a mapping of tensors, or one under "
            f"{', '.join(repr(k) for k in CONTAINER_KEYS)})"
        )
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_tensor_map(obj: Mapping[Any, Any]) -> bool:
    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= len(values) / 2


def _unwrap_model(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def match_prefix(keys: list[str], model_keys: set[str]) -> str:
    """The wrapper-prefix chain under which most checkpoint keys name a model key."""
    votes: Counter[str] = Counter()
    for key in keys:
        chain = _PREFIX_RE.match(key)
        full = chain.group(0) if chain else ""
        # every shorter chain too: "model.backbone.x" may mean prefix "model." + key "backbone.x"
        cut = 0
        candidates = [""]
        for part in re.findall("|".join(re.escape(p) for p in WRAPPER_PREFIXES), full):
            cut += len(part)
            candidates.append(full[:cut])
        for cand in candidates:
            if key[len(cand) :] in model_keys:
                votes[cand] += 1
    return votes.most_common(1)[0][0] if votes else ""


def load_pretrained(
    model: nn.Module,
    path_or_state: str | Path | Mapping[str, Any],
    strict_encoder: bool = True,
    weights_only: bool = True,
) -> LoadReport:
    """Load a checkpoint into ``model`` and report missing and unexpected keys.

    Args:
        model: a backbone of this package (or any module; DDP / compiled wrappers are unwrapped).
        path_or_state: a checkpoint file, or an already loaded checkpoint object.
        strict_encoder: raise :class:`CheckpointError` if an encoder key is missing (head keys
            and ``num_batches_tracked`` may be); shape mismatches always raise.
        weights_only: see :func:`read_state_dict`.

    Returns:
        A :class:`LoadReport`.
    """
    if isinstance(path_or_state, (str, Path)):
        state = read_state_dict(path_or_state, weights_only=weights_only)
        where = str(path_or_state)
    else:
        state = unwrap_state_dict(path_or_state)
        where = "checkpoint"
    target = _unwrap_model(model)
    own = target.state_dict()
    prefix = match_prefix(list(state), set(own))
    stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ignored = len(state) - len(stripped)
    bad_shapes = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in stripped.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise CheckpointError(
            f"{where}: {len(bad_shapes)} tensors do not fit the model: {_names(bad_shapes)}"
        )
    usable = {k: v for k, v in stripped.items() if k in own}
    report = LoadReport(
        loaded=tuple(k for k in own if k in usable),
        missing=tuple(k for k in own if k not in usable),
        unexpected=tuple(k for k in stripped if k not in own),
        prefix=prefix,
        ignored=ignored,
    )
    if strict_encoder and report.missing_encoder:
        raise CheckpointError(
            f"{where}: {len(report.missing_encoder)} encoder keys missing from the checkpoint: "
            f"{_names(report.missing_encoder)} (pass strict_encoder=False to load anyway)"
        )
    target.load_state_dict(usable, strict=False)
    return report
