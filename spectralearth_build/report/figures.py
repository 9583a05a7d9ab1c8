"""The figures of the build report, one function per figure.

Each function takes plain tables and numbers (what :class:`ReportInputs` reads from a dataset
folder) and returns a matplotlib :class:`~matplotlib.figure.Figure` made through the
object-oriented API (no pyplot, no global backend state), so figures can be made in any
process, headless.  Maps are drawn in lon/lat degrees on a plain grid with the aspect of the
local latitude: no basemap or coastline data is needed, so the report works offline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import formats as fmt

FIG_DPI = 110
STAGE_ORDER = ("scan", "plan", "extract", "finalize")
"""Build stages in pipeline order (``report.json`` stores them sorted by name)."""


def in_stage_order(seconds: dict[str, float]) -> dict[str, float]:
    """``seconds`` with the known stages first, in pipeline order, then any others."""
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    return dict(sorted(seconds.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


@dataclass
class ReportInputs:
    """Everything the report draws, read from a dataset folder by :meth:`load`."""

    report: dict[str, Any]
    """``report.json`` (the build report)."""
    info: dict[str, Any]
    """:func:`~spectralearth_build.report.info.store_info` of the dataset."""
    index: Any
    """``index.parquet`` (GeoDataFrame, geometry in EPSG:4326)."""
    views: Any
    """``views.parquet``."""
    wavelengths: np.ndarray
    band_mean: np.ndarray
    band_std: np.ndarray
    catalog: Any = None
    """``catalog.parquet`` (GeoDataFrame) or None when the folder has none."""
    plan_summary: dict[str, Any] = field(default_factory=dict)
    """The planning summary stored in ``plan.parquet``'s file metadata."""
    degrees: np.ndarray | None = None
    """Tile-overlap-graph degree of every usable tile, or None without a catalog."""

    @classmethod
    def load(cls, out: str | Path) -> ReportInputs:
        import geopandas as gpd
        import pyarrow.parquet as pq

        from ..dataset import open_dataset
        from .info import read_json, store_info

        out = Path(out)
        ds = open_dataset(out)
        catalog = gpd.read_parquet(out / fmt.CATALOG) if (out / fmt.CATALOG).exists() else None
        plan_summary: dict[str, Any] = {}
        if (out / fmt.PLAN).exists():
            raw = (pq.read_schema(out / fmt.PLAN).metadata or {}).get(b"spectralearth_build")
            plan_summary = json.loads(raw).get("summary", {}) if raw else {}
        degrees = None
        if catalog is not None:
            degrees = overlap_degrees(catalog, ds.attrs.get("config", {}))
        return cls(
            report=read_json(out / fmt.REPORT),
            info=store_info(out, ds),
            index=ds.index,
            views=ds.views,
            wavelengths=ds.wavelengths,
            band_mean=ds.band_mean,
            band_std=ds.band_std,
            catalog=catalog,
            plan_summary=plan_summary,
            degrees=degrees,
        )


def overlap_degrees(catalog: Any, config: dict[str, Any]) -> np.ndarray:
    """Degree of every usable tile in the tile-overlap graph the planner builds."""
    from ..catalog import tile_records
    from ..config import BuildConfig
    from ..geometry.graph import build_overlap_graph

    tiles = tile_records(catalog)
    if not tiles:
        return np.zeros(0, dtype=np.int64)
    graph = build_overlap_graph(tiles, BuildConfig.from_dict(config).plan)
    return np.array([d for _, d in graph.degree()], dtype=np.int64)


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=FIG_DPI, layout="constrained")


