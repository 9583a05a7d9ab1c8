"""spectralearth-build: SpectralEarth-style hyperspectral datasets from EnMAP L2A archives.

Importing the package is cheap: it imports neither torch, dask nor zarr.  ``open_dataset`` loads
the store module on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_dataset"]


def open_dataset(path: Any, task: Any = None, split: Any = None, scheme: str = "spatial") -> Any:
    """Open a dataset written by ``build-dataset`` (see :mod:`spectralearth_build.dataset`)."""
    from .dataset import open_dataset as _open

    return _open(path, task=task, split=split, scheme=scheme)
