"""Finding, decoding and resizing images: the one place that states the image conventions.

Conventions (the same as hloc and COLMAP, so features line up with their tools):

* Pixels are used as stored in the file. EXIF orientation is **not** applied
  (``cv2.IMREAD_IGNORE_ORIENTATION``): hloc and COLMAP both work on the raw pixel grid, and
  keypoints must refer to that grid to be usable by them.
* Images are decoded straight to one grey channel, as the network sees them: ``uint8`` for 8-bit
  files; 16-bit files become ``float32`` scaled to 0..255 (so no precision is thrown away);
  float files are taken to hold 0..1 and scaled to 0..255. Alpha channels are dropped.
* Keypoints are (x, y) with integer values at pixel centres. Resizing by a factor therefore
  maps x to ``(x + 0.5) * s - 0.5``, not ``x * s``.
* An image must be at least :data:`MIN_SIDE` pixels on each side (the network downsamples by
  up to 4 and its 3x3 detector windows need room); smaller ones are rejected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

# Lower-case suffixes collected when walking folders (matched case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2"}
)
MIN_SIDE = 16
# Without --max-dim, images with a longer side are downscaled to this (with a notice): the
# network's memory grows with the pixel count and features at that scale are rarely useful.
AUTO_MAX_DIM = 4096

_DECODE_FLAGS = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION


class ImageError(Exception):
    """One image cannot be used; the message is one line for the failure list."""


def is_image_path(path: Path) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (any letter case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` (recursive, sorted, symlinked folders not followed)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()  # os.walk visits in this order: a stable, reproducible listing
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            if is_image_path(path):
                yield path


def _check_jpeg_complete(data: bytes) -> None:
    # OpenCV 4.x decodes a truncated JPEG into a partly grey picture with only a warning on
    # stderr; OpenCV 5 refuses it. Checking for the end-of-image marker after the last
    # start-of-scan makes both behave the same. Neither marker can occur inside entropy-coded
    # data (0xFF is byte-stuffed there), and EXIF thumbnails lie before the main scan.
    last_scan = data.rfind(b"\xff\xda")
    if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
        raise ImageError("truncated JPEG (no end-of-image marker)")


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to a grey H x W array (see the module's conventions)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if data[:3] == b"\xff\xd8\xff":
        _check_jpeg_complete(data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error:
        # OpenCV asserts on headers declaring more than its 2^30 pixels, before decoding.
        raise ImageError("image too large to decode (more than 2^30 pixels declared)") from None
    if image is None:
        raise ImageError("not a readable image (corrupt, truncated or unsupported format)")
    if image.ndim == 3:  # some decoders ignore IMREAD_GRAYSCALE for unusual layouts
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint16:
        image = image.astype(np.float32) * np.float32(255.0 / 65535.0)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image.astype(np.float32) * 255.0, 0.0, 255.0)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    check_size(image)
    return image


def read_image(path: Path) -> np.ndarray:
    """Read and decode one image file to a grey H x W array.

    Raises :class:`ImageError` with a one-line reason for missing, empty, corrupt, truncated,
    non-image and too small files.
    """
    try:
        data = Path(path).read_bytes()  # bytes + imdecode: works for any file name encoding
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data)


def check_size(image: np.ndarray) -> None:
    """Reject images smaller than :data:`MIN_SIDE` pixels on a side."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(
            f"image too small ({width}x{height}): the network needs at least {MIN_SIDE} px per side"
        )


def fit_size(width: int, height: int, max_dim: int) -> tuple[int, int]:
    """The (width, height) that makes the long side ``max_dim`` (unchanged when it fits)."""
    long_side = max(width, height)
    if long_side <= max_dim:
        return width, height
    scale = max_dim / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` = (width, height); area averaging when shrinking (no aliasing)."""
    height, width = image.shape[:2]
    if (width, height) == tuple(size):
        return image
    shrink = size[0] < width or size[1] < height
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def downscale_to_fit(image: np.ndarray, max_dim: int | None) -> np.ndarray:
    """Downscale so the long side is at most ``max_dim`` pixels (no upscaling; None: as is)."""
    if max_dim is None:
        return image
    height, width = image.shape[:2]
    return resize_image(image, fit_size(width, height, max_dim))


def scale_keypoints(
    keypoints: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """Map (x, y) keypoints from an image of ``from_size`` (W, H) to one of ``to_size``.

    Uses the pixel-centre convention: a point's distance to the image corner, not to the
    first pixel centre, scales with the image.
    """
    scale = np.array([to_size[0] / from_size[0], to_size[1] / from_size[1]], dtype=np.float64)
    out = (np.asarray(keypoints, dtype=np.float64) + 0.5) * scale - 0.5
    return out.astype(np.float32)
