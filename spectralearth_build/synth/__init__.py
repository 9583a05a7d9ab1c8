"""Synthetic EnMAP L2A archives: real file formats, known ground truth.

:func:`make_archive` writes a folder of products that the EnMAP reader and the catalog read
exactly like real ones (names, METADATA.XML, 224-band int16 GeoTIFFs, quality layers, portal
packaging), plus label rasters in their native CRS and a ``synth_manifest.json`` saying what
every product is and which catalog status it must get.  Strategy:

1. :mod:`.layout` plans the acquisitions (pure geometry and time: sites, datatakes, revisits,
   special cases, pixel grids);
2. :mod:`.landcover` builds a seeded class map per site and :mod:`.spectra` the reflectance of
   each class by wavelength and day of year;
3. :mod:`.writer` renders each product from those and writes its files; products are
   independent, so they can be written by several processes;
4. ZIP and tar.gz deliveries are packed deterministically (fixed times, owners, modes);
5. :mod:`.labels` writes the CORINE/CDL/NLCD-like rasters from the same class maps.

Every random stream is seeded from ``(seed, purpose, product index or datatake)``, so the same
seed and options give byte-identical files whatever the number of worker processes.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..crs import transformer
from ..grid import PixelGrid
from .labels import LABEL_SPECS, LabelRaster, write_label
from .landcover import LandCoverMap
from .layout import (
    PIXEL_M,
    SITES,
    ProductSpec,
    broken_specs,
    coverage_stats,
    hotspot_lonlat,
    plan_layout,
)
from .presets import PRESETS, SynthError, SynthParams, resolve_params
from .writer import Delivery, RenderContext, WrittenProduct, temp_folder, write_product

MANIFEST = "synth_manifest.json"
PACKAGINGS = ("folders", "mixed")
TAR_NAME = "ENMAP_L2A_delivery_0001.tar.gz"


@dataclass(frozen=True)
class SynthProduct:
    """One product of a synthetic archive and the catalog status it must get."""

    product_id: str
    """Canonical product id (with the ``ENMAP01-____L2A-`` prefix, whatever the file names)."""
    path: str
    """Folder or archive, relative to the archive root (``a.tar.gz!b.ZIP`` inside a tar)."""
    delivery: str
    site: str
    role: str
    broken: str
    expected_status: str
    expected_reason: str
    datatake: int
    tile: int
    start_time: str
    processor_version: str
    grid: PixelGrid
    sun_elevation: float
    cloud_cover: float
    haze_cover: float
    cirrus_cover: float
    snow_cover: float
    valid_fraction: float

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["grid"] = self.grid.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthProduct:
        d = dict(d)
        d["grid"] = PixelGrid.from_dict(d["grid"])
        return cls(**d)


@dataclass(frozen=True)
class SynthReport:
    """What :func:`make_archive` wrote (also saved as ``synth_manifest.json``)."""

    out: str
    preset: str
    seed: int
    params: SynthParams
    broken: bool
    packaging: str
    products: tuple[SynthProduct, ...]
    labels: tuple[LabelRaster, ...]
    coverage: tuple[tuple[str, int, float], ...]
    """(site, k, km2 covered by at least k acquisition dates of usable products)."""
    hotspot_dates: tuple[tuple[str, int], ...]
    """(site, number of usable acquisition dates over the site's hotspot)."""
    total_bytes: int

    @property
    def expected_statuses(self) -> dict[str, str]:
        return {p.product_id: p.expected_status for p in self.products}

    def by_status(self) -> dict[str, int]:
        return dict(sorted(Counter(p.expected_status for p in self.products).items()))

    def label(self, product: str) -> Path:
        """Path of the label raster of ``product`` (``corine``, ``cdl``, ``nlcd``)."""
        for lab in self.labels:
            if lab.product == product:
                return Path(self.out) / lab.path
        raise KeyError(f"no {product!r} label raster in {self.out}")

    def to_dict(self) -> dict[str, Any]:
        """Manifest content (without ``out``, so that it is identical wherever it is written)."""
        return {
            "kind": "spectralearth_build synthetic archive",
            "preset": self.preset,
            "seed": self.seed,
            "params": self.params.to_dict(),
            "broken": self.broken,
            "packaging": self.packaging,
            "summary": {
                "products": len(self.products),
                "by_status": self.by_status(),
                "total_bytes": self.total_bytes,
            },
            "coverage_km2": [list(c) for c in self.coverage],
            "hotspot_dates": [list(h) for h in self.hotspot_dates],
            "labels": [lab.to_dict() for lab in self.labels],
            "products": [p.to_dict() for p in self.products],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], out: str | Path) -> SynthReport:
        return cls(
            out=str(out),
            preset=d["preset"],
            seed=int(d["seed"]),
            params=SynthParams.from_dict(d["params"]),
            broken=bool(d["broken"]),
            packaging=d["packaging"],
            products=tuple(SynthProduct.from_dict(p) for p in d["products"]),
            labels=tuple(LabelRaster.from_dict(lab) for lab in d["labels"]),
            coverage=tuple((str(s), int(k), float(a)) for s, k, a in d["coverage_km2"]),
            hotspot_dates=tuple((str(s), int(n)) for s, n in d["hotspot_dates"]),
            total_bytes=int(d["summary"]["total_bytes"]),
        )


