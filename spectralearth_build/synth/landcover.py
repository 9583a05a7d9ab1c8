"""A seeded land-cover map per site, evaluated at any point of the site's frame CRS.

The map is a function ``class_at(x, y)`` (vectorised, coordinates in the frame CRS, which is
also the label CRS), so the label rasters (evaluated at their pixel centres) and the spectral
products (evaluated at each pixel centre transformed into the frame) show the same ground.

Landscape: European parcels are Voronoi cells of seeded points (``scipy.spatial.cKDTree``),
with forest where a low-frequency field is high; US sections are square fields of 805 m (half a
mile) aligned with the Albers axes, mostly corn and soybeans.  On top of that a town (dense
core, low-density ring) near the hotspot, a meandering river through the hotspot with a strip of
riparian broad-leaved forest, and a lake.  :class:`SmoothField` provides the band-limited
random fields (sums of plane waves) used here and for vigour, clouds, snow and cirrus.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from .spectra import CLASS_INDEX, CLASSES

_PARCEL_M = 600.0
_SECTION_M = 805.0

_PARCEL_MIX = {
    "broadleaf_forest": 0.10,
    "coniferous_forest": 0.12,
    "corn": 0.22,
    "soybean": 0.12,
    "grassland": 0.30,
    "urban_low": 0.04,
    "bare": 0.10,
}
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
    idx = np.array([CLASS_INDEX[n] for n in names], dtype=np.int8)
    p = np.array(list(names.values()), dtype=np.float64)
    return idx, p / p.sum()


class LandCoverMap:
    """The class map of one site.

    ``extent`` is ``(xmin, ymin, xmax, ymax)`` in the frame CRS; points outside it get the
    class of the nearest parcel or edge section.  ``hotspot_xy`` places the town, river and
    lake; ``swath_m`` scales them so that every tile of any size sees water, forest and town.
    """

    def __init__(
        self,
        landscape: str,
        extent: tuple[float, float, float, float],
        hotspot_xy: tuple[float, float],
        swath_m: float,
        seed: int,
        site_id: int,
    ):
        rng = np.random.default_rng([seed, 2, site_id])
        self.landscape = landscape
        self.extent = extent
        self.hotspot = hotspot_xy
        xmin, ymin, xmax, ymax = extent
        if landscape == "parcels":
            n = int((xmax - xmin) * (ymax - ymin) / _PARCEL_M**2) + 16
            pts = np.column_stack([rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)])
            idx, p = _mix(_PARCEL_MIX)
            cls = rng.choice(idx, size=n, p=p)
            woods = SmoothField(rng, (8_000, 20_000), hotspot_xy)(pts[:, 0], pts[:, 1])
            needle = rng.random(n) < 0.6
            cls = np.where(
                woods > 1.1,
                np.where(needle, CLASS_INDEX["coniferous_forest"], CLASS_INDEX["broadleaf_forest"]),
                cls,
            )
            self._tree = cKDTree(pts)
            self._cls = cls.astype(np.int8)
        elif landscape == "sections":
            self._x0 = math.floor(xmin / _SECTION_M) * _SECTION_M
            self._y0 = math.floor(ymin / _SECTION_M) * _SECTION_M
            nx = int(math.ceil((xmax - self._x0) / _SECTION_M)) + 1
            ny = int(math.ceil((ymax - self._y0) / _SECTION_M)) + 1
            idx, p = _mix(_SECTION_MIX)
            self._cls = rng.choice(idx, size=(ny, nx), p=p).astype(np.int8)
        else:
            raise ValueError(f"unknown landscape {landscape!r}")
        hx, hy = hotspot_xy
        # Town, lake: offsets from the hotspot in swath units, sizes bounded to plausible ranges.
        self.town = (hx - 0.25 * swath_m, hy + 0.22 * swath_m)
        self.town_r = float(np.clip(0.12 * swath_m, 300, 3000))
        self.lake = (hx + 0.22 * swath_m, hy - 0.12 * swath_m)
        self.lake_r = float(np.clip(0.07 * swath_m, 300, 1500))
        self.lake_phase = float(rng.uniform(0, 2 * math.pi))
        # River through (near) the hotspot, running roughly west-east so it crosses every track.
        self.river_angle = float(rng.uniform(-0.4, 0.4))
        self.river_amp = 0.12 * swath_m
        self.river_lambda = 1.4 * swath_m
        self.river_phase = float(rng.uniform(0, 2 * math.pi))
        self.river_w = float(np.clip(0.012 * swath_m, 60, 200))
        self.riparian_w = float(np.clip(0.03 * swath_m, 120, 600))
        self.edge_noise = SmoothField(rng, (150, 600), hotspot_xy)

    def class_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Class index (into :data:`~.spectra.CLASSES`) at frame-CRS points, int8, same shape."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = x.shape
        x, y = x.ravel(), y.ravel()
        if self.landscape == "parcels":
            _, i = self._tree.query(np.column_stack([x, y]))
            cls = self._cls[i]
        else:
            ci = np.clip(((x - self._x0) // _SECTION_M).astype(np.int64), 0, self._cls.shape[1] - 1)
            ri = np.clip(((y - self._y0) // _SECTION_M).astype(np.int64), 0, self._cls.shape[0] - 1)
            cls = self._cls[ri, ci]
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
        off = np.abs(t - centre)
        cls = np.where(
            off < 0.5 * self.river_w + self.riparian_w * (1 + 0.3 * wobble),
            CLASS_INDEX["broadleaf_forest"],
            cls,
        )
        cls = np.where(off < 0.5 * self.river_w, CLASS_INDEX["water"], cls)
        # lake with a lobed shore
        lx, ly = x - self.lake[0], y - self.lake[1]
        r = self.lake_r * (1 + 0.18 * np.sin(3 * np.arctan2(ly, lx) + self.lake_phase))
        cls = np.where(np.hypot(lx, ly) < r, CLASS_INDEX["water"], cls)
        return cls.astype(np.int8).reshape(shape)


def class_names() -> list[str]:
    """Names of the synthetic land-cover classes, in class order."""
    return [c.name for c in CLASSES]
