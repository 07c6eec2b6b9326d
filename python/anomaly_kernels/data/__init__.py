"""Data for anomaly detection: MVTec AD-layout folders and a synthetic dataset in that layout.

* :class:`MVTecFolder` / :class:`MVTecDataModule`: one category of a dataset in the MVTec AD
  folder layout as (B, 3, H, W) images, (B,) labels and (B, 1, H, W) masks.
* :class:`PredictFolder`: a flat folder of images for prediction.
* :func:`generate_synthetic_dataset`: procedural textures with scratches, holes, stains and
  colour spots and their exact masks, written in the MVTec AD layout.
"""

from __future__ import annotations

from anomaly_kernels.data.datamodule import MVTecDataModule
from anomaly_kernels.data.defects import DEFECT_TYPES
from anomaly_kernels.data.folder import IMAGE_EXTENSIONS, MVTecFolder, MVTecSample, PredictFolder
from anomaly_kernels.data.synthetic import (
    DEFAULT_CATEGORIES,
    SyntheticCategory,
    SyntheticSample,
    generate_synthetic_dataset,
    read_synthetic_settings,
    render_synthetic_sample,
    synthetic_settings,
)
from anomaly_kernels.data.textures import TEXTURE_FAMILIES
from anomaly_kernels.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFECT_TYPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "MVTecDataModule",
    "MVTecFolder",
    "MVTecSample",
    "PredictFolder",
    "SyntheticCategory",
    "SyntheticSample",
    "TEXTURE_FAMILIES",
    "generate_synthetic_dataset",
    "read_synthetic_settings",
    "render_synthetic_sample",
    "synthetic_settings",
]
