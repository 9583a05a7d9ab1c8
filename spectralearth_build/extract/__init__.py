"""Extraction: carry out a patch plan, writing pixels and tables to a Zarr dataset.

:mod:`.reader` reads source tiles (rasterio, or an in-memory fake); :mod:`.units` groups the
plan into work units that own whole shards; :mod:`.pixels` checks and resamples views;
:mod:`.store` lays out the Zarr store; :mod:`.execute` runs one unit and orchestrates many on
Dask.  Nothing here is imported by ``import spectralearth_build``.
"""