def read_manifest(out: str | Path) -> SynthReport:
    """The report of an archive written by :func:`make_archive`."""
    path = Path(out) / MANIFEST
    try:
        return SynthReport.from_dict(json.loads(path.read_text()), out)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no synthetic-archive manifest") from exc


def _deliveries(specs: list[ProductSpec], packaging: str) -> dict[int, Delivery]:
    """Which products are delivered how (``mixed``: the portal's and the odd variants)."""
    out = {s.index: Delivery("folder") for s in specs}
    dup_targets = {s.content_of for s in specs if s.content_of is not None}
    if packaging == "mixed":
        plain = [s for s in specs if s.role == "regular" and s.index not in dup_targets]
        us = [s for s in plain if s.site == "us"]
        eu = [s for s in plain if s.site == "europe"]
        out[us[0].index] = Delivery("zip")
        for s in us[1:4]:
            out[s.index] = Delivery("tar.gz")
        for s, kind in zip(eu[3:6], ("cog", "no-prefix", "lowercase-metadata")):
            out[s.index] = Delivery(kind)
    for s in specs:
        if s.broken == "zero-byte zip":
            out[s.index] = Delivery("zip")
    return out


def _site_extent(
    specs: list[ProductSpec], site: str, margin_m: float = 1500.0
) -> tuple[float, float, float, float]:
    corners = np.concatenate([s.frame_corners() for s in specs if s.site == site])
    snap = 300.0
    return (
        math.floor((corners[:, 0].min() - margin_m) / snap) * snap,
        math.floor((corners[:, 1].min() - margin_m) / snap) * snap,
        math.ceil((corners[:, 0].max() + margin_m) / snap) * snap,
        math.ceil((corners[:, 1].max() + margin_m) / snap) * snap,
    )


def site_maps(specs: list[ProductSpec], params: SynthParams, seed: int) -> dict[str, LandCoverMap]:
    """The land-cover map of every site (site name -> map) for a planned layout.

    Args:
        specs: the planned products (:func:`~.layout.plan_layout`, without broken ones); they
            set each map's extent.
        params: archive parameters (the swath width scales the town, lake and river,
            ``landscape_scale`` the landscape).
        seed: archive seed.
    """
    maps = {}
    for site_id, (name, site) in enumerate(SITES.items()):
        tr = transformer("EPSG:4326", site.frame_crs)
        hx, hy = tr.transform(*hotspot_lonlat(name, params))
        maps[name] = LandCoverMap(
            site.landscape,
            _site_extent(specs, name),
            (hx, hy),
            params.tile_px * PIXEL_M,
            seed,
            site_id,
            scale=params.landscape_scale,
        )
    return maps


def land_cover_maps(report: SynthReport) -> dict[str, LandCoverMap]:
    """The land-cover maps that made the pixels and label rasters of a written archive.

    Maps are rebuilt from the report's parameters and seed (they are not stored); their classes
    index :data:`~.spectra.CLASSES` and :func:`~.spectra.code_table` gives the label codes.
    """
    return site_maps(plan_layout(report.params, report.seed), report.params, report.seed)


class _WriteOne:
    """Picklable task: write one product into its folder."""

    def __init__(self, ctx: RenderContext):
        self.ctx = ctx

    def __call__(self, job: tuple[ProductSpec, str, Delivery]) -> WrittenProduct:
        spec, folder, delivery = job
        return write_product(spec, self.ctx, Path(folder), delivery)


def _zip_folder(folder: Path, archive: Path, inner: str, when: tuple[int, ...]) -> None:
    """ZIP ``folder``'s files under ``inner/`` with fixed times and modes.

    Members are stored, not deflated: the GeoTIFFs are compressed already.
    """
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{inner}/{f.name}", date_time=when[:6])  # type: ignore[arg-type]
            info.external_attr = 0o644 << 16
            info.create_system = 3
            with zf.open(info, "w", force_zip64=True) as dst, f.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)


def _tar_gz(members: list[Path], archive: Path, mtime: int) -> None:
    """A gzip-compressed tar of ``members`` with fixed owners, modes and times."""
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.size = m.stat().st_size
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with m.open("rb") as f:
                tar.addfile(info, f)


def _final_status(spec: ProductSpec, written: WrittenProduct | None) -> tuple[str, str]:
    """The status the catalog's rules give this product (default scan config)."""
    if spec.broken:
        return spec.expected_status, spec.expected_reason
    if spec.role == "duplicate":
        return "duplicate", "older processor version"
    if spec.sun_elevation < 0:
        return "night", "sun below horizon"
    assert written is not None
    if written.covers["cloud"] + written.covers["cirrus"] > 50.0:
        return "cloudy", "cloud cover above limit"
    return "ok", ""


def _progress(items: Iterable[Any], total: int, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="writing products", unit="product", leave=False)


