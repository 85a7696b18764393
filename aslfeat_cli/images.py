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
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .tiling import TILE_PIXELS

# Lower-case suffixes collected when walking folders (matched case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2"}
)
MIN_SIDE = 16
# Without --max-dim, images with more pixels are downscaled to this many (notice printed once
# per run): 2 MP keeps SfM accuracy (1536x1024, the SfM tests' 1.6 MP, is not touched) and the
# work per image bounded; memory is bounded by the tiles (aslfeat_cli/tiling.py) in any case.
AUTO_MAX_PIXELS = 2_000_000
# Decoded-pixel limit, checked from the file header before decoding (decompression bombs):
# larger JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, other formats refused.
MAX_DECODE_PIXELS = 40_000_000
# Peak memory of one image, used to refuse before decoding. The network runs in tiles of at
# most TILE_PIXELS; below that its peak grows ~1.1 GB per MP (whole process, onnxruntime 1.32,
# 2026-12-01: 0.82 GB at 0.79 MP, 1.77 GB at 2 MP, 4.78 GB at 4.3 MP untiled, so the 4.3 MP
# slope: conservative below it). Above it, only the whole-image maps grow: about 60 bytes per
# pixel (bench_memory.py, 2026-12-03, OpenVINO fp32: 2,116 MiB at 4.3 MP, 2,559 MiB at 12 MP
# uncapped), 100 here.
NETWORK_BYTES_PER_PIXEL = 1100
MAP_BYTES_PER_PIXEL = 100
NETWORK_BASE_BYTES = 200 * 2**20

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


def _be(data: bytes, start: int, size: int) -> int:
    return int.from_bytes(data[start : start + size], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) hold height, width.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _be(data, pos + 7, 2), _be(data, pos + 5, 2)
        pos += 2 + _be(data, pos + 2, 2)
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, BMP or PNM header without decoding; None for
    other formats or unreadable headers (they are checked after decoding)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 33:
        if zlib.crc32(data[12:29]) == _be(data, 29, 4):  # a corrupt header is not trusted
            return _be(data, 16, 4), _be(data, 20, 4)
        return None
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        return (
            abs(int.from_bytes(data[18:22], "little", signed=True)),
            abs(int.from_bytes(data[22:26], "little", signed=True)),
        )
    if data[:1] == b"P" and data[1:2] in b"123456":
        fields = data[2:256].split(b"#")[0].split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            return int(fields[0]), int(fields[1])
    return None


