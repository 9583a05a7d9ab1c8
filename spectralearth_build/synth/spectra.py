"""Land-cover classes and their reflectance signatures for synthetic EnMAP products.

Each class has two spectra over the sensor's band centres: ``base`` (the class without green
vegetation: soil, litter, asphalt, water) and ``green`` (fully green canopy).  A pixel's surface
reflectance is ``base + G * (green - base)``, where the greenness ``G`` follows the class's
phenology curve over the day of year (crops green up in early summer and are harvested in autumn,
broad-leaved forest has leaves from May to October, conifers stay green), scaled by a per-pixel
vigour field.  The curves are smooth analytic functions of wavelength with the features a
hyperspectral model should see: the green peak and red absorption, the red edge near 715 nm, leaf
water absorptions (970, 1200, 1450, 1940 nm), the rising slope and clay feature of soils, and the
near-infrared darkness of water.  Clouds, snow and haze have their own spectra.

Class codes in the label products (CORINE grid code, CDL code, NLCD code) are lookup tables on the
same class list, so a label raster and a spectral image can be made from one class map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LandCoverClass:
    """One synthetic land-cover class and its codes in the label products."""

    name: str
    corine: int
    """CORINE Land Cover raster grid code (1..44)."""
    cdl: int
    """USDA Cropland Data Layer code."""
    nlcd: int
    """National Land Cover Database code."""
    water: bool
    phenology: tuple[float, float, float, float]
    """(green-up day, senescence day, minimum greenness, maximum greenness)."""
    nir_plateau: float
    """Near-infrared reflectance of the fully green canopy."""
    base: str
    """Which background spectrum: ``soil``, ``bright_soil``, ``litter``, ``urban``, ``dense_urban``,
    ``water``."""


CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass("water", 41, 111, 11, True, (0, 0, 0.0, 0.0), 0.0, "water"),
    LandCoverClass("broadleaf_forest", 23, 141, 41, False, (125, 290, 0.15, 0.95), 0.46, "litter"),
    LandCoverClass("coniferous_forest", 24, 142, 42, False, (100, 320, 0.70, 0.90), 0.28, "litter"),
    LandCoverClass("corn", 12, 1, 82, False, (175, 265, 0.0, 0.95), 0.52, "soil"),
    LandCoverClass("soybean", 12, 5, 82, False, (190, 258, 0.0, 0.90), 0.47, "soil"),
    LandCoverClass("grassland", 18, 176, 71, False, (105, 300, 0.35, 0.85), 0.38, "soil"),
    LandCoverClass("urban_low", 2, 122, 22, False, (120, 290, 0.10, 0.35), 0.40, "urban"),
    LandCoverClass("urban_high", 1, 124, 24, False, (120, 290, 0.02, 0.10), 0.40, "dense_urban"),
    LandCoverClass("bare", 32, 131, 31, False, (0, 0, 0.0, 0.0), 0.30, "bright_soil"),
)
CLASS_INDEX = {c.name: i for i, c in enumerate(CLASSES)}
WATER = CLASS_INDEX["water"]

CORINE_NODATA = 48
NLCD_NODATA = 0


def code_table(product: str) -> np.ndarray:
    """Lookup table class index -> code for ``"corine"``, ``"cdl"`` or ``"nlcd"`` (uint8)."""
    return np.array([getattr(c, product) for c in CLASSES], dtype=np.uint8)


def _gauss(wl: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _water_dips(wl: np.ndarray, strength: float) -> np.ndarray:
    """Multiplicative liquid-water absorption features (1 = none)."""
    dip = (
        0.06 * _gauss(wl, 975, 30)
        + 0.12 * _gauss(wl, 1200, 45)
        + 0.55 * _gauss(wl, 1450, 60)
        + 0.70 * _gauss(wl, 1940, 70)
    )
    return 1.0 - strength * np.clip(dip, 0, 0.95)


def green_canopy(wl: np.ndarray, nir: float) -> np.ndarray:
    """Green vegetation: green peak, red absorption, red edge, leaf water absorption."""
    vis = 0.03 + 0.055 * _gauss(wl, 552, 32) - 0.012 * _gauss(wl, 672, 22)
    edge = _sigmoid((wl - 716) / 11)
    swir_drop = 1.0 - 0.30 * _sigmoid((wl - 1340) / 35) - 0.28 * _sigmoid((wl - 1860) / 45)
    swir_drop -= 0.12 * _sigmoid((wl - 2250) / 40)
    return vis * (1 - edge) + nir * edge * swir_drop * _water_dips(wl, 1.0)


def background(wl: np.ndarray, kind: str) -> np.ndarray:
    """Spectrum of a class's non-vegetated part."""
    x = np.clip((wl - 400) / 1800, 0, 1.2)
    if kind == "water":
        r = 0.018 + 0.045 * _gauss(wl, 565, 55) + 0.02 * _gauss(wl, 480, 50)
        return r * np.where(wl > 690, np.exp(-(wl - 690) / 55), 1.0) + 0.004
    if kind in ("soil", "bright_soil"):
        lo, hi = (0.07, 0.30) if kind == "soil" else (0.13, 0.42)
        r = lo + (hi - lo) * (1 - np.exp(-2.2 * x)) / (1 - np.exp(-2.2))
        r = r * (1 - 0.35 * _gauss(wl, 1420, 40) - 0.45 * _gauss(wl, 1920, 50))
        return r * (1 - 0.12 * _gauss(wl, 2205, 25))
    if kind == "litter":
        r = 0.04 + 0.20 * (1 - np.exp(-2.5 * x))
        return r * _water_dips(wl, 0.5)
    if kind == "urban":
        return (0.11 + 0.09 * x) * (1 - 0.2 * _gauss(wl, 1420, 40) - 0.3 * _gauss(wl, 1920, 50))
    if kind == "dense_urban":
        return (0.14 + 0.05 * x + 0.02 * _gauss(wl, 600, 80)) * (
            1 - 0.2 * _gauss(wl, 1420, 40) - 0.3 * _gauss(wl, 1920, 50)
        )
    raise ValueError(f"unknown background spectrum {kind!r}")


