"""Training and evaluation on built datasets (the ``[train]`` extra: torch, timm, lightly).

``models``: backbones (spectral adapter, Spec ViT, Spec RN50) and checkpoint loading; ``data``
and ``transforms``: torch datasets over a built store and device-side augmentations; ``methods``
and ``pretrain``: self-supervised methods and the training loop. This package imports no
rasterio, GDAL or geopandas: it runs on GPU nodes with only numpy, pandas, pyarrow, zarr, torch.
"""