def _reduced_flags(data: bytes, size: tuple[int, int] | None) -> int:
    """Decode flags; JPEGs above MAX_DECODE_PIXELS are decoded reduced by libjpeg, other
    formats above it are refused before any pixel is decoded."""
    if size is None or size[0] * size[1] <= MAX_DECODE_PIXELS:
        return _DECODE_FLAGS
    width, height = size
    if data[:3] == b"\xff\xd8\xff":
        for factor, flag in (
            (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
            (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
            (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
        ):
            if (width // factor) * (height // factor) <= MAX_DECODE_PIXELS:
                return flag | cv2.IMREAD_IGNORE_ORIENTATION
    raise ImageError(
        f"image is {width}x{height} ({width * height / 1e6:.0f} MP), above the decoding limit "
        f"of {MAX_DECODE_PIXELS / 1e6:.0f} MP (a decompression bomb?); downscale the file first"
    )


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to a grey H x W array (see the module's conventions).

    The pixel count is checked from the header first (:data:`MAX_DECODE_PIXELS`).
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    if data[:3] == b"\xff\xd8\xff":
        _check_jpeg_complete(data)
    flags = _reduced_flags(data, header_size(data))
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # OpenCV's own size limit and decoder assertions
        image = None
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


def read_bytes(path: Path) -> bytes:
    """The bytes of an image file; :class:`ImageError` with a one-line reason otherwise."""
    try:
        return Path(path).read_bytes()  # bytes + imdecode: works for any file name encoding
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None


def read_image(path: Path) -> np.ndarray:
    """Read and decode one image file to a grey H x W array.

    Raises :class:`ImageError` with a one-line reason for missing, empty, corrupt, truncated,
    non-image and too small files.
    """
    return decode_image(read_bytes(path))


def check_size(image: np.ndarray) -> None:
    """Reject images smaller than :data:`MIN_SIDE` pixels on a side."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(
            f"image too small ({width}x{height}): the network needs at least {MIN_SIDE} px per side"
        )


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    # Never below MIN_SIDE on the short side (a 20000x20 strip stays usable): the long side
    # may then exceed the target a little.
    scale = min(1.0, max(scale, MIN_SIDE / max(1, min(width, height))))
    if scale >= 1.0:
        return width, height
    return scaled_size(width, height, scale)


def fit_size(width: int, height: int, max_dim: int) -> tuple[int, int]:
    """The (width, height) that makes the long side ``max_dim`` (unchanged when it fits;
    the short side is kept at least :data:`MIN_SIDE`)."""
    return _scaled(width, height, max_dim / max(width, height))


def fit_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The (width, height) with at most ``max_pixels`` pixels, same aspect (unchanged when it
    fits; the short side is kept at least :data:`MIN_SIDE`)."""
    return _scaled(width, height, (max_pixels / max(1, width * height)) ** 0.5)


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, bounded by a cgroup v2 limit."""
    values = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            values.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def memory_estimate(size: tuple[int, int], tile_pixels: int | None = TILE_PIXELS) -> int:
    """Estimated peak bytes of a network input of ``size`` (W, H) run in tiles of at most
    ``tile_pixels`` (None: whole)."""
    pixels = size[0] * size[1]
    network = pixels if tile_pixels is None else min(pixels, tile_pixels)
    return NETWORK_BASE_BYTES + NETWORK_BYTES_PER_PIXEL * network + MAP_BYTES_PER_PIXEL * pixels


def check_memory(size: tuple[int, int], tile_pixels: int | None = TILE_PIXELS) -> None:
    """Refuse, before decoding, a network input of ``size`` (W, H) whose estimated peak
    memory (:func:`memory_estimate`) exceeds what is available."""
    need = memory_estimate(size, tile_pixels)
    free = available_memory()
    if free is not None and need > free:
        raise ImageError(
            f"{size[0]}x{size[1]} needs about {need / 2**30:.1f} GB for the network, "
            f"{free / 2**30:.1f} GB available; use a smaller --max-dim"
        )


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


#: Allowed ``--upscale`` factors: 1 (the image as given) up to 4.
UPSCALE_RANGE = (1.0, 4.0)


def scaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) times ``factor``, each side rounded to whole pixels (at least 1): the
    one rounding rule of every resize here (--max-dim, the 2 MP cap, --upscale)."""
    return max(1, round(width * factor)), max(1, round(height * factor))


def check_upscale(factor: float) -> float:
    """``factor`` as a float, or ValueError outside :data:`UPSCALE_RANGE`."""
    low, high = UPSCALE_RANGE
    if not low <= factor <= high:
        raise ValueError(f"upscale must be between {low:g} and {high:g}, got {factor:g}")
    return float(factor)


def upscale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Enlarge by ``factor`` (bilinear; 1: unchanged) for the network's ``--upscale``.

    The network's 3x3 detector windows and its coarse levels' 2- and 4-pixel lattices are in
    network pixels; on an enlarged image they are finer in the original pixels, where
    :func:`scale_keypoints` brings the keypoints back (the way SIFT starts one octave up).
    """
    height, width = image.shape[:2]
    return resize_image(image, scaled_size(width, height, check_upscale(factor)))


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


def scaling_homography(from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """The 3x3 matrix of :func:`scale_keypoints` (same convention), for composing with a
    pair's homography: ``S_b @ H @ inv(S_a)`` is ``H`` between resized views."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
