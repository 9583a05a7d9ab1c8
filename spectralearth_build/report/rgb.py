"""Pseudo-RGB composites of stored patches (pure numpy).

A composite takes the stored bands nearest 640, 550 and 460 nm (red, green, blue; no
near-infrared, so vegetation looks green and water dark, as in a true-colour photograph) and
maps reflectance linearly to 0..1 with **one** pair of limits per location: the 2nd and 98th
percentiles over all three channels, every timestamp and every valid pixel of that location.
One pair for all channels keeps the hue of the reflectance (a per-channel stretch would
white-balance every patch), and one pair for all timestamps keeps the dates comparable: a
brighter date looks brighter.
"""

from __future__ import annotations

import numpy as np

from ..formats import NODATA

RGB_NM = (640.0, 550.0, 460.0)
"""Target centre wavelengths (nm) of the red, green and blue channels."""
STRETCH_PERCENTILES = (2.0, 98.0)


def rgb_band_indices(wavelengths: np.ndarray, targets: tuple[float, ...] = RGB_NM) -> list[int]:
    """Indices of the stored bands nearest each target wavelength.

    Args:
        wavelengths: centre wavelength (nm) of each stored band, shape ``(C,)``.
        targets: wavelengths (nm) wanted, red first.

    Returns:
        One band index per target.
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.size == 0:
        raise ValueError("the store records no band wavelengths; cannot choose RGB bands")
    return [int(np.argmin(np.abs(wl - t))) for t in targets]


def stretch_limits(
    rgb: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES
) -> tuple[float, float]:
    """``(lo, hi)`` reflectance limits (int16 units) of one location's composites.

    Args:
        rgb: ``(T, 3, P, P)`` raw values of the three channels.
        valid: ``(T, P, P)`` bool, pixels that are not nodata in any channel.
        percentiles: lower and upper percentile over all channels of the valid pixels.
    """
    values = np.moveaxis(rgb, 1, -1)[valid]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values.astype(np.float64), percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def location_rgb(image: np.ndarray, bands: list[int]) -> np.ndarray:
    """Pseudo-RGB composites of every timestamp of one location.

    Args:
        image: int16 ``(T, C, P, P)`` (reflectance x 10000, nodata -32768).
        bands: the red, green and blue band indices (:func:`rgb_band_indices`).

    Returns:
        float32 ``(T, P, P, 3)`` in 0..1; nodata pixels are 0 (black).
    """
    rgb = np.asarray(image)[:, bands]  # (T, 3, P, P)
    valid = np.all(rgb != NODATA, axis=1)
    lo, hi = stretch_limits(rgb, valid)
    out = (np.moveaxis(rgb, 1, -1).astype(np.float32) - lo) / np.float32(hi - lo)
    out = np.clip(out, 0.0, 1.0)
    out[~valid] = 0.0
    return out
