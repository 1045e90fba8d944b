"""Find files that pip packages ship, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qvision.errors import QVisionError


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, relpath: str, pip_name: str) -> Path:
    """``relpath`` inside the installed package ``module``, or an error naming what to install."""
    base = package_dir(module)
    if base is None:
        raise QVisionError(
            f"the '{pip_name}' package is not installed: pip install --no-deps {pip_name}"
        )
    path = base / relpath
    if not path.is_file():
        raise QVisionError(f"the '{pip_name}' package has no {relpath}; reinstall it", base)
    return path


# Real photos that pip packages ship: (module, path inside it, pip name).
SAMPLE_PHOTOS = [
    ("skimage", "data/astronaut.png", "scikit-image"),
    ("skimage", "data/chelsea.png", "scikit-image"),
    ("skimage", "data/coffee.png", "scikit-image"),
    ("skimage", "data/rocket.jpg", "scikit-image"),
    ("skimage", "data/motorcycle_left.png", "scikit-image"),
    ("skimage", "data/camera.png", "scikit-image"),
    ("sklearn", "datasets/images/china.jpg", "scikit-learn"),
    ("sklearn", "datasets/images/flower.jpg", "scikit-learn"),
    ("ultralytics", "assets/bus.jpg", "ultralytics"),
    ("ultralytics", "assets/zidane.jpg", "ultralytics"),
]


def sample_photos() -> list[tuple[str, Path]]:
    """(package, path) of the bundled photos that are installed; at least one must be."""
    found = []
    for module, rel, _ in SAMPLE_PHOTOS:
        base = package_dir(module)
        if base is not None and (base / rel).is_file():
            found.append((module, base / rel))
    if not found:
        names = sorted({pip for _, _, pip in SAMPLE_PHOTOS})
        raise QVisionError(f"no bundled sample photos found: pip install {' '.join(names)}")
    return found
