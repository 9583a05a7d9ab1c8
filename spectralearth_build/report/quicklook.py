"""Quicklooks: pseudo-RGB PNGs of sampled locations and a contact sheet.

:func:`write_quicklooks` picks a seeded sample of locations (or the ones asked for by
``patch_id``), reads each through :func:`~spectralearth_build.dataset.open_dataset`, and writes
one PNG per location with all its timestamps side by side in time order (date, time and
product id under each), followed by its label masks with a legend when the location has
labels (``ds[i]["labels"]``: name -> ``(P, P)`` codes), plus ``contact_sheet.png``: the first
timestamp of every sampled location on one page.  Colours come from :mod:`.rgb` (bands nearest
640/550/460 nm, one robust stretch per location).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .rgb import location_rgb, rgb_band_indices

CONTACT_SHEET = "contact_sheet.png"
PANEL_IN = 2.3
"""Width of one image panel (inches)."""


def quicklook_name(patch_id: int) -> str:
    """File name of the quicklook PNG of location ``patch_id``."""
    return f"location-{int(patch_id):07d}.png"


def sample_positions(n_locations: int, n: int, seed: int) -> list[int]:
    """``min(n, n_locations)`` dataset positions drawn without replacement, ascending."""
    k = min(max(n, 0), n_locations)
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_locations, size=k, replace=False))


def positions_of(ds: Any, patch_ids: Iterable[int]) -> list[int]:
    """Dataset positions of the given patch ids (an InputError names unknown ones)."""
    pos = {int(p): i for i, p in enumerate(ds.index["patch_id"].to_numpy())}
    wanted = [int(p) for p in patch_ids]
    missing = [p for p in wanted if p not in pos]
    if missing:
        raise InputError(f"{ds.path}: no location with patch id {', '.join(map(str, missing))}")
    return [pos[p] for p in wanted]


def class_names(attrs: dict[str, Any], name: str) -> dict[int, str]:
    """Code -> class name of label ``name`` from the store attributes, where they say it.

    Accepts ``attrs["labels"][name]["classes"]`` as ``{code: name}`` or a list of records with
    ``code`` and ``name``, else the class table of the label's ``preset`` (``corine``, ``cdl``,
    ``nlcd``); anything else gives no names (codes are shown instead).
    """
    spec = (attrs.get("labels") or {}).get(name)
    classes = spec.get("classes") if isinstance(spec, dict) else None
    out: dict[int, str] = {}
    if isinstance(classes, dict):
        for k, v in classes.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                continue
    elif isinstance(classes, list):
        for rec in classes:
            if isinstance(rec, dict) and "code" in rec:
                out[int(rec["code"])] = str(rec.get("name", rec["code"]))
    elif isinstance(spec, dict) and spec.get("preset"):  # paired with a preset's class table
        from ..labels.presets import code_names

        out = code_names(str(spec["preset"]))
    return out


def _label_panel(ax: Any, key_ax: Any, mask: np.ndarray, name: str, names: dict[int, str]) -> None:
    """A label mask in ``ax`` and its legend (code and class name) in ``key_ax``."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    codes = np.unique(mask)
    cmap = colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # strong colours first, their pale pairs after
    colours = [cmap(order[i % 20]) for i in range(len(codes))]
    lut = np.searchsorted(codes, mask)
    norm = BoundaryNorm(np.arange(-0.5, len(codes)), len(codes))
    ax.imshow(lut, cmap=ListedColormap(colours), norm=norm, interpolation="nearest")
    ax.set_title(f"label: {name}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [
        Patch(color=c, label=f"{code} {names.get(int(code), '')}".strip())
        for code, c in zip(codes, colours)
    ]
    key_ax.set_axis_off()
    key_ax.legend(handles=handles, fontsize=7, loc="center left", frameon=False, borderaxespad=0)


