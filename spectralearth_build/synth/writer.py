"""Rendering one synthetic product and writing its files in the EnMAP L2A layout.

Rendering works on the valid pixels only.  Pixel centres of the product's UTM grid are
transformed into the site's frame CRS; the swath rectangle gives the valid mask, the land-cover
map the class of each pixel, and static ground fields (vigour, brightness) the within-class
texture.  Per-datatake fields (seeded by the datatake, evaluated in ground coordinates so that
consecutive tiles agree in their overlap) give clouds with their shadows and haze rims, cirrus
levels and snow.  Clouds and snow are extra rows of the spectral table, so every band is one
gather per pixel: ``(base[c] + G * delta[c]) * shade + haze + cirrus``, times ``10000``, plus
band-dependent noise.  Bands are written one at a time (strips, DEFLATE with predictor 2, band
interleaved, like the real files), so memory stays at a few bands even for full-size tiles.

Nothing here depends on the wall clock, the file system order or the process: the same spec,
seed and parameters give byte-identical files (GDAL writes no time stamps into GeoTIFFs).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from ..bands import reference_bands
from ..crs import transformer
from ..enmap.metadata import ProductMetadata, metadata_to_xml
from ..enmap.naming import PREFIX
from ..formats import NODATA
from . import spectra
from .landcover import LandCoverMap, SmoothField
from .layout import PIXEL_M, SITES, ProductSpec
from .presets import SynthParams

NODATA_BANDS_1BASED = range(130, 136)
"""Bands (1-based, of the 224-band layout) that are all nodata in real products."""
QUALITY_LAYERS = ("CLASSES", "CLOUD", "CLOUDSHADOW", "HAZE", "CIRRUS", "SNOW", "TESTFLAGS")
_CLOUD_HEIGHT_M = 1500.0
_GTIFF = {
    "driver": "GTiff",
    "compress": "deflate",
    "predictor": 2,
    "zlevel": 1,
    "interleave": "band",
    "tiled": False,
}
_BANDS_PER_WRITE = 16


def band_subset(n_bands: int) -> np.ndarray:
    """0-based indices into the 224 reference bands: all of them, or an evenly spaced subset."""
    wl, _ = reference_bands()
    if n_bands >= wl.size:
        return np.arange(wl.size)
    return np.unique(np.linspace(0, wl.size - 1, n_bands).round().astype(np.int64))[:n_bands]


@dataclass(frozen=True)
class Delivery:
    """How a product's files are named: prefix-less names, COG image, lower-case metadata."""

    kind: str = "folder"
    """``folder``, ``zip``, ``tar.gz``, ``cog``, ``no-prefix`` or ``lowercase-metadata``."""

    def file_stem(self, spec: ProductSpec) -> str:
        stem = spec.name.stem
        return stem[len(PREFIX) :] if self.kind == "no-prefix" else stem

    def image_suffix(self) -> str:
        return "SPECTRAL_IMAGE_COG" if self.kind == "cog" else "SPECTRAL_IMAGE"

    def metadata_file(self, spec: ProductSpec) -> str:
        ext = "xml" if self.kind == "lowercase-metadata" else "XML"
        return f"{self.file_stem(spec)}-METADATA.{ext}"


@dataclass
class RenderContext:
    """What every product of an archive shares (picklable, sent to worker processes)."""

    params: SynthParams
    seed: int
    maps: dict[str, LandCoverMap]
    bands: np.ndarray = field(init=False)
    wavelengths: np.ndarray = field(init=False)
    fwhm: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        wl, fw = reference_bands()
        self.bands = band_subset(self.params.n_bands)
        self.wavelengths = wl[self.bands]
        self.fwhm = fw[self.bands]


@dataclass(frozen=True)
class Rendered:
    """Quality layers and cover statistics of a rendered product (image bands are streamed)."""

    valid: np.ndarray
    layers: dict[str, np.ndarray]
    covers: dict[str, float]
    valid_fraction: float


def _pixel_centres(spec: ProductSpec) -> tuple[np.ndarray, np.ndarray]:
    """Frame-CRS coordinates of every pixel centre, each shaped ``(y, x)``."""
    a, _, c, _, e, f = spec.grid.transform
    h, w = spec.grid.shape_yx
    cols = c + a * (np.arange(w) + 0.5)
    rows = f + e * (np.arange(h) + 0.5)
    ux, uy = np.meshgrid(cols, rows)
    tr = transformer(spec.grid.crs, spec.frame_crs)
    fx, fy = tr.transform(ux.ravel(), uy.ravel())
    return np.asarray(fx).reshape(h, w), np.asarray(fy).reshape(h, w)