def _bars(ax: Any, labels: list[str], counts: list[float], color: str, horizontal: bool) -> None:
    """Bars annotated with their values."""
    pos = np.arange(len(labels))
    if horizontal:
        bars = ax.barh(pos, counts, color=color)
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()
    else:
        bars = ax.bar(pos, counts, color=color)
        ax.set_xticks(pos, labels)
    ax.bar_label(
        bars, fmt=lambda v: f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}", padding=2
    )
    from matplotlib.ticker import MaxNLocator

    if horizontal:
        ax.margins(x=0.12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.margins(y=0.12)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# -- map ---------------------------------------------------------------------------------------
def regions(
    bounds: np.ndarray,
    weights: np.ndarray | None = None,
    cell_deg: float = 1.0,
    max_regions: int = 4,
) -> tuple[list[np.ndarray], int]:
    """Group lon/lat boxes into map panels: connected groups of occupied grid cells.

    Every box marks the ``cell_deg`` cells it touches on a global grid; 8-connected groups of
    marked cells (``scipy.ndimage.label``) are the regions, so boxes less than about one cell
    apart share a panel.  Linear in the number of boxes.

    Args:
        bounds: ``(N, 4)`` boxes ``(lon_min, lat_min, lon_max, lat_max)``, degrees.
        weights: ``(N,)`` what a box counts for when ranking regions (default 1 each).
        cell_deg: grid cell size, degrees.
        max_regions: most panels returned.

    Returns:
        Up to ``max_regions`` extents ``(lon_min, lat_min, lon_max, lat_max)``, the heaviest
        region first, and the number of regions in all.
    """
    from scipy import ndimage

    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return [], 0
    w = np.ones(len(b)) if weights is None else np.asarray(weights, dtype=np.float64)
    nx, ny = int(math.ceil(360 / cell_deg)), int(math.ceil(180 / cell_deg))
    c0 = np.clip(((b[:, 0] + 180) // cell_deg).astype(int), 0, nx - 1)
    c1 = np.clip(((b[:, 2] + 180) // cell_deg).astype(int), 0, nx - 1)
    r0 = np.clip(((b[:, 1] + 90) // cell_deg).astype(int), 0, ny - 1)
    r1 = np.clip(((b[:, 3] + 90) // cell_deg).astype(int), 0, ny - 1)
    grid = np.zeros((ny, nx), dtype=bool)
    for a, bb, c, d in zip(r0, r1, c0, c1):  # boxes span a cell or two
        grid[a : bb + 1, c : d + 1] = True
    labels, n = ndimage.label(grid, structure=np.ones((3, 3), dtype=int))
    region = labels[r0, c0] - 1
    weight = np.bincount(region, weights=w, minlength=n)
    order = sorted(range(n), key=lambda k: (-weight[k], k))[:max_regions]
    out = []
    for k in order:
        sel = b[region == k]
        out.append(np.array([sel[:, 0].min(), sel[:, 1].min(), sel[:, 2].max(), sel[:, 3].max()]))
    return out, int(n)


def patch_map(index: Any, catalog: Any) -> Any:
    """Patch locations coloured by number of timestamps, over the usable tile footprints."""
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import BoundaryNorm

    tiles = catalog[catalog["status"] == "ok"] if catalog is not None else None
    patch_boxes = index.geometry.bounds.to_numpy()
    tile_boxes = tiles.geometry.bounds.to_numpy() if tiles is not None else np.zeros((0, 4))
    panels, n_regions = regions(
        np.concatenate([patch_boxes, tile_boxes]),
        np.concatenate([np.ones(len(patch_boxes)), np.full(len(tile_boxes), 1e-6)]),
    )
    n_panels = max(1, len(panels))
    fig = _figure(5.2 * n_panels + 0.8, 5.0)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    t_max = int(index["n_views"].max()) if len(index) else 1
    cmap = colormaps["viridis"].resampled(t_max)
    norm = BoundaryNorm(np.arange(0.5, t_max + 1.5), cmap.N)
    if not panels or not len(index):
        _empty(axes[0], "no locations")
        return fig
    tile_polys = [
        np.asarray(poly.exterior.coords)
        for geom in (tiles.geometry if tiles is not None else [])
        for poly in getattr(geom, "geoms", [geom])
    ]
    n_views = index["n_views"].to_numpy()
    for ax, ext in zip(axes, panels):
        ax.add_collection(
            PolyCollection(tile_polys, facecolor="0.85", edgecolor="0.5", linewidth=0.5, alpha=0.35)
        )
        if len(index) <= 20_000:
            polys = [np.asarray(g.exterior.coords) for g in index.geometry]
            mappable = PolyCollection(polys, array=n_views, cmap=cmap, norm=norm)
            mappable.set_edgecolor("k")
            mappable.set_linewidth(0.3)
            ax.add_collection(mappable)
        else:  # box centres: fast, and patches are sub-pixel at this scale anyway
            cx, cy = (
                0.5 * (patch_boxes[:, 0] + patch_boxes[:, 2]),
                0.5 * (patch_boxes[:, 1] + patch_boxes[:, 3]),
            )
            top = np.argsort(n_views, kind="stable")  # longer series drawn last, on top
            mappable = ax.scatter(cx[top], cy[top], c=n_views[top], s=2, cmap=cmap, norm=norm, lw=0)
        pad = 0.05 * max(ext[2] - ext[0], ext[3] - ext[1], 0.01)
        ax.set_xlim(ext[0] - pad, ext[2] + pad)
        ax.set_ylim(ext[1] - pad, ext[3] + pad)
        ax.set_aspect(1.0 / max(math.cos(math.radians(0.5 * (ext[1] + ext[3]))), 0.1))
        ax.grid(True, color="0.7", linewidth=0.5, linestyle=":")
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
    cb = fig.colorbar(mappable, ax=list(axes), shrink=0.8, ticks=np.arange(1, t_max + 1))
    cb.set_label("timestamps per location")
    shown = f"; {len(panels)} of {n_regions} regions shown" if n_regions > len(panels) else ""
    fig.suptitle(
        f"{len(index):,} locations over {len(tile_boxes):,} usable tile footprints (grey){shown}"
    )
    return fig


# -- overlap graph -----------------------------------------------------------------------------
def graph_figure(plan_summary: dict[str, Any], degrees: np.ndarray | None) -> Any:
    """Component sizes of the tile-overlap graph and its degree histogram."""
    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    hist = plan_summary.get("component_size_histogram", {})
    if hist:
        sizes = sorted(hist, key=int)
        _bars(ax1, sizes, [hist[s] for s in sizes], "tab:blue", horizontal=False)
        ax1.set_xlabel("tiles in component")
        ax1.set_ylabel("components")
    else:
        _empty(ax1, "no planning summary")
    ax1.set_title(
        f"{plan_summary.get('components', 0)} connected components, "
        f"{plan_summary.get('edges', 0)} overlap edges"
    )
    if degrees is not None and len(degrees):
        top = int(degrees.max())
        ax2.hist(
            degrees,
            bins=np.arange(-0.5, top + 1.5, max(1, math.ceil((top + 1) / 40))),
            color="tab:orange",
            edgecolor="white",
        )
        ax2.set_xlabel("overlap degree (tiles of other acquisitions sharing a patch area)")
        ax2.set_ylabel("tiles")
        from matplotlib.ticker import MaxNLocator

        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_title(f"{len(degrees)} usable tiles, degree max {top}, mean {degrees.mean():.2f}")
    else:
        _empty(ax2, "no catalog")
    return fig


# -- time series ------------------------------------------------------------------------------
def time_gaps_days(views: Any) -> np.ndarray:
    """Days between consecutive views of each location (views sorted by location, then time)."""
    if len(views) < 2:
        return np.zeros(0)
    t = views["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    t = t.astype("datetime64[s]").astype(np.int64)
    pid = views["patch_id"].to_numpy()
    same = pid[1:] == pid[:-1]
    return np.diff(t)[same] / 86400.0


def timestamps_figure(report: dict[str, Any], views: Any) -> Any:
    """Locations by number of timestamps, and the time gaps between a location's views."""
    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    by_t = report.get("patches_by_timestamps", {})
    if by_t:
        keys = sorted(by_t, key=int)
        _bars(ax1, keys, [by_t[k] for k in keys], "tab:green", horizontal=False)
        ax1.set_xlabel("timestamps per location")
        ax1.set_ylabel("locations")
    else:
        _empty(ax1, "no locations")
    ax1.set_title(f"{report.get('patches', 0):,} locations, {report.get('views', 0):,} views")
    gaps = time_gaps_days(views)
    if len(gaps):
        ax2.hist(gaps, bins=min(40, max(5, len(gaps) // 2)), color="tab:purple", edgecolor="white")
        ax2.set_xlabel("days between consecutive views of a location")
        ax2.set_ylabel("view pairs")
        ax2.set_title(f"{len(gaps):,} gaps, median {np.median(gaps):.1f} days")
    else:
        _empty(ax2, "no location has two timestamps")
    return fig


# -- drops ------------------------------------------------------------------------------------
def skipped_products(report: dict[str, Any]) -> dict[str, int]:
    """Products skipped at scan (by ``status: reason``) and at extraction (read failures)."""
    out = dict(report.get("products", {}).get("by_reason", {}))
    late = [
        p
        for p in report.get("invalid_products", [])
        if p.get("reason") == "read failed during extraction"
    ]
    if late:
        out["invalid: read failed during extraction"] = len(late)
    return out


def drops_figure(report: dict[str, Any]) -> Any:
    """Products skipped by reason and planned views dropped by reason."""
    skipped = skipped_products(report)
    dropped = report.get("dropped_views", {})
    rows = max(len(skipped), len(dropped), 1)
    fig = _figure(11, 1.2 + 0.45 * rows)
    ax1, ax2 = fig.subplots(1, 2)
    if skipped:
        _bars(ax1, list(skipped), list(skipped.values()), "tab:red", horizontal=True)
    else:
        _empty(ax1, "no product skipped")
    found = report.get("products", {}).get("products", 0)
    ax1.set_title(f"products skipped: {sum(skipped.values())} of {found}", fontsize=10)
    if dropped:
        _bars(ax2, list(dropped), list(dropped.values()), "tab:brown", horizontal=True)
    else:
        _empty(ax2, "no view dropped")
    ax2.set_title(
        f"planned views dropped: {sum(dropped.values())}\n"
        f"({report.get('dropped_patches', 0)} planned locations left with no view)",
        fontsize=10,
    )
    return fig


# -- spectra ----------------------------------------------------------------------------------
def spectra_figure(wavelengths: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
    """Per-band mean and standard deviation of the stored reflectance against wavelength.

    Gaps in the band selection (the water-vapour bands dropped by default) are left as gaps.
    """
    fig = _figure(10, 3.8)
    ax = fig.subplots()
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.size == 0 or wl.size != len(mean):
        _empty(ax, "no band wavelengths recorded")
        return fig
    order = np.argsort(wl)
    wl, m, s = wl[order], np.asarray(mean)[order] / 1e4, np.asarray(std)[order] / 1e4
    step = np.diff(wl)
    breaks = np.nonzero(step > 3 * np.median(step))[0] + 1 if len(step) else np.zeros(0, int)
    for seg in np.split(np.arange(len(wl)), breaks):
        ax.fill_between(wl[seg], (m - s)[seg], (m + s)[seg], color="tab:blue", alpha=0.2, lw=0)
        ax.plot(wl[seg], m[seg], color="tab:blue", lw=1.5)
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.set_title(f"mean ± std of every stored pixel, {len(wl)} bands")
    ax.grid(True, color="0.85")
    return fig


# -- stages -----------------------------------------------------------------------------------
def stages_figure(report: dict[str, Any], info: dict[str, Any]) -> Any:
    """Seconds per build stage, with the store's codec and size in the title."""
    fig = _figure(6.5, 3.2)
    ax = fig.subplots()
    sec = in_stage_order(report.get("seconds", {}))
    if sec:
        _bars(ax, list(sec), [round(v, 2) for v in sec.values()], "tab:gray", horizontal=True)
        ax.set_xlabel("seconds")
    else:
        _empty(ax, "no timings")
    mib = report.get("bytes_written", 0) / 2**20
    ax.set_title(f"{mib:,.1f} MiB written, {info.get('codec', '?')}", fontsize=10)
    return fig


# -- labels -----------------------------------------------------------------------------------
def find_frequencies(value: Any, path: str = "") -> list[tuple[str, dict[str, dict[str, float]]]]:
    """Class-frequency tables anywhere in the ``labels`` / ``tasks`` attributes.

    A table is the value of any key containing ``freq``: either ``{split: {class: number}}`` or
    ``{class: number}`` (taken as one split, ``all``), or, beside a ``classes`` list (a task of
    the labels, see docs/FORMAT.md), ``{scheme: {split: [number per class]}}`` with ``all`` as
    a plain list.  Returns ``(where, {split: {class: n}})``.
    """
    found: list[tuple[str, dict[str, dict[str, float]]]] = []
    if not isinstance(value, dict):
        return found
    names = value.get("classes")
    for k, v in value.items():
        where = f"{path}.{k}" if path else str(k)
        if "freq" in str(k).lower() and isinstance(v, dict) and isinstance(names, list):
            # a task's frequencies: lists in the order of its ``classes``, per scheme and split
            for scheme, per in v.items():
                splits = per if isinstance(per, dict) else {"all": per}
                table = {
                    str(s): {str(c): float(n) for c, n in zip(names, vals)}
                    for s, vals in splits.items()
                    if isinstance(vals, list) and len(vals) == len(names)
                }
                if table:
                    found.append((f"{where}.{scheme}", table))
        elif "freq" in str(k).lower() and isinstance(v, dict) and v:
            if all(isinstance(x, dict) for x in v.values()):
                table = {str(s): {str(c): float(n) for c, n in d.items()} for s, d in v.items()}
            elif all(isinstance(x, int | float) for x in v.values()):
                table = {"all": {str(c): float(n) for c, n in v.items()}}
            else:
                continue
            found.append((where, table))
        else:
            found.extend(find_frequencies(v, where))
    return found


def labels_figure(tables: list[tuple[str, dict[str, dict[str, float]]]]) -> Any:
    """Grouped bars of class frequencies per split, one panel per table."""
    fig = _figure(11, 3.6 * len(tables))
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    for ax, (where, table) in zip(axes, tables):
        classes = sorted({c for d in table.values() for c in d}, key=lambda c: (len(c), c))
        width = 0.8 / len(table)
        for j, (split, d) in enumerate(table.items()):
            total = sum(d.values()) or 1.0
            ax.bar(
                np.arange(len(classes)) + j * width,
                [d.get(c, 0) / total for c in classes],
                width,
                label=split,
            )
        # long class names (BigEarthNet's run to 80 characters) are cut, or the axes collapse
        short = [c if len(c) <= 28 else c[:27] + "\u2026" for c in classes]
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, short, rotation=60, fontsize=7)
        ax.set_ylabel("fraction")
        ax.set_title(where)
        ax.legend(fontsize=8)
    return fig