def location_figure(item: dict[str, Any], rgb: np.ndarray, attrs: dict[str, Any]) -> Any:
    """All timestamps of one location side by side, then its label masks.

    Args:
        item: ``ds[i]`` (``times``, ``products``, ``patch_id``, ``crs``, optional ``labels``).
        rgb: ``(T, P, P, 3)`` composites of the location (:func:`.rgb.location_rgb`).
        attrs: the store attributes (class names of labels).
    """
    from matplotlib.figure import Figure

    labels = item.get("labels") or {}
    n_t, n_l = len(rgb), len(labels)
    widths = [1.0] * n_t + [1.0, 0.7] * n_l  # each label: its mask, then its legend
    fig = Figure(
        figsize=(PANEL_IN * sum(widths) + 0.2, PANEL_IN + 1.1), dpi=100, layout="constrained"
    )
    axes = fig.subplots(1, n_t + 2 * n_l, squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    for ax, img, t, prod in zip(axes, rgb, item["times"], item["products"]):
        ax.imshow(img, interpolation="nearest")
        stamp = np.datetime_as_string(np.datetime64(t, "m"), unit="m").replace("T", " ")
        ax.set_title(f"{stamp} UTC", fontsize=9)
        short = prod.replace("ENMAP01-____L2A-", "")
        half = short.find("_", short.find("_") + 1)
        ax.set_xlabel(f"{short[:half]}\n{short[half:]}" if half > 0 else short, fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    for k, (name, mask) in enumerate(labels.items()):
        ax, key_ax = axes[n_t + 2 * k], axes[n_t + 2 * k + 1]
        _label_panel(ax, key_ax, np.asarray(mask), name, class_names(attrs, name))
    plural = "s" if n_t != 1 else ""
    fig.suptitle(
        f"location {item['patch_id']}  ·  {item['crs']}  ·  {n_t} timestamp{plural}",
        fontsize=10,
    )
    return fig


def contact_sheet(thumbs: list[tuple[str, np.ndarray]], columns: int = 8) -> Any:
    """Images in a grid: ``(title, (P, P, 3) composite)`` per location."""
    from matplotlib.figure import Figure

    cols = max(1, min(columns, len(thumbs)))
    rows = max(1, -(-len(thumbs) // cols))
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, img) in zip(axes, thumbs):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{len(thumbs)} locations, first timestamp each", fontsize=10)
    return fig


def write_quicklooks(
    out: str | Path,
    dest: str | Path,
    n: int = 64,
    seed: int = 0,
    patch_ids: Iterable[int] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write quicklook PNGs of a dataset.

    Args:
        out: a finished dataset folder.
        dest: folder for the PNGs (created if needed).
        n: number of locations sampled (all of them if the dataset has fewer).
        seed: seed of the sample (same seed, same locations).
        patch_ids: these locations instead of a sample (no contact sheet for one location).
        progress: show a progress bar.

    Returns:
        The paths written: one PNG per location (``location-<patch id>.png``), then the contact
        sheet.
    """
    from ..dataset import open_dataset

    ds = open_dataset(out)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if ds.wavelengths.size == 0:
        raise InputError(f"{ds.path}: the store records no band wavelengths to choose RGB bands")
    bands = rgb_band_indices(ds.wavelengths)
    ids = list(patch_ids) if patch_ids is not None else None
    positions = positions_of(ds, ids) if ids else sample_positions(len(ds), n, seed)
    if progress:
        from tqdm import tqdm

        positions = tqdm(positions, desc="quicklooks", unit="location")
    written: list[Path] = []
    thumbs = []
    for i in positions:
        item = ds[i]
        rgb = location_rgb(item["image"], bands)
        path = dest / quicklook_name(item["patch_id"])
        location_figure(item, rgb, ds.attrs).savefig(path)
        written.append(path)
        day = np.datetime_as_string(np.datetime64(item["times"][0], "D"))
        thumbs.append((f"{item['patch_id']} · T={len(rgb)}\n{day}", rgb[0]))
    if len(thumbs) > 1:
        path = dest / CONTACT_SHEET
        contact_sheet(thumbs).savefig(path)
        written.append(path)
    return written