class _Scene:
    """Per-pixel fields of one product, on its valid pixels (1-D arrays)."""

    def __init__(self, spec: ProductSpec, ctx: RenderContext):
        params = ctx.params
        fx, fy = _pixel_centres(spec)
        self.valid = spec.inside(fx, fy)
        self.flat = np.flatnonzero(self.valid.ravel())
        x, y = fx.ravel()[self.flat], fy.ravel()[self.flat]
        lc = ctx.maps[spec.site]
        self.cls = lc.class_at(x, y)
        site_id = list(SITES).index(spec.site)
        swath_m = params.tile_px * PIXEL_M
        ground = np.random.default_rng([ctx.seed, 3, site_id])
        vigour = SmoothField(ground, (200, 1500), lc.hotspot)(x, y)
        bright = SmoothField(ground, (100, 900), lc.hotspot)(x, y)
        doy = spec.start_time.timetuple().tm_yday
        g = spectra.greenness(doy)[self.cls]
        self.g = np.clip(g * (1 + 0.15 * vigour), 0, 1).astype(np.float32)
        self.mult = (1 + 0.06 * bright).astype(np.float32)
        n = x.size
        self.haze = np.zeros(n, np.float32)
        self.cirrus = np.zeros(n, np.uint8)
        cloud = np.zeros(n, bool)
        shadow = np.zeros(n, bool)
        snow = np.zeros(n, bool)
        sky = np.random.default_rng([ctx.seed, 4, spec.name.datatake])
        scale = (0.12 * swath_m, 0.45 * swath_m)
        if spec.sky in ("clouds", "cirrus", "overcast"):
            field_ = SmoothField(sky, scale, lc.hotspot, n_waves=10)
            thr = {"clouds": 1.45, "cirrus": 1.8, "overcast": -1.6}[spec.sky]
            cloud = field_(x, y) > thr
            rim = (field_(x, y) > thr - 0.35) & ~cloud
            self.haze[rim] = 0.6
            if spec.sun_elevation > 5:
                d = _CLOUD_HEIGHT_M / math.tan(math.radians(spec.sun_elevation))
                az = math.radians(spec.sun_azimuth)
                sx, sy = x + d * math.sin(az), y + d * math.cos(az)
                shadow = (field_(sx, sy) > thr) & ~cloud
        if spec.sky == "cirrus":
            ci = SmoothField(sky, (0.3 * swath_m, 0.9 * swath_m), lc.hotspot)(x, y)
            self.cirrus = np.digitize(ci, [0.9, 1.4, 1.9]).astype(np.uint8)
        if spec.sky == "snow":
            sn = SmoothField(sky, (0.1 * swath_m, 0.5 * swath_m), lc.hotspot)(x, y)
            open_land = np.isin(
                self.cls,
                [
                    spectra.CLASS_INDEX[c]
                    for c in ("corn", "soybean", "grassland", "bare", "urban_low")
                ],
            )
            snow = (sn > 0.2) & open_land
        n_cls = len(spectra.CLASSES)
        self.ext = np.where(cloud, n_cls, np.where(snow, n_cls + 1, self.cls)).astype(np.int8)
        tex = SmoothField(sky, (300, 1200), lc.hotspot)(x, y)
        self.mult = np.where(cloud, 0.92 + 0.08 * tex, self.mult)
        self.mult = np.where(snow, 0.93 + 0.05 * tex, self.mult)
        self.mult = np.where(shadow, 0.3 * self.mult, self.mult).astype(np.float32)
        if spec.night:
            self.mult[:] = 0.0
            self.haze[:] = 0.0
        self.cloud, self.shadow, self.snow = cloud, shadow, snow

    def layers(self) -> dict[str, np.ndarray]:
        shape = self.valid.shape

        def full(values: np.ndarray, outside: int = 0) -> np.ndarray:
            out = np.full(shape, outside, np.uint8)
            out.ravel()[self.flat] = values
            return out

        classes = np.where(self.cls == spectra.WATER, 2, 1).astype(np.uint8)
        return {
            "CLASSES": full(classes, outside=3),
            "CLOUD": full(self.cloud.astype(np.uint8)),
            "CLOUDSHADOW": full(self.shadow.astype(np.uint8)),
            "HAZE": full((self.haze > 0).astype(np.uint8)),
            "CIRRUS": full(self.cirrus),
            "SNOW": full(self.snow.astype(np.uint8)),
            "TESTFLAGS": np.zeros(shape, np.uint8),
        }

    def covers(self) -> dict[str, float]:
        n = max(self.flat.size, 1)

        def pct(m: np.ndarray) -> float:
            return round(100.0 * float(np.count_nonzero(m)) / n, 2)

        return {
            "cloud": pct(self.cloud),
            "haze": pct(self.haze > 0),
            "cirrus": pct(self.cirrus > 0),
            "snow": pct(self.snow),
        }