def make_archive(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    broken: bool = False,
    packaging: str = "folders",
    *,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> SynthReport:
    """Write a synthetic EnMAP L2A archive into ``out`` and return its report.

    ``overrides`` replace preset parameters (``tile_px``, ``n_bands``, ``tiles_per_datatake``,
    ``revisits_eu``, ``revisits_us``, ``landscape_scale``).  ``out`` must be empty or absent;
    with ``overwrite`` a previous synthetic archive there (one with a manifest) is removed
    first.
    """
    params = resolve_params(preset, **overrides)
    if packaging not in PACKAGINGS:
        raise SynthError(f"unknown packaging {packaging!r} (expected one of {PACKAGINGS})")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if overwrite and (out / MANIFEST).exists():
            shutil.rmtree(out)
        else:
            raise SynthError(f"{out}: folder is not empty (use overwrite for a previous archive)")
    out.mkdir(parents=True, exist_ok=True)

    specs = plan_layout(params, seed)
    maps = site_maps(specs, params, seed)  # from the plan alone, as land_cover_maps rebuilds them
    if broken:
        specs += broken_specs(specs, params, seed)
    ctx = RenderContext(params, seed, maps)
    deliveries = _deliveries(specs, packaging)

    written: dict[int, WrittenProduct] = {}
    with temp_folder(out) as tmp:
        jobs: list[tuple[ProductSpec, str, Delivery]] = []
        for s in specs:
            d = deliveries[s.index]
            if s.broken == "zero-byte zip":
                continue
            if d.kind in ("zip", "tar.gz"):
                folder = Path(tmp) / s.name.stem / s.name.stem
            else:
                folder = out / d.file_stem(s)
            jobs.append((s, str(folder), d))
        task = _WriteOne(ctx)
        mapper: Callable[..., Iterable[WrittenProduct]] = map
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            if pool is not None:
                mapper = pool.map
            for job, result in zip(jobs, _progress(mapper(task, jobs), len(jobs), progress)):
                written[job[0].index] = result
        finally:
            if pool is not None:
                pool.shutdown()
        tar_members = []
        for s in specs:
            d = deliveries[s.index]
            if s.broken == "zero-byte zip":
                (out / f"{s.name.stem}.ZIP").write_bytes(b"")
            elif d.kind in ("zip", "tar.gz"):
                target = out if d.kind == "zip" else Path(tmp)
                archive = target / f"{s.name.stem}.ZIP"
                _zip_folder(
                    Path(tmp) / s.name.stem / s.name.stem,
                    archive,
                    s.name.stem,
                    s.name.processing_time.timetuple()[:6],
                )
                if d.kind == "tar.gz":
                    tar_members.append(archive)
        if tar_members:
            mtime = int(max(s.name.processing_time for s in specs).timestamp())
            _tar_gz(tar_members, out / TAR_NAME, mtime)

    labels = tuple(write_label(ls, maps[ls.site], out) for ls in LABEL_SPECS)

    products = []
    final_specs = []
    for s in specs:
        d = deliveries[s.index]
        w = written.get(s.index)
        status, reason = _final_status(s, w)
        final_specs.append(replace(s, expected_status=status, expected_reason=reason))
        if d.kind == "zip":
            path = f"{s.name.stem}.ZIP"
        elif d.kind == "tar.gz":
            path = f"{TAR_NAME}!{s.name.stem}.ZIP"
        else:
            path = d.file_stem(s)
        covers = w.covers if w else {"cloud": 0.0, "haze": 0.0, "cirrus": 0.0, "snow": 0.0}
        products.append(
            SynthProduct(
                product_id=s.name.stem,
                path=path,
                delivery=d.kind,
                site=s.site,
                role=s.role,
                broken=s.broken,
                expected_status=status,
                expected_reason=reason,
                datatake=s.name.datatake,
                tile=s.name.tile,
                start_time=s.start_time.isoformat(),
                processor_version=s.name.processor_version,
                grid=s.grid,
                sun_elevation=s.sun_elevation,
                cloud_cover=covers["cloud"],
                haze_cover=covers["haze"],
                cirrus_cover=covers["cirrus"],
                snow_cover=covers["snow"],
                valid_fraction=round(w.valid_fraction, 4) if w else 0.0,
            )
        )
    if not any(p.expected_status == "cloudy" for p in products):
        raise RuntimeError(f"seed {seed}: the overcast acquisition came out below 50% cloud")

    coverage = []
    hotspots = []
    for site_name in SITES:
        stats, at_hot = coverage_stats(final_specs, site_name, params)
        coverage += [(site_name, k, a) for k, a in stats]
        hotspots.append((site_name, at_hot))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.name != MANIFEST)
    report = SynthReport(
        out=str(out),
        preset=preset,
        seed=seed,
        params=params,
        broken=broken,
        packaging=packaging,
        products=tuple(products),
        labels=labels,
        coverage=tuple(coverage),
        hotspot_dates=tuple(hotspots),
        total_bytes=total,
    )
    (out / MANIFEST).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


__all__ = [
    "MANIFEST",
    "PRESETS",
    "SynthError",
    "SynthParams",
    "SynthProduct",
    "SynthReport",
    "land_cover_maps",
    "make_archive",
    "read_manifest",
    "resolve_params",
    "site_maps",
]
