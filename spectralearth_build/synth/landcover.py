"""A seeded land-cover map per site, evaluated at any point of the site's frame CRS.

The map is a function ``class_at(x, y)`` (vectorised, coordinates in the frame CRS, which is
also the label CRS), so the label rasters (evaluated at their pixel centres) and the spectral
products (evaluated at each pixel centre transformed into the frame) show the same ground.

Scale.  A label raster sampled onto a 30 m patch grid disagrees with the map only near class
boundaries: nearest resampling of a 100 m CORINE raster misplaces a boundary by 25 m on
average, a 30 m CDL/NLCD raster in another CRS by 7.5 m, so the disagreement is that width
times the boundary length per area.  Real CORINE polygons (25 ha minimum mapping unit) and US
farmland are coarse at that scale, and so is this map: its class regions are kilometres across
with smooth boundaries, which keeps the boundary share of any patch near 1% or below.

Landscape.  In Europe, landscape units (farmland, pasture, forest stands, bare ground) are
Voronoi cells of a jittered 9 km lattice, with their boundaries bent by a smooth displacement
field; forest where a low-frequency field is high.  Farmland units are made of fields (Voronoi
cells of a jittered 700 m lattice) of corn or soybean, both "non-irrigated arable land" in
CORINE, so the fields show in the images but not in the label.  In the US, fields are Public
Land Survey sections (one mile square, aligned with the Albers axes), mostly corn and soybeans,
with neighbouring sections correlated (a Gaussian copula over a smooth field) as farms are.  On
top of that near the hotspot: a town (dense core, low-density ring), a meandering river, and a
lake in a forest stand with a gravel pit on its shore.  :class:`SmoothField` provides the
band-limited random fields (sums of plane waves) used here and for vigour, clouds, snow and
cirrus.

``scale`` multiplies every length of the landscape (unit and field spacing, section size,
boundary warp, the smooth fields that place forest and farms), not the town, river or lake.
The default 1.0 is the map above; tests that need several classes in a patch a few hundred
metres across (as a real 3.84 km patch over CORINE polygons of about 1 km holds) shrink it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import ndtr

from .spectra import CLASS_INDEX, CLASSES

_UNIT_M = 9_000.0
"""Mean spacing of the European landscape units (CORINE-scale polygons), metres."""
_FIELD_M = 700.0
"""Mean spacing of the fields inside a European farmland unit, metres."""
_SECTION_M = 1609.344
"""A US Public Land Survey section: one mile square."""
_WARP_M = 600.0
"""Amplitude of the displacement that bends the European unit boundaries, metres."""
_WARP_WAVELENGTH_M = (4_000.0, 12_000.0)
_FARM_CORRELATION = 0.7
"""Share of the variance of a US section's crop draw that it shares with its neighbours."""

_FARMLAND = -1
_UNIT_MIX = {
    "farmland": 0.42,
    "grassland": 0.26,
    "broadleaf_forest": 0.09,
    "coniferous_forest": 0.13,
    "bare": 0.06,
    "urban_low": 0.04,
}
_FIELD_MIX = {"corn": 0.55, "soybean": 0.45}
_SECTION_MIX = {
    "corn": 0.42,
    "soybean": 0.36,
    "grassland": 0.10,
    "broadleaf_forest": 0.04,
    "urban_low": 0.03,
    "bare": 0.05,
}


class SmoothField:
    """A random band-limited field of unit variance: a sum of plane waves.

    ``wavelength_m`` bounds the spatial scales; ``origin`` is subtracted from coordinates so
    that phases keep full precision far from the CRS origin.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        wavelength_m: tuple[float, float],
        origin: tuple[float, float],
        n_waves: int = 8,
    ):
        lam = rng.uniform(wavelength_m[0], wavelength_m[1], n_waves)
        ang = rng.uniform(0, 2 * math.pi, n_waves)
        k = 2 * math.pi / lam
        self.kx = k * np.cos(ang)
        self.ky = k * np.sin(ang)
        self.phase = rng.uniform(0, 2 * math.pi, n_waves)
        self.amp = math.sqrt(2.0 / n_waves)
        self.origin = origin

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx = np.asarray(x, dtype=np.float64) - self.origin[0]
        dy = np.asarray(y, dtype=np.float64) - self.origin[1]
        out = np.zeros(dx.shape, dtype=np.float32)
        for kx, ky, ph in zip(self.kx, self.ky, self.phase):
            out += np.cos(kx * dx + ky * dy + ph).astype(np.float32)
        return out * np.float32(self.amp)


def _mix(names: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and their probabilities; ``farmland`` (fields of crops) is ``-1``."""
    idx = np.array([CLASS_INDEX.get(n, _FARMLAND) for n in names], dtype=np.int8)
    p = np.array(list(names.values()), dtype=np.float64)
    return idx, p / p.sum()