def _spectral_tables(wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(base, delta)`` of shape ``(n_bands, n_classes + 2)``: land classes, cloud, snow."""
    base, delta = spectra.class_spectra(wl)
    base = np.vstack([base, spectra.cloud(wl), spectra.snow(wl)])
    delta = np.vstack([delta, np.zeros((2, wl.size))])
    atten = spectra.vapour_attenuation(wl)
    return (base * atten).T.astype(np.float32), (delta * atten).T.astype(np.float32)


def _iter_band_chunks(
    scene: _Scene, spec: ProductSpec, ctx: RenderContext, count: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield ``(band numbers, int16 array (c, y, x))`` for bands 1..count, a few at a time."""
    wl = ctx.wavelengths
    base, delta = _spectral_tables(wl)
    haze_spec = spectra.haze(wl).astype(np.float32)
    sigma = spectra.noise_sigma(wl)
    rng = np.random.default_rng(
        [ctx.seed, 5, spec.content_of if spec.content_of is not None else spec.index]
    )
    h, w = spec.grid.shape_yx
    cirrus = scene.cirrus.astype(np.float32) * np.float32(0.012)
    for b0 in range(0, count, _BANDS_PER_WRITE):
        numbers = list(range(b0 + 1, min(count, b0 + _BANDS_PER_WRITE) + 1))
        j = np.array([(n - 1) % wl.size for n in numbers])
        noise = rng.standard_normal((j.size, scene.flat.size), dtype=np.float32)
        r = (base[j][:, scene.ext] + scene.g * delta[j][:, scene.ext]) * scene.mult
        r += scene.haze * haze_spec[j][:, None] + cirrus
        dn = np.rint(r * np.float32(10000.0) + noise * sigma[j][:, None])
        out = np.full((j.size, h * w), NODATA, np.int16)
        out[:, scene.flat] = np.clip(dn, -32767, 32767).astype(np.int16)
        dead = np.isin(ctx.bands[j] + 1, NODATA_BANDS_1BASED)
        out[dead] = NODATA
        yield numbers, out.reshape(j.size, h, w)


def _write_image(
    path: Path,
    scene: _Scene,
    spec: ProductSpec,
    ctx: RenderContext,
    count: int,
    crs: str | None,
    cog: bool,
) -> None:
    h, w = spec.grid.shape_yx
    profile = dict(
        _GTIFF,
        height=h,
        width=w,
        count=count,
        dtype="int16",
        nodata=NODATA,
        crs=crs,
        transform=rasterio.Affine(*spec.grid.transform),
    )
    target = path.with_name(path.name + ".tmp.tif") if cog else path
    with rasterio.open(target, "w", **profile) as dst:
        for numbers, bands in _iter_band_chunks(scene, spec, ctx, count):
            dst.write(bands, numbers)
    if cog:
        rasterio.shutil.copy(
            target, path, driver="COG", compress="DEFLATE", predictor=2, overviews="NONE"
        )
        target.unlink()


def _write_uint8(path: Path, data: np.ndarray, spec: ProductSpec, count: int = 1) -> None:
    h, w = data.shape
    profile = dict(
        _GTIFF,
        height=h,
        width=w,
        count=count,
        dtype="uint8",
        crs=spec.grid.crs,
        transform=rasterio.Affine(*spec.grid.transform),
    )
    with rasterio.open(path, "w", **profile) as dst:
        block = np.broadcast_to(data, (min(count, _BANDS_PER_WRITE), h, w))
        for b0 in range(1, count + 1, _BANDS_PER_WRITE):
            n = min(_BANDS_PER_WRITE, count - b0 + 1)
            dst.write(np.ascontiguousarray(block[:n]), list(range(b0, b0 + n)))


def product_metadata(
    spec: ProductSpec, ctx: RenderContext, covers: dict[str, float]
) -> ProductMetadata:
    """The METADATA.XML content of one synthetic product (``covers``: quality-flag percentages)."""
    n = ctx.wavelengths.size
    return ProductMetadata(
        name=spec.name.stem,
        start_time=spec.start_time,
        stop_time=spec.stop_time,
        corners_lonlat=spec.corners_lonlat,
        cloud_cover=covers["cloud"],
        haze_cover=covers["haze"],
        cirrus_cover=covers["cirrus"],
        snow_cover=covers["snow"],
        sun_elevation=spec.sun_elevation,
        wavelengths=tuple(float(v) for v in ctx.wavelengths),
        fwhm=tuple(float(v) for v in ctx.fwhm),
        gains=(0.0001,) * n,
        offsets=(0.0,) * n,
        projection=f"UTM_Zone{spec.zone}_North",
        datatake_id=spec.name.datatake,
        tile_id=spec.name.tile,
        number_of_tiles=spec.number_of_tiles,
        revision=spec.name.version_dotted,
        processing_time=spec.name.processing_time,
    )


@dataclass(frozen=True)
class WrittenProduct:
    """What writing a product produced: cover percentages and valid fraction."""

    covers: dict[str, float]
    valid_fraction: float
    files: tuple[str, ...]


def write_product(
    spec: ProductSpec,
    ctx: RenderContext,
    folder: Path,
    delivery: Delivery,
    copy_from: Path | None = None,
) -> WrittenProduct:
    """Write the product's files into ``folder`` (created), applying ``spec.broken`` damage.

    With ``copy_from`` (the folder of the product whose pixels this one shares) the rasters are
    copied instead of rendered.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = delivery.file_stem(spec)
    n = ctx.wavelengths.size
    image = folder / f"{stem}-{delivery.image_suffix()}.TIF"
    raster_names = [f"{stem}-QL_QUALITY_{q}.TIF" for q in QUALITY_LAYERS]
    raster_names += [f"{stem}-QL_PIXELMASK.TIF"]
    if copy_from is not None:
        src_stem = next(p.name for p in copy_from.iterdir() if p.name.endswith("-METADATA.XML"))
        src_stem = src_stem[: -len("-METADATA.XML")]
        for name in [image.name, *raster_names]:
            shutil.copyfile(copy_from / name.replace(stem, src_stem, 1), folder / name)
        with rasterio.open(folder / raster_names[0]) as src:
            valid = src.read(1) != 3
        covers = _covers_from_files(folder, stem, valid)
        valid_fraction = float(valid.mean())
    else:
        scene = _Scene(spec, ctx)
        layers = scene.layers()
        covers = scene.covers()
        valid_fraction = float(scene.valid.mean())
        count = n
        if spec.broken == "wrong band count":
            count = n - 24 if n > 24 else n + 8
        crs = None if spec.broken == "no CRS" else spec.grid.crs
        _write_image(image, scene, spec, ctx, count, crs, cog=delivery.kind == "cog")
        for q in QUALITY_LAYERS:
            _write_uint8(folder / f"{stem}-QL_QUALITY_{q}.TIF", layers[q], spec)
        _write_uint8(
            folder / f"{stem}-QL_PIXELMASK.TIF",
            np.zeros(spec.grid.shape_yx, np.uint8),
            spec,
            count=n,
        )
    files = sorted([image.name, *raster_names, delivery.metadata_file(spec)])
    xml = metadata_to_xml(
        product_metadata(spec, ctx, covers),
        spec.centre_lonlat,
        files,
        spec.grid.width,
        spec.grid.height,
    )
    if spec.broken == "malformed metadata":
        xml = xml[: len(xml) // 2]
    if spec.broken != "missing metadata":
        (folder / delivery.metadata_file(spec)).write_bytes(xml)
    if spec.broken == "zero-byte image":
        image.write_bytes(b"")
    elif spec.broken == "truncated image":
        _truncate_keeping_header(image)
    return WrittenProduct(covers, valid_fraction, tuple(sorted(p.name for p in folder.iterdir())))


def _covers_from_files(folder: Path, stem: str, valid: np.ndarray) -> dict[str, float]:
    n = max(int(valid.sum()), 1)
    out = {}
    for key, layer in (
        ("cloud", "CLOUD"),
        ("haze", "HAZE"),
        ("cirrus", "CIRRUS"),
        ("snow", "SNOW"),
    ):
        with rasterio.open(folder / f"{stem}-QL_QUALITY_{layer}.TIF") as src:
            out[key] = round(100.0 * float(np.count_nonzero(src.read(1)[valid])) / n, 2)
    return out


def _truncate_keeping_header(path: Path) -> None:
    """Cut a GeoTIFF in the middle; its first IFD (GDAL writes it at the start) stays intact."""
    data = path.read_bytes()
    first_ifd = int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big")
    cut = len(data) // 2
    if first_ifd > cut:
        raise RuntimeError(f"{path}: the TIFF directory is not at the start of the file")
    path.write_bytes(data[:cut])


def remove_tree(path: Path) -> None:
    """Delete a folder and everything in it (errors are raised)."""
    shutil.rmtree(path, ignore_errors=False)


def temp_folder(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A scratch folder inside ``parent`` (same file system, removed afterwards)."""
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".synth-", dir=os.fspath(parent))
