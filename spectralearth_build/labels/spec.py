"""What to pair: one :class:`LabelSpec` per ``--labels NAME=PATH[,key=value...]`` option.

``NAME`` is the array name in the store.  ``corine``, ``cdl`` and ``nlcd`` (or any NAME with
``preset=...``) take their kind, nodata and task from the preset; any other NAME is a generic
label and takes ``kind=categorical|continuous`` (default categorical) and its nodata from the
file or ``nodata=``.  Other keys: ``year=`` (default: the first 19xx/20xx in the file name),
``resampling=auto|nearest|mode|bilinear|average`` (``auto``: nearest or mode for categorical,
bilinear or average for continuous, by whether the label is finer than the patch grid) and
``product=`` (a description, default the preset's product name or the file name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from .presets import KINDS, PRESETS, RESAMPLINGS

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
OPTION_KEYS = ("kind", "preset", "nodata", "year", "resampling", "product")
_YEAR_RE = re.compile(r"(?<!\d)(19[5-9]\d|20\d\d)(?!\d)")


@dataclass(frozen=True)
class LabelSpec:
    """One label product to pair with every location of a dataset."""

    name: str
    path: str
    kind: str = "categorical"
    preset: str | None = None
    nodata: float | None = None
    """Nodata value from the option; None = from the file, else the preset's default."""
    year: int | None = None
    resampling: str = "auto"
    product: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise InputError(
                f"--labels {self.name}: label names are letters, digits, '_' or '-', "
                "starting with a letter"
            )
        if self.kind not in KINDS:
            raise InputError(f"--labels {self.name}: kind {self.kind!r}, expected one of {KINDS}")
        if self.resampling not in RESAMPLINGS:
            raise InputError(
                f"--labels {self.name}: resampling {self.resampling!r}, expected one of "
                f"{RESAMPLINGS}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(
                f"--labels {self.name}: unknown preset {self.preset!r} (known: {sorted(PRESETS)})"
            )
        if self.preset is not None and self.kind != PRESETS[self.preset].kind:
            raise InputError(f"--labels {self.name}: preset {self.preset} is {self.kind}")
        if self.kind == "categorical" and self.resampling in ("bilinear", "average"):
            raise InputError(
                f"--labels {self.name}: {self.resampling} resampling of categorical codes "
                "would invent classes; use nearest or mode"
            )

    @property
    def task(self) -> str | None:
        """Task name of this label: the preset's, or NAME for a generic label."""
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "kind": self.kind,
            "preset": self.preset,
            "nodata": self.nodata,
            "year": self.year,
            "resampling": self.resampling,
            "product": self.product,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _number(name: str, key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--labels {name}: {key}={value!r} is not a number") from None


def parse_label_option(text: str) -> LabelSpec:
    """Parse ``NAME=PATH[,key=value...]`` (see the module docstring) into a :class:`LabelSpec`."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise InputError(f"--labels {text!r}: expected NAME=PATH[,key=value...]")
    parts = rest.split(",")
    path_parts = [parts[0]]
    options: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and key.strip() in OPTION_KEYS:
            options[key.strip()] = value.strip()
        elif options:
            raise InputError(
                f"--labels {name}: unknown option {part!r} (known: {', '.join(OPTION_KEYS)})"
            )
        else:  # a comma inside the path
            path_parts.append(part)
    path = ",".join(path_parts)
    preset = options.get("preset") or (name if name in PRESETS else None)
    if preset is not None and preset not in PRESETS:
        raise InputError(f"--labels {name}: unknown preset {preset!r} (known: {sorted(PRESETS)})")
    kind = options.get("kind") or (PRESETS[preset].kind if preset else "categorical")
    year = options.get("year")
    if year is not None and not re.fullmatch(r"\d{4}", year):
        raise InputError(f"--labels {name}: year={year!r} is not a four-digit year")
    spec = LabelSpec(
        name=name,
        path=path,
        kind=kind,
        preset=preset,
        nodata=_number(name, "nodata", options["nodata"]) if "nodata" in options else None,
        year=int(year) if year is not None else year_from_name(Path(path).name),
        resampling=options.get("resampling", "auto"),
        product=options.get("product", ""),
    )
    if not spec.product:
        spec = replace(spec, product=PRESETS[preset].product if preset else Path(path).stem)
    return spec


def year_from_name(file_name: str) -> int | None:
    """The first plausible year (1950..2099) in a file name, e.g. ``CLC2018_...`` -> 2018."""
    m = _YEAR_RE.search(file_name)
    return int(m.group(1)) if m else None
