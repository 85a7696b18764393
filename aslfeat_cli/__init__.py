"""ASLFeat local features on onnxruntime (no torch at run time).

Image convention, stated once for the whole package: images are numpy arrays in OpenCV's
layout (H x W grayscale or H x W x 3 BGR); keypoints are (x, y) in pixels of the original
image with integer values at pixel centres (hloc's convention). COLMAP's +0.5 shift is
applied only in :mod:`aslfeat_cli.colmap_db`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .extractor import Extractor, Features

__all__ = ["Extractor", "Features", "__version__"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `import aslfeat_cli` stays cheap (no onnxruntime load).
    if name in ("Extractor", "Features"):
        from . import extractor

        return getattr(extractor, name)
    raise AttributeError(name)
