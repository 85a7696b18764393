"""Synthetic homography pairs from single photos, for self-supervised training and validation.

A pair is made by cropping a photo (view A), viewing the same (planar) photo through a random
homography (view B) and changing the look of each view independently (gain, gamma, contrast,
colour, blur, noise, JPEG). The ground truth ``H_A_to_B`` maps homogeneous pixel coordinates
of A to B with the origin at the centre of the top-left pixel (OpenCV's ``warpPerspective``
convention, the same as ``../shared/data/pairs/*/H_A_to_B.txt`` and hloc keypoints).

Everything is numpy/OpenCV and deterministic given the ``numpy.random.Generator``.
This module must not import torch: the runtime package uses it for evaluation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

#: Fraction of each photo folder held out for validation (see :func:`split_photos`).
VAL_FRACTION = 0.1


def _split_key(relative: str) -> str:
    """Stable ordering key of a photo: the SHA-1 of its path relative to the train root."""
    return hashlib.sha1(relative.encode("utf-8")).hexdigest()


def split_photos(train_root: Path) -> tuple[list[Path], list[Path]]:
    """Split the training photos into a fixed training set and a held-out validation set.

    Every sub-folder of ``train_root`` (``bsds500``, ``urban100``, ``sun_hays80``,
    ``mini_depth_100``) is split on its own, so the validation set has the same mix: its photos
    are sorted by the SHA-1 of their path relative to ``train_root`` (with '/' separators) and
    the first ``round(10 %)`` go to validation. The split depends only on the file names, not
    on the machine, the file order or a random seed; with the 780 shared photos it holds
    50 + 10 + 8 + 10 = 78 photos. Images directly in ``train_root`` form their own group.

    Returns ``(train, val)``, each sorted by path. Raises ``FileNotFoundError`` when
    ``train_root`` is not a directory.
    """
    train_root = Path(train_root)
    if not train_root.is_dir():
        raise FileNotFoundError(f"training photo folder not found: {train_root}")
    groups: dict[str, list[tuple[str, Path]]] = {}
    for path in train_root.rglob("*"):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            relative = path.relative_to(train_root).as_posix()
            group = relative.split("/")[0] if "/" in relative else ""
            groups.setdefault(group, []).append((relative, path))
    train: list[Path] = []
    val: list[Path] = []
    for members in groups.values():
        members.sort(key=lambda item: _split_key(item[0]))
        n_val = int(round(VAL_FRACTION * len(members)))
        val.extend(path for _, path in members[:n_val])
        train.extend(path for _, path in members[n_val:])
    return sorted(train), sorted(val)


def image_corners(width: int, height: int) -> np.ndarray:
    """The four corner pixel centres of a ``width`` x ``height`` image, (4, 2) float64 x, y."""
    w, h = float(width), float(height)
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)


def random_homography(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    scale_range: tuple[float, float] = (0.6, 1.6),
    max_angle_deg: float = 20.0,
    perspective: float = 0.12,
    translation: float = 0.15,
) -> np.ndarray:
    """A random homography from a ``width`` x ``height`` view A to a view B of the same size.

    Composed about the image centre: a perspective distortion (each corner moved by up to
    ``perspective`` times the image size), a zoom ``s`` drawn log-uniformly from ``scale_range``
    (``s > 1``: B shows the content larger), an in-plane rotation uniform in
    ``±max_angle_deg`` and a translation of up to ``translation`` times the image size.
    Returns a 3x3 float64 matrix normalised so that ``H[2, 2] == 1``.
    """
    w, h = float(width), float(height)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    corners = image_corners(width, height)
    jitter = rng.uniform(-perspective, perspective, size=(4, 2)) * np.array([w, h])
    distorted = corners + jitter

    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = rng.uniform(-translation, translation, size=2) * np.array([w, h])
    target = (distorted - centre) @ (scale * rotation).T + centre + shift

    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target.astype(np.float32))
    return matrix / matrix[2, 2]


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Change the look of a uint8 image (grayscale H×W or BGR H×W×3) at random.

    Applied in this order, each with its own probability: gain (brightness ×0.6–1.4), gamma
    (0.7–1.4), contrast (×0.6–1.4 about the mean), colour (per-channel gain ±10 %, BGR only),
    blur (Gaussian sigma 0.3–1.5 or a short motion blur), Gaussian noise (sigma 1–8 grey levels)
    and JPEG re-compression (quality 30–95). Returns a new uint8 image of the same shape.
    """
    out = _to_float(image)
    if rng.random() < 0.8:
        out = out * rng.uniform(0.6, 1.4)
    if rng.random() < 0.5:
        out = np.clip(out, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.6:
        mean = float(out.mean())
        out = (out - mean) * rng.uniform(0.6, 1.4) + mean
    if out.ndim == 3 and rng.random() < 0.5:
        out = out * rng.uniform(0.9, 1.1, size=(1, 1, out.shape[2])).astype(np.float32)
    out = np.clip(out, 0.0, 1.0)

    blur = rng.random()
    if blur < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(rng.uniform(0.3, 1.5)))
    elif blur < 0.4:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        centre = (length / 2 - 0.5, length / 2 - 0.5)
        rotation = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6))
    if rng.random() < 0.5:
        sigma = rng.uniform(1.0, 8.0) / 255.0
        out = out + rng.normal(0.0, sigma, size=out.shape).astype(np.float32)

    result = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        quality = int(rng.integers(30, 96))
        ok, encoded = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
            result = decoded.reshape(result.shape)
    return result