def _jittered_points(
    rng: np.random.Generator, extent: tuple[float, float, float, float], spacing: float
) -> np.ndarray:
    """One seed point per ``spacing`` square of a lattice over ``extent``, jittered: ``(n, 2)``.

    Voronoi cells of such points are convex polygons of fairly even size (no slivers) at a mean
    spacing of ``spacing`` metres.
    """
    xmin, ymin, xmax, ymax = extent
    xs = np.arange(math.floor(xmin / spacing), math.ceil(xmax / spacing) + 1) * spacing
    ys = np.arange(math.floor(ymin / spacing), math.ceil(ymax / spacing) + 1) * spacing
    gx, gy = np.meshgrid(xs, ys)
    jitter = rng.uniform(0.1, 0.9, (2, gx.size)) * spacing
    return np.column_stack([gx.ravel() + jitter[0], gy.ravel() + jitter[1]])


class LandCoverMap:
    """The class map of one site.

    ``extent`` is ``(xmin, ymin, xmax, ymax)`` in the frame CRS; the map goes on beyond it
    (points outside take the nearest unit's or edge section's class).  ``hotspot_xy`` places
    the town, river and lake; ``swath_m`` scales them (within plausible sizes) so that tiles of
    any size over the hotspot see water, forest and town.  ``scale`` multiplies the lengths
    of the landscape (see the module docstring).
    """

    def __init__(
        self,
        landscape: str,
        extent: tuple[float, float, float, float],
        hotspot_xy: tuple[float, float],
        swath_m: float,
        seed: int,
        site_id: int,
        scale: float = 1.0,
    ):
        rng = np.random.default_rng([seed, 2, site_id])
        self.landscape = landscape
        self.scale = scale
        unit_m, field_m, section_m = _UNIT_M * scale, _FIELD_M * scale, _SECTION_M * scale
        self._section_m = section_m
        self._warp_m = _WARP_M * scale
        warp_lam = (_WARP_WAVELENGTH_M[0] * scale, _WARP_WAVELENGTH_M[1] * scale)
        self.extent = extent
        self.hotspot = hotspot_xy
        xmin, ymin, xmax, ymax = extent
        hx, hy = hotspot_xy
        # Town, lake: offsets from the hotspot in swath units, sizes bounded to plausible ranges.
        self.town = (hx - 0.25 * swath_m, hy + 0.22 * swath_m)
        self.town_r = float(np.clip(0.12 * swath_m, 500, 3000))
        self.lake = (hx + 0.22 * swath_m, hy - 0.12 * swath_m)
        self.lake_r = float(np.clip(0.07 * swath_m, 400, 1500))
        # a gravel pit (bare ground) on the lake's south-western shore
        self.pit = (self.lake[0] - 0.75 * self.lake_r, self.lake[1] - 1.3 * self.lake_r)
        self.pit_r = 0.7 * self.lake_r
        if landscape == "parcels":
            pad = unit_m
            padded = (xmin - pad, ymin - pad, xmax + pad, ymax + pad)
            units = _jittered_points(rng, padded, unit_m)
            idx, p = _mix(_UNIT_MIX)
            cls = rng.choice(idx, size=len(units), p=p)
            woods_field = SmoothField(rng, (20_000 * scale, 50_000 * scale), hotspot_xy)
            woods = woods_field(units[:, 0], units[:, 1])
            needle = rng.random(len(units)) < 0.6
            forest = np.where(
                needle, CLASS_INDEX["coniferous_forest"], CLASS_INDEX["broadleaf_forest"]
            )
            cls = np.where(woods > 1.1, forest, cls)
            self._units = cKDTree(units)
            # the lake lies in a forest stand
            cls[self._units.query(self.lake)[1]] = CLASS_INDEX["broadleaf_forest"]
            self._unit_cls = cls.astype(np.int8)
            fields = _jittered_points(rng, padded, field_m)
            idx, p = _mix(_FIELD_MIX)
            self._fields = cKDTree(fields)
            self._field_cls = rng.choice(idx, size=len(fields), p=p).astype(np.int8)
            self._warp = (
                SmoothField(rng, warp_lam, hotspot_xy),
                SmoothField(rng, warp_lam, hotspot_xy),
            )
        elif landscape == "sections":
            self._x0 = math.floor(xmin / section_m) * section_m
            self._y0 = math.floor(ymin / section_m) * section_m
            nx = int(math.ceil((xmax - self._x0) / section_m)) + 1
            ny = int(math.ceil((ymax - self._y0) / section_m)) + 1
            cx, cy = np.meshgrid(
                self._x0 + section_m * (np.arange(nx) + 0.5),
                self._y0 + section_m * (np.arange(ny) + 0.5),
            )
            farms = SmoothField(rng, (6_000 * scale, 15_000 * scale), hotspot_xy)(cx, cy)
            rho = _FARM_CORRELATION
            u = ndtr(math.sqrt(rho) * farms + math.sqrt(1 - rho) * rng.standard_normal(cx.shape))
            idx, p = _mix(_SECTION_MIX)
            cls = idx[np.minimum(np.searchsorted(np.cumsum(p), u), len(idx) - 1)]
            # the lake lies in a wood lot
            li = int((self.lake[1] - self._y0) // section_m)
            lj = int((self.lake[0] - self._x0) // section_m)
            if 0 <= li < ny and 0 <= lj < nx:
                cls[li, lj] = CLASS_INDEX["broadleaf_forest"]
            self._cls = cls.astype(np.int8)
        else:
            raise ValueError(f"unknown landscape {landscape!r}")
        self.lake_phase = float(rng.uniform(0, 2 * math.pi))
        # River through (near) the hotspot, running roughly west-east so it crosses every track.
        self.river_angle = float(rng.uniform(-0.4, 0.4))
        self.river_amp = 0.12 * swath_m
        self.river_lambda = max(1.4 * swath_m, 6_000.0)
        self.river_phase = float(rng.uniform(0, 2 * math.pi))
        self.river_w = float(np.clip(0.012 * swath_m, 120, 300))
        self.edge_noise = SmoothField(rng, (800 * scale, 2500 * scale), hotspot_xy)

    def _ground(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Class of the landscape (units and their fields, or sections) at 1-D points."""
        if self.landscape == "parcels":
            wx, wy = self._warp
            bent = np.column_stack([x + self._warp_m * wx(x, y), y + self._warp_m * wy(x, y)])
            cls = self._unit_cls[self._units.query(bent)[1]]
            farm = cls == _FARMLAND
            on_farm = np.column_stack([x[farm], y[farm]])
            cls[farm] = self._field_cls[self._fields.query(on_farm)[1]]
            return cls
        sec = self._section_m
        ci = np.clip(((x - self._x0) // sec).astype(np.int64), 0, self._cls.shape[1] - 1)
        ri = np.clip(((y - self._y0) // sec).astype(np.int64), 0, self._cls.shape[0] - 1)
        return self._cls[ri, ci]

    def class_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Class index (into :data:`~.spectra.CLASSES`) at frame-CRS points, int8, same shape."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = x.shape
        x, y = x.ravel(), y.ravel()
        cls = self._ground(x, y)
        wobble = self.edge_noise(x, y)
        # town
        d_town = np.hypot(x - self.town[0], y - self.town[1]) / self.town_r + 0.08 * wobble
        cls = np.where(d_town < 1.0, CLASS_INDEX["urban_low"], cls)
        cls = np.where(d_town < 0.45, CLASS_INDEX["urban_high"], cls)
        # river (distance measured across the meander's mean direction)
        ca, sa = math.cos(self.river_angle), math.sin(self.river_angle)
        dx, dy = x - self.hotspot[0], y - self.hotspot[1]
        s = dx * ca + dy * sa
        t = -dx * sa + dy * ca
        centre = self.river_amp * np.sin(2 * math.pi * s / self.river_lambda + self.river_phase)
        cls = np.where(np.abs(t - centre) < 0.5 * self.river_w, CLASS_INDEX["water"], cls)
        cls = np.where(
            np.hypot(x - self.pit[0], y - self.pit[1]) < self.pit_r, CLASS_INDEX["bare"], cls
        )
        # lake with a lobed shore
        lx, ly = x - self.lake[0], y - self.lake[1]
        r = self.lake_r * (1 + 0.18 * np.sin(3 * np.arctan2(ly, lx) + self.lake_phase))
        cls = np.where(np.hypot(lx, ly) < r, CLASS_INDEX["water"], cls)
        return cls.astype(np.int8).reshape(shape)


def class_names() -> list[str]:
    """Names of the synthetic land-cover classes, in class order."""
    return [c.name for c in CLASSES]