def class_spectra(wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(base, delta)`` shaped ``(n_classes, n_bands)``: reflectance = base + G * delta."""
    base = np.stack([background(wl, c.base) for c in CLASSES])
    green = np.stack(
        [
            green_canopy(wl, c.nir_plateau) if c.nir_plateau > 0 else background(wl, c.base)
            for c in CLASSES
        ]
    )
    delta = np.where(
        np.array([c.water or c.phenology[3] == 0 for c in CLASSES])[:, None], 0.0, green - base
    )
    return base.astype(np.float32), delta.astype(np.float32)


def greenness(doy: float) -> np.ndarray:
    """Greenness (0..1) of every class on day of year ``doy``, shape ``(n_classes,)``."""
    out = np.zeros(len(CLASSES), dtype=np.float32)
    for i, c in enumerate(CLASSES):
        up, down, gmin, gmax = c.phenology
        if gmax <= 0:
            continue
        season = _sigmoid(np.array((doy - up) / 9.0)) * (1 - _sigmoid(np.array((doy - down) / 9.0)))
        out[i] = gmin + (gmax - gmin) * float(season)
    return out


def snow(wl: np.ndarray) -> np.ndarray:
    """Fresh snow: bright in the visible, dark beyond 1400 nm."""
    r = 0.94 - 0.25 * _sigmoid((wl - 900) / 80) - 0.45 * _sigmoid((wl - 1150) / 60)
    r = r - 0.18 * _sigmoid((wl - 1420) / 25) + 0.10 * _gauss(wl, 1800, 90)
    r = r - 0.08 * _sigmoid((wl - 1950) / 30) + 0.04 * _gauss(wl, 2250, 80)
    return np.clip(r, 0.01, 1.0)


def cloud(wl: np.ndarray) -> np.ndarray:
    """Thick water cloud: bright, nearly flat, with water absorption in the SWIR."""
    r = 0.72 - 0.12 * np.clip((wl - 400) / 2100, 0, 1)
    return r * (1 - 0.35 * _gauss(wl, 1450, 50) - 0.5 * _gauss(wl, 1940, 60))


def haze(wl: np.ndarray) -> np.ndarray:
    """Additive path radiance of residual haze, strongest in the blue."""
    return 0.09 * (450.0 / wl) ** 2.2


def vapour_attenuation(wl: np.ndarray) -> np.ndarray:
    """Residual attenuation in the deep water-vapour bands (values stay low and noisy there)."""
    return 1.0 - 0.75 * (_gauss(wl, 1390, 35) + _gauss(wl, 1880, 55)).clip(0, 1)


def noise_sigma(wl: np.ndarray) -> np.ndarray:
    """Per-band noise standard deviation in reflectance x 10000 (VNIR lower than SWIR)."""
    s = np.where(wl < 1000, 5.0, 9.0) + 8.0 * (_gauss(wl, 1390, 40) + _gauss(wl, 1890, 60))
    return (s + 6.0 * _sigmoid((wl - 2300) / 40)).astype(np.float32)
