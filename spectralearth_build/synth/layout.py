"""Where and when the synthetic products are acquired: pure geometry and time, no pixels.

Two sites are imaged: a European one just west of 12 deg E (so products fall in UTM zones 32
and 33, each in the zone of its scene centre) and a US one in Iowa (zone 15).  Each site has a
hotspot that every datatake passes over.  A datatake is a run of consecutive tiles along a
descending ground track (heading from the orbit inclination, 97.96 deg: about 191 deg); tiles
of one datatake overlap by 14 lines.  Revisits on other dates are shifted across track
(off-nadir pointing) and along track by different fractions of the swath, so the ground near
the hotspot is covered by every date and the coverage falls off to 1 away from it.

The swath of a tile is a rectangle in the site's *frame* CRS (the label CRS: EPSG:3035 in
Europe, EPSG:5070 in the US), ``width_px`` across and ``length_px`` along track.  The product
raster is the north-up UTM grid holding it, with a small margin, origin on the 15-mod-30 m
lattice.  Pixel masks are computed later by transforming pixel centres back into the frame.

Special acquisitions: a fully cloudy date, a winter date with snow, dates with cloud blobs or
cirrus, an ascending night pass, and two older processor versions of one tile (reprocessing
duplicates).  Broken products for robustness tests are separate specs (``broken`` set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import numpy as np
from pyproj import Transformer

from ..crs import transformer
from ..enmap.naming import ProductName
from ..grid import PixelGrid
from .presets import SynthParams

PIXEL_M = 30.0
TILE_OVERLAP_LINES = 14
GROUND_SPEED_M_S = 6700.0
INCLINATION_DEG = 97.96
PROCESSOR_VERSION = "010402"
OLD_VERSIONS = ("010100", "010111")


@dataclass(frozen=True)
class Site:
    """An imaged region: hotspot, frame CRS (= label CRS) and landscape style."""

    name: str
    hotspot_lonlat: tuple[float, float]
    frame_crs: str
    landscape: str
    """``"parcels"`` (irregular Voronoi parcels) or ``"sections"`` (square fields)."""


SITES: dict[str, Site] = {
    "europe": Site("europe", (12.0, 48.37), "EPSG:3035", "parcels"),
    "us": Site("us", (-93.55, 42.05), "EPSG:5070", "sections"),
}

# (date, sky) of the European and US revisits; sky in clear|clouds|cirrus|overcast|snow.
_EU_DATES = [
    ("2023-04-18", "clouds"),
    ("2023-05-27", "clear"),
    ("2023-06-14", "cirrus"),
    ("2023-07-09", "overcast"),
    ("2023-08-03", "clear"),
    ("2023-09-12", "clouds"),
    ("2024-02-06", "snow"),
    ("2024-05-02", "clear"),
]
_US_DATES = [
    ("2023-05-21", "clear"),
    ("2023-06-30", "clouds"),
    ("2023-07-25", "clear"),
    ("2023-08-19", "clear"),
    ("2023-09-30", "clear"),
    ("2023-10-12", "clouds"),
]
_NIGHT_DATE = "2023-09-20"
# Across-track (+ = east) and along-track offsets of successive revisits, in swath fractions.
_ACROSS = [0.0, -0.15, 0.12, -0.06, 0.18, 0.08, -0.20, 0.28, -0.32, 0.36, -0.40, 0.22]
_ALONG = [0.0, 0.15, -0.20, 0.30, -0.10, 0.22, -0.28, 0.35, -0.35, 0.10, -0.05, 0.25]


@dataclass(frozen=True)
class ProductSpec:
    """Everything needed to render one product (no pixels)."""

    index: int
    """Position in the archive; per-product random streams are seeded by (seed, index)."""
    name: ProductName
    site: str
    role: str
    """``regular``, ``duplicate``, ``night``, ``cloudy``, ``snow`` or ``broken``."""
    sky: str
    night: bool
    centre_xy: tuple[float, float]
    """Swath centre in the site's frame CRS (m)."""
    heading_deg: float
    """Along-track direction in the frame CRS, clockwise from the frame's north."""
    start_time: datetime
    """Acquisition start (with microseconds; the product name keeps whole seconds)."""
    width_px: int
    length_px: int
    stop_time: datetime
    number_of_tiles: int
    grid: PixelGrid
    corners_lonlat: tuple[tuple[float, float], ...]
    """Valid swath corners: upper_left, upper_right, lower_right, lower_left."""
    centre_lonlat: tuple[float, float]
    sun_elevation: float
    sun_azimuth: float
    expected_status: str = "ok"
    expected_reason: str = ""
    content_of: int | None = None
    """Index of the product whose files this one copies (reprocessing duplicates)."""
    broken: str = ""
    """Kind of damage for broken products (see :data:`BROKEN_KINDS`), else empty."""

    @property
    def frame_crs(self) -> str:
        return SITES[self.site].frame_crs

    @property
    def epsg(self) -> int:
        return int(self.grid.crs.split(":")[1])

    @property
    def zone(self) -> int:
        return self.epsg % 100

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (along track, across track pointing east) in the frame CRS."""
        h = math.radians(self.heading_deg)
        along = np.array([math.sin(h), math.cos(h)])
        across = np.array([along[1], -along[0]])
        if across[0] < 0:
            across = -across
        return along, across

    def frame_corners(self) -> np.ndarray:
        """Swath corners ``(4, 2)`` in the frame CRS.

        Order: upper_left, upper_right, lower_right, lower_left (upper = first line; left = west).
        """
        along, across = self.axes()
        c = np.asarray(self.centre_xy)
        half_l = 0.5 * self.length_px * PIXEL_M * along
        half_w = 0.5 * self.width_px * PIXEL_M * across
        return np.stack(
            [c - half_l - half_w, c - half_l + half_w, c + half_l + half_w, c + half_l - half_w]
        )

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bool mask: frame-CRS points inside the swath rectangle."""
        along, across = self.axes()
        dx, dy = x - self.centre_xy[0], y - self.centre_xy[1]
        u = dx * along[0] + dy * along[1]
        v = dx * across[0] + dy * across[1]
        return (np.abs(u) <= 0.5 * self.length_px * PIXEL_M) & (
            np.abs(v) <= 0.5 * self.width_px * PIXEL_M
        )


