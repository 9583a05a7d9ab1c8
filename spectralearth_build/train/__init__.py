"""Training and evaluation on built datasets (the ``[train]`` extra: torch, timm, lightly).

``models`` holds the backbones (spectral adapter, Spec ViT, Spec RN50) and checkpoint loading,
``data`` and ``transforms`` the torch datasets and batched device-side augmentation, ``ring``
the loader that decodes batches into shared, page-locked buffers for the GPU, ``methods``
the self-supervised methods, ``pretrain`` and ``eval`` the training loop and frozen-encoder
probes, ``cli`` the ``spectralearth-train`` command.  This package imports no rasterio, GDAL or
geopandas: it runs on GPU nodes with only numpy, pandas, pyarrow, zarr and torch.
"""
