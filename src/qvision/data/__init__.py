"""Datasets, image decoding, preprocessing and manifests. Knows nothing about models."""

from qvision.data.datasets import (
    Dataset,
    LoadReport,
    Sample,
    image_folder,
    iter_batches,
    labelled_folder,
    open_dataset,
)
from qvision.data.images import load_image
from qvision.data.manifest import DatasetManifest, build_manifest
from qvision.data.preprocess import PRESETS, Preprocess, parse_preprocess

__all__ = [
    "PRESETS",
    "Dataset",
    "DatasetManifest",
    "LoadReport",
    "Preprocess",
    "Sample",
    "build_manifest",
    "image_folder",
    "iter_batches",
    "labelled_folder",
    "load_image",
    "open_dataset",
    "parse_preprocess",
]
