"""Training and evaluation on built datasets (the ``[train]`` extra: torch, timm, lightly).

``spectralearth_build.train.models`` holds the backbones (spectral adapter, Spec ViT, Spec RN50)
and checkpoint loading. This package imports no rasterio, GDAL or geopandas: it runs on GPU
nodes with only numpy, pandas, pyarrow, zarr and torch.
"""
