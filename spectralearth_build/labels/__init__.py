"""Labels: pairing locations with label rasters, task views, leak-free splits, export.

Modules, in pipeline order:

- :mod:`.presets`: CORINE/CDL/NLCD presets and task lookup tables from the class CSVs;
- :mod:`.spec`: ``--labels NAME=PATH[,key=value...]`` parsed into a :class:`~.spec.LabelSpec`;
- :mod:`.source`: a label raster, VRT or folder of tiles as one lattice (metadata only);
- :mod:`.pairing`: per location, the window to read and its reprojection onto the patch grid;
- :mod:`.store`: work units on Dask, masks in ``data.zarr/labels/``, tables, attributes;
- :mod:`.splits` and :mod:`.tasks`: random and spatial splits, class frequencies;
- :mod:`.loader`: what ``open_dataset(OUT, task=...)`` and ``ds[i]["labels"]`` use (no GDAL);
- :mod:`.export`: the SpectralEarth folder layout.

Importing this package imports nothing heavy; :mod:`.loader` and :mod:`.presets` import only
numpy (and zarr/pandas on use), so the training path stays free of rasterio.
"""

from __future__ import annotations