def zoom_at_centre(homography: np.ndarray, size: tuple[int, int]) -> float:
    """Linear scale of ``homography`` at the centre of a ``size`` = (W, H) view A: the square
    root of its Jacobian's determinant there (``> 1``: B shows the content larger)."""
    x, y = (size[0] - 1) / 2, (size[1] - 1) / 2
    h = homography / homography[2, 2]
    w = h[2, 0] * x + h[2, 1] * y + 1.0
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    jacobian = np.array(
        [
            [(h[0, 0] - u * h[2, 0]) / w, (h[0, 1] - u * h[2, 1]) / w],
            [(h[1, 0] - v * h[2, 0]) / w, (h[1, 1] - v * h[2, 1]) / w],
        ]
    )
    return float(np.sqrt(abs(np.linalg.det(jacobian))))


def _footprint(h_a_to_b: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box ``(low, high)`` in A's pixels of view A together with what B sees."""
    corners = image_corners(width, height)
    points = np.concatenate([corners, warp_points(corners, np.linalg.inv(h_a_to_b))])
    points = points[np.all(np.isfinite(points), axis=1)]
    return points.min(axis=0), points.max(axis=0)


def _offset(low: float, high: float, size: int, extent: int, rng: np.random.Generator) -> int:
    """Where A's crop starts along one axis of a resized photo of ``extent`` pixels.

    A must lie inside the photo; when the whole footprint ``[low, high]`` (A's pixels) fits,
    it is placed at random so that it lies inside too, otherwise it is centred (B then shows
    some black border).
    """
    first, last = int(np.ceil(-low)), int(np.floor(extent - 1 - high))
    if first <= last:
        return int(rng.integers(first, last + 1))
    centred = int(round((extent - 1 - high - low) / 2))
    return min(max(centred, 0), extent - size)


def make_pair(
    image: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 240),
    *,
    photometric_changes: bool = True,
    max_upsample: float = 1.5,
    **homography_options: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make a synthetic training pair ``(imgA, imgB, H_A_to_B)`` from one photo.

    ``image`` is uint8 grayscale (H×W) or BGR (H×W×3); both views have the same layout and the
    size ``size = (W, H)``. The homography is drawn first (:func:`random_homography`;
    ``homography_options`` are passed on) and every draw is kept, so the zoom follows
    ``scale_range`` on both sides of 1. Then the photo is resized at random between "A and
    everything B sees fit in it" and native resolution (or the minimum needed), A is a random
    crop that leaves room for B's footprint, and B is the resized photo seen through
    ``H_A_to_B``: B shows real photo content beyond the edges of A. A photo too small for a
    strong zoom-out is upsampled at most ``max_upsample`` times beyond native (or the minimum
    for A); the rest of B is black, which :func:`covisibility` reports. Finally
    :func:`photometric` changes A and B independently.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("make_pair expects a uint8 H×W or H×W×C image")
    width, height = int(size[0]), int(size[1])
    src_h, src_w = image.shape[:2]

    h_a_to_b = random_homography(rng, width, height, **homography_options)
    low, high = _footprint(h_a_to_b, width, height)

    # Random resize: big enough for A (and, up to a limit, for B's footprint), at most native.
    crop_factor = max(width / src_w, height / src_h)
    native = max(crop_factor, 1.0)
    fit = max(crop_factor, (high[0] - low[0] + 1) / src_w, (high[1] - low[1] + 1) / src_h)
    smallest = min(fit, native * max_upsample)
    largest = max(smallest, native)
    factor = float(np.exp(rng.uniform(np.log(smallest), np.log(largest) + 1e-12)))
    new_w = max(width, int(np.ceil(src_w * factor)))
    new_h = max(height, int(np.ceil(src_h * factor)))
    interpolation = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    source = cv2.resize(image, (new_w, new_h), interpolation=interpolation)

    x0 = _offset(low[0], high[0], width, new_w, rng)
    y0 = _offset(low[1], high[1], height, new_h, rng)
    image_a = np.ascontiguousarray(source[y0 : y0 + height, x0 : x0 + width])
    crop = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])  # source -> A
    image_b = cv2.warpPerspective(
        source, h_a_to_b @ crop, (width, height), flags=cv2.INTER_LINEAR, borderValue=0
    )
    if photometric_changes:
        image_a = photometric(rng, image_a)
        image_b = photometric(rng, image_b)
    return image_a, image_b, h_a_to_b


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points; returns (N, 2) float64 (inf where w == 0)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ homography.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return homogeneous[:, :2] / homogeneous[:, 2:3]


def covisibility(
    homography: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the pixels of A seen in B and of the pixels of B seen in A.

    ``homography`` maps A to B; sizes are ``(W, H)``. A pixel counts as seen when its centre
    maps inside the other image's pixel-centre rectangle ``[0, W-1] x [0, H-1]``. Returns
    ``(mask_a (H_A×W_A), mask_b (H_B×W_B))``.
    """

    def mask(matrix: np.ndarray, size_from: tuple[int, int], size_to: tuple[int, int]):
        xs, ys = np.meshgrid(np.arange(size_from[0]), np.arange(size_from[1]))
        warped = warp_points(np.stack([xs.ravel(), ys.ravel()], axis=1), matrix)
        inside = (
            (warped[:, 0] >= 0)
            & (warped[:, 0] <= size_to[0] - 1)
            & (warped[:, 1] >= 0)
            & (warped[:, 1] <= size_to[1] - 1)
        )
        return inside.reshape(size_from[1], size_from[0])

    return mask(homography, size_a, size_b), mask(np.linalg.inv(homography), size_b, size_a)
