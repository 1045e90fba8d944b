"""Offline model zoo: real pretrained models built from pip packages, nothing downloaded.

Each exported model carries its preprocessing (``qvision.preprocess``) and, for
classifiers, its class names (``qvision.labels``) in ONNX metadata.
"""

from qvision.zoo.registry import ZOO, ZooEntry, export_model, imagenet_labels

__all__ = ["ZOO", "ZooEntry", "export_model", "imagenet_labels"]
