"""Errors of the model layer (kept free of the core's rasterio-importing error module)."""

from __future__ import annotations


class ModelError(ValueError):
    """A backbone name, option or checkpoint is not what the model layer expects."""


class CheckpointError(ModelError):
    """A checkpoint file cannot be read or does not fit the model (names the keys)."""