BROKEN_KINDS: dict[str, str] = {
    "zero-byte image": "zero-byte file",
    "truncated image": "truncated or corrupt image",
    "malformed metadata": "metadata malformed",
    "wrong band count": "wrong band count",
    "no CRS": "no CRS",
    "missing metadata": "metadata missing",
    "zero-byte zip": "unreadable archive",
}
"""Broken product kinds and the catalog ``reason`` each must get (status ``invalid``)."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM/WGS84 zone holding (lon, lat)."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def solar_position(lon: float, lat: float, t: datetime) -> tuple[float, float]:
    """Approximate solar (elevation, azimuth) in degrees at (lon, lat) and UTC time ``t``."""
    doy = t.timetuple().tm_yday
    hours = t.hour + t.minute / 60 + t.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
    )
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    solar_min = hours * 60 + eqtime + 4 * lon
    ha = math.radians(solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = (
        math.degrees(
            math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
        )
        + 180.0
    )
    return 90.0 - math.degrees(zen), az % 360.0


def track_heading(lat: float, ascending: bool) -> float:
    """True heading (deg) of a sun-synchronous ground track at latitude ``lat``."""
    alpha = math.degrees(
        math.asin(abs(math.cos(math.radians(INCLINATION_DEG))) / math.cos(math.radians(lat)))
    )
    return 360.0 - alpha if ascending else 180.0 + alpha


def hotspot_lonlat(site: str, params: SynthParams) -> tuple[float, float]:
    """The site's hotspot (lon, lat).

    In Europe it sits 5% of a swath west of the zone 32/33 boundary, so that revisits pointing
    east have their scene centre in zone 33.
    """
    lon, lat = SITES[site].hotspot_lonlat
    if site == "europe":
        lon -= 0.05 * params.tile_px * PIXEL_M / (111_320.0 * math.cos(math.radians(lat)))
    return lon, lat


def _north_angle(tr: Transformer, lon: float, lat: float) -> float:
    """Angle (deg, clockwise) of true north in the frame CRS at (lon, lat)."""
    x0, y0 = tr.transform(lon, lat)
    x1, y1 = tr.transform(lon, lat + 0.01)
    return math.degrees(math.atan2(x1 - x0, y1 - y0))


def _grid_for(corners_xy: np.ndarray, epsg: int, margin_px: int) -> PixelGrid:
    xs, ys = corners_xy[:, 0], corners_xy[:, 1]
    x0 = math.floor((xs.min() - margin_px * PIXEL_M - 15.0) / PIXEL_M) * PIXEL_M + 15.0
    y0 = math.ceil((ys.max() + margin_px * PIXEL_M - 15.0) / PIXEL_M) * PIXEL_M + 15.0
    width = math.ceil((xs.max() + margin_px * PIXEL_M - x0) / PIXEL_M)
    height = math.ceil((y0 - ys.min() + margin_px * PIXEL_M) / PIXEL_M)
    return PixelGrid(f"EPSG:{epsg}", (PIXEL_M, 0.0, x0, 0.0, -PIXEL_M, y0), (height, width))


@dataclass(frozen=True)
class _Datatake:
    site: str
    start: datetime
    sky: str
    across: float
    along: float
    n_tiles: int
    night: bool


def _datatakes(params: SynthParams, rng: np.random.Generator) -> list[_Datatake]:
    out: list[_Datatake] = []
    eu = list(_EU_DATES)
    d = datetime(2024, 6, 10)
    while len(eu) < params.revisits_eu:
        eu.append((d.strftime("%Y-%m-%d"), "clouds" if len(eu) % 2 else "clear"))
        d += timedelta(days=23)
    us = list(_US_DATES)
    d = datetime(2024, 5, 14)
    while len(us) < params.revisits_us:
        us.append((d.strftime("%Y-%m-%d"), "clouds" if len(us) % 3 == 0 else "clear"))
        d += timedelta(days=19)
    for site, dates, count in (("europe", eu, params.revisits_eu), ("us", us, params.revisits_us)):
        lon = SITES[site].hotspot_lonlat[0]
        utc_hours = 10.5 - lon / 15.0  # local solar time of the descending node ~10:30
        for i, (day, sky) in enumerate(dates[:count]):
            minutes = utc_hours * 60 + float(rng.uniform(-12, 12))
            start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(
                minutes=minutes
            )
            start = start.replace(microsecond=int(rng.integers(0, 1_000_000)))
            across = _ACROSS[i % len(_ACROSS)] + float(rng.uniform(-0.02, 0.02))
            along = _ALONG[i % len(_ALONG)] + float(rng.uniform(-0.02, 0.02))
            out.append(_Datatake(site, start, sky, across, along, params.tiles_per_datatake, False))
    night = datetime.fromisoformat(_NIGHT_DATE).replace(tzinfo=timezone.utc) + timedelta(
        hours=21, minutes=float(rng.uniform(0, 20)), microseconds=int(rng.integers(0, 10**6))
    )
    out.append(_Datatake("europe", night, "clear", 0.05, 0.1, 1, True))
    out.sort(key=lambda dt: dt.start)
    return out


def plan_layout(params: SynthParams, seed: int) -> list[ProductSpec]:
    """The products of an archive (without broken ones), in index order."""
    rng = np.random.default_rng([seed, 1])
    specs: list[ProductSpec] = []
    to_frame = {s: transformer("EPSG:4326", SITES[s].frame_crs) for s in SITES}
    to_lonlat = {s: transformer(SITES[s].frame_crs, "EPSG:4326") for s in SITES}
    length_m = params.tile_px * PIXEL_M
    step_m = (params.tile_px - TILE_OVERLAP_LINES) * PIXEL_M
    for dt_index, dt in enumerate(_datatakes(params, rng)):
        lon, lat = hotspot_lonlat(dt.site, params)
        true_heading = track_heading(lat, dt.night) + float(rng.uniform(-0.4, 0.4))
        heading = true_heading + _north_angle(to_frame[dt.site], lon, lat)
        hx, hy = to_frame[dt.site].transform(lon, lat)
        h = math.radians(heading)
        along = np.array([math.sin(h), math.cos(h)])
        across = np.array([along[1], -along[0]])
        if across[0] < 0:
            across = -across
        datatake_id = 12000 + 17 * dt_index
        for k in range(dt.n_tiles):
            centre = (
                np.array([hx, hy])
                + (dt.along * length_m + k * step_m) * along
                + dt.across * length_m * across
            )
            start = dt.start + timedelta(seconds=k * step_m / GROUND_SPEED_M_S)
            stop = start + timedelta(seconds=length_m / GROUND_SPEED_M_S)
            processing = (start + timedelta(days=1, hours=3)).replace(microsecond=0)
            name = ProductName(
                datatake_id, start.replace(microsecond=0), k + 1, PROCESSOR_VERSION, processing
            )
            spec = _make_spec(
                len(specs),
                name,
                dt.site,
                dt.sky,
                dt.night,
                (float(centre[0]), float(centre[1])),
                heading,
                params.tile_px,
                start,
                stop,
                dt.n_tiles,
                to_lonlat[dt.site],
                margin_px=1 + params.tile_px // 250 + int(rng.integers(0, 2)),
            )
            specs.append(spec)
    # Reprocessing duplicates: older processor versions of the second European date, tile 1.
    eu_first = [s for s in specs if s.site == "europe" and not s.night and s.name.tile == 1]
    target = eu_first[1]
    for j, version in enumerate(OLD_VERSIONS):
        processing = target.name.start_time + timedelta(hours=6 + 30 * j)
        old = replace(
            target,
            index=len(specs),
            name=replace(target.name, processor_version=version, processing_time=processing),
            role="duplicate",
            expected_status="duplicate",
            expected_reason="older processor version",
            content_of=target.index,
        )
        specs.append(old)
    return specs


def _make_spec(
    index: int,
    name: ProductName,
    site: str,
    sky: str,
    night: bool,
    centre_xy: tuple[float, float],
    heading: float,
    tile_px: int,
    start: datetime,
    stop: datetime,
    n_tiles: int,
    to_lonlat: Transformer,
    margin_px: int,
) -> ProductSpec:
    proto = ProductSpec(
        index=index,
        name=name,
        site=site,
        role="regular",
        sky=sky,
        night=night,
        centre_xy=centre_xy,
        heading_deg=heading,
        start_time=start,
        width_px=tile_px,
        length_px=tile_px,
        stop_time=stop,
        number_of_tiles=n_tiles,
        grid=PixelGrid("EPSG:4326", (1, 0, 0, 0, -1, 0), (1, 1)),
        corners_lonlat=(),
        centre_lonlat=(0.0, 0.0),
        sun_elevation=0.0,
        sun_azimuth=0.0,
    )
    fc = proto.frame_corners()
    lons, lats = to_lonlat.transform(fc[:, 0], fc[:, 1])
    clon, clat = to_lonlat.transform(*centre_xy)
    epsg = utm_epsg(clon, clat)
    to_utm = transformer("EPSG:4326", f"EPSG:{epsg}")
    ux, uy = to_utm.transform(lons, lats)
    grid = _grid_for(np.column_stack([ux, uy]), epsg, margin_px)
    mid = start + (stop - start) / 2
    elev, az = solar_position(clon, clat, mid)
    role = "night" if night else {"overcast": "cloudy", "snow": "snow"}.get(sky, "regular")
    status, reason = {
        "night": ("night", "sun below horizon"),
        "cloudy": ("cloudy", "cloud cover above limit"),
    }.get(role, ("ok", ""))
    return replace(
        proto,
        role=role,
        grid=grid,
        corners_lonlat=tuple((float(a), float(b)) for a, b in zip(lons, lats)),
        centre_lonlat=(float(clon), float(clat)),
        sun_elevation=round(elev, 4),
        sun_azimuth=round(az, 4),
        expected_status=status,
        expected_reason=reason,
    )


def broken_specs(specs: list[ProductSpec], params: SynthParams, seed: int) -> list[ProductSpec]:
    """One product per broken kind, small and on their own datatakes in the US site."""
    us = [s for s in specs if s.site == "us" and s.role == "regular"]
    template = us[0]
    to_lonlat = transformer(SITES["us"].frame_crs, "EPSG:4326")
    tile_px = min(params.tile_px, 96)
    out = []
    for j, kind in enumerate(BROKEN_KINDS):
        start = (template.name.start_time + timedelta(days=200 + 9 * j)).replace(microsecond=0)
        stop = start + timedelta(seconds=tile_px * PIXEL_M / GROUND_SPEED_M_S)
        name = ProductName(
            90000 + 11 * j, start, 1, PROCESSOR_VERSION, start + timedelta(days=1, hours=2)
        )
        spec = _make_spec(
            len(specs) + j,
            name,
            "us",
            "clear",
            False,
            template.centre_xy,
            template.heading_deg,
            tile_px,
            start,
            stop,
            1,
            to_lonlat,
            margin_px=2,
        )
        out.append(
            replace(
                spec,
                role="broken",
                broken=kind,
                expected_status="invalid",
                expected_reason=BROKEN_KINDS[kind],
            )
        )
    return out


def coverage_stats(
    specs: list[ProductSpec], site: str, params: SynthParams, step_px: float = 2.0
) -> tuple[list[tuple[int, float]], int]:
    """Coverage of a site by usable products.

    Returns the area (km2) covered by at least k distinct dates, for k = 1, 2, ..., and the
    number of dates over the site's hotspot.
    """
    usable = [s for s in specs if s.site == site and s.expected_status == "ok"]
    if not usable:
        return [], 0
    corners = np.concatenate([s.frame_corners() for s in usable])
    step = step_px * PIXEL_M
    xs = np.arange(corners[:, 0].min(), corners[:, 0].max(), step)
    ys = np.arange(corners[:, 1].min(), corners[:, 1].max(), step)
    gx, gy = np.meshgrid(xs, ys)
    by_date: dict[str, np.ndarray] = {}
    for s in usable:
        key = s.name.start_time.strftime("%Y%m%d")
        m = s.inside(gx, gy)
        by_date[key] = by_date[key] | m if key in by_date else m
    count = np.sum(list(by_date.values()), axis=0)
    cell_km2 = step * step / 1e6
    stats = [
        (k, round(float((count >= k).sum() * cell_km2), 3)) for k in range(1, int(count.max()) + 1)
    ]
    tr = transformer("EPSG:4326", SITES[site].frame_crs)
    hx, hy = tr.transform(*hotspot_lonlat(site, params))
    at_hotspot = sum(
        bool(
            np.any(
                [
                    s.inside(np.array([hx]), np.array([hy]))[0]
                    for s in usable
                    if s.name.start_time.strftime("%Y%m%d") == key
                ]
            )
        )
        for key in by_date
    )
    return stats, at_hotspot
