"""The build report: figures and an offline ``index.html`` in ``OUT/report/``.

:func:`write_report` reads a finished dataset folder (:class:`~.figures.ReportInputs`), saves
one PNG per figure and writes ``index.html``, a single static page with inline CSS, no script
and no remote resource, that shows the summary numbers and the figures.  Every number in the
page's tables is written from ``report.json`` or from :func:`~.info.store_info`, and its cell
carries the path it came from (``data-key`` into ``report.json``, ``data-info`` into the store
summary, as a JSON list of keys), so a test can check the page against the files.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import figures as fg

REPORT_DIR = "report"
INDEX_HTML = "index.html"

FIGURES: tuple[tuple[str, str, str], ...] = (
    (
        "map.png",
        "Where the locations are",
        "Patch footprints coloured by number of timestamps, "
        "over the footprints of the usable tiles, on a lon/lat grid.",
    ),
    (
        "graph.png",
        "Tile-overlap graph",
        "Connected components by size and the overlap degree of "
        "every usable tile (edges join tiles of different acquisitions that share a patch area).",
    ),
    (
        "timestamps.png",
        "Time series",
        "Locations by number of timestamps, and the days between consecutive views of a location.",
    ),
    (
        "drops.png",
        "What was left out",
        "Products skipped at scan or extraction, and planned "
        "views dropped by the pixel checks, by reason.",
    ),
    (
        "spectra.png",
        "Spectra",
        "Per-band mean and standard deviation of every stored pixel "
        "(reflectance) against wavelength; dropped bands appear as gaps.",
    ),
    ("stages.png", "Cost", "Seconds per build stage, bytes written and codec."),
)
LABELS_FIGURE = ("labels.png", "Labels", "Class frequencies per split, for each label task.")

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table.wide { width: 100%; table-layout: fixed; }
table.wide td { overflow-wrap: anywhere; font-size: 0.85em; }
"""


def fmt_number(value: Any) -> str:
    """How the page writes a number: ``12,345`` for integers, ``1.23`` for other values."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) > 1e3
    ):
        return f"{int(value):,}"
    return f"{float(value):,.2f}"


def _row(label: str, value: Any, key: list[Any], attr: str) -> str:
    k = html.escape(json.dumps(key), quote=True)
    if isinstance(value, int | float) and not isinstance(value, bool):
        cell = f'<td class="num" {attr}="{k}">{fmt_number(value)}</td>'
    else:
        cell = f'<td {attr}="{k}">{html.escape(str(value))}</td>'
    return f"<tr><th>{html.escape(label)}</th>{cell}</tr>"


def _table(title: str, rows: list[str]) -> str:
    rows = [r for r in rows if r]
    if not rows:
        return ""
    return f"<div><h3>{html.escape(title)}</h3><table>{''.join(rows)}</table></div>"


def summary_tables(report: dict[str, Any], info: dict[str, Any]) -> str:
    """The HTML tables of the page's numbers, each cell tagged with where it came from."""

    def rep(label: str, *key: str) -> str:
        value: Any = report
        for k in key:
            if not isinstance(value, dict) or k not in value:
                return ""  # not in this report.json (an older or partial build)
            value = value[k]
        return _row(label, value, list(key), "data-key")

    def inf(label: str, *key: Any) -> str:
        value: Any = info
        for k in key:
            value = value[k]
        return _row(label, value, list(key), "data-info")

    prod = report.get("products", {})
    build = [
        *([rep("products found", "products", "products")] if prod else []),
        *(rep(f"products {s}", "products", "by_status", s) for s in prod.get("by_status", {})),
        rep("locations planned", "planned_patches"),
        rep("locations written", "patches"),
        rep("views written", "views"),
        rep("locations dropped (no valid view)", "dropped_patches"),
        rep("work units", "units"),
        rep("work units done earlier", "units_resumed"),
        rep("bytes written", "bytes_written"),
    ]
    by_t = [
        rep(f"{t} timestamp{'s' if t != '1' else ''}", "patches_by_timestamps", t)
        for t in sorted(report.get("patches_by_timestamps", {}), key=int)
    ]
    skipped = [rep(r, "products", "by_reason", r) for r in prod.get("by_reason", {})]
    dropped = [rep(r, "dropped_views", r) for r in report.get("dropped_views", {})]
    seconds = [rep(s, "seconds", s) for s in fg.in_stage_order(report.get("seconds", {}))]
    store = [
        inf("locations", "locations"),
        inf("views", "views"),
        inf("bands", "bands"),
        *(
            [
                inf("shortest wavelength (nm)", "wavelength_nm", 0),
                inf("longest wavelength (nm)", "wavelength_nm", 1),
            ]
            if info.get("wavelength_nm")
            else []
        ),
        inf("patch size (px)", "patch_px"),
        inf("timestamp slots per location (T_max)", "t_max"),
        *(
            [inf("first view", "time_range", 0), inf("last view", "time_range", 1)]
            if info.get("time_range")
            else []
        ),
        inf("codec", "codec"),
        inf("store bytes", "store_bytes"),
        *(inf(f"locations in {c}", "crs", c) for c in info.get("crs", {})),
    ]
    invalid = [
        "<tr>"
        + "".join(
            f'<td data-key="{html.escape(json.dumps(["invalid_products", i, k]), quote=True)}">'
            f"{html.escape(str(p.get(k, '')))}</td>"
            for k in ("product", "reason", "detail")
        )
        + "</tr>"
        for i, p in enumerate(report.get("invalid_products", []))
    ]
    extra = []
    for key in ("labels", "tasks"):
        if info.get(key):
            extra.append(
                _table(
                    key,
                    [
                        _row(".".join(map(str, path)), v, [key, *path], "data-info")
                        for path, v in _leaves(info[key])
                    ],
                )
            )
    parts = [
        _table("build", build),
        _table("locations by timestamps", by_t),
        _table("products skipped, by reason", skipped),
        _table("views dropped, by reason", dropped),
        _table("seconds per stage", seconds),
        _table("store", store),
        *extra,
    ]
    out = f'<div class="tables">{"".join(parts)}</div>'
    if invalid:
        head = (
            '<colgroup><col style="width:45%"><col style="width:15%"><col style="width:40%">'
            "</colgroup><tr><th>product</th><th>reason</th><th>detail</th></tr>"
        )
        out += f'<h3>invalid products</h3><table class="wide">{head}{"".join(invalid)}</table>'
    return out


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[list[Any], Any]]:
    """Scalar leaves of nested dicts/lists (lists longer than 12 are left out)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        if len(value) > 12:
            return []
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(list(path), value)]


def render_index(inputs: fg.ReportInputs, figures: list[tuple[str, str, str]]) -> str:
    """The page: title, summary tables, then every figure with its caption."""
    info = inputs.info
    title = f"Build report: {info['path']}"
    figs = "".join(
        f'<h2>{html.escape(head)}</h2><figure><img src="{html.escape(name)}" '
        f'alt="{html.escape(head)}"><figcaption>{html.escape(cap)}</figcaption></figure>'
        for name, head, cap in figures
    )
    version = html.escape(str(info["build"].get("package_version")))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Written by spectralearth-build {version} from <code>report.json</code>, the "
        "tables and the store attributes of this dataset. The page needs no network.</p>"
        f"{summary_tables(inputs.report, info)}{figs}</body></html>\n"
    )


def write_report(out: str | Path, dest: str | Path | None = None) -> Path:
    """Write the figures and ``index.html`` of the dataset in ``out``.

    Args:
        out: a finished dataset folder.
        dest: folder for the report (default ``OUT/report``); created if needed.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    dest = Path(dest) if dest is not None else out / REPORT_DIR
    dest.mkdir(parents=True, exist_ok=True)
    inputs = fg.ReportInputs.load(out)
    makers: dict[str, Callable[[], Any]] = {
        "map.png": lambda: fg.patch_map(inputs.index, inputs.catalog),
        "graph.png": lambda: fg.graph_figure(inputs.plan_summary, inputs.degrees),
        "timestamps.png": lambda: fg.timestamps_figure(inputs.report, inputs.views),
        "drops.png": lambda: fg.drops_figure(inputs.report),
        "spectra.png": lambda: fg.spectra_figure(
            inputs.wavelengths, inputs.band_mean, inputs.band_std
        ),
        "stages.png": lambda: fg.stages_figure(inputs.report, inputs.info),
    }
    shown = list(FIGURES)
    tables = fg.find_frequencies(
        {"labels": inputs.info.get("labels"), "tasks": inputs.info.get("tasks")}
    )
    if tables:
        makers[LABELS_FIGURE[0]] = lambda: fg.labels_figure(tables)
        shown.append(LABELS_FIGURE)
    for name, make in makers.items():
        fig = make()
        fig.savefig(dest / name, dpi=fg.FIG_DPI)
    index = dest / INDEX_HTML
    index.write_text(render_index(inputs, shown))
    return index
