"""The Python API: ``Extractor(...).extract(image)`` -> keypoints, scores, descriptors.

Images follow OpenCV's layout: H x W grayscale (uint8, or float in 0..255) or H x W x 3 BGR.
Keypoints are (x, y) in pixels of the image passed in, integers at pixel centres (hloc's
convention). No torch: the network runs in onnxruntime or OpenVINO (:mod:`.backends`), keypoint
selection in numpy, the same for every backend.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .backends import Backend, open_backend
from .images import check_upscale, downscale_to_fit, scale_keypoints, upscale_image
from .keypoints import DetectionConfig, select_keypoints
from .scale_pooling import check_pool_scales, pooled_descriptors
from .shift_average import diagonal_shifts, shift_averaged
from .standardization import standardize
from .tiling import TILE_PIXELS, plan_tiles, run_tiled

# Multi-scale inference of the official code: scales 1, 1/sqrt(2), ... down to a minimum size,
# each level blurred before it is resized.
SCALE_FACTOR = 1 / math.sqrt(2)
SCALE_SIGMA = 0.8


@dataclass
class Features:
    """Local features of one image."""

    keypoints: np.ndarray  # (N, 2) float32, x, y; integer = pixel centre
    scores: np.ndarray  # (N,) float32, best first
    descriptors: np.ndarray  # (N, 128) float32, unit length
    image_size: tuple[int, int]  # (W, H) of the image given to extract()

    def __len__(self) -> int:
        return len(self.keypoints)


def to_gray(image: np.ndarray) -> np.ndarray:
    """H x W or H x W x 3 (BGR) / x 4 (BGRA) array -> H x W float32 grayscale in 0..255."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        if image.shape[2] not in (3, 4):
            raise ValueError(f"expected 1, 3 or 4 channels, got {image.shape[2]}")
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(image if image.dtype != np.float64 else image.astype(np.float32), code)
    if image.ndim != 2:
        raise ValueError(f"expected an H x W or H x W x 3 image, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


class Extractor:
    """ASLFeat keypoints and descriptors on onnxruntime or OpenVINO.

    Args:
        model: ONNX file from ``aslfeat export``; None for the shipped weights.
        num_keypoints: top-K by score (0: all above the threshold).
        score_threshold, edge_threshold, nms_size: detection settings (official defaults).
        multi_scale: run the official image pyramid and keep the global top-K.
        max_dim: downscale so that the long side is at most this (keypoints still come back in
            pixels of the given image).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        threads: inference threads (None: the runtime's default).
        backend: "auto" (onnxruntime on CUDA, else OpenVINO when installed, else onnxruntime),
            "onnxruntime" or "openvino" (see :mod:`.backends`).
        precision: "auto" (bfloat16 on OpenVINO where the CPU has it natively, else float32),
            "fp32", "bf16" (OpenVINO) or "fp16" (onnxruntime, for CUDA; see
            :mod:`.half_precision`).
        fp16: the same as ``precision="fp16"`` (kept for ``--fp16``).
        io_binding: explicit onnxruntime IO binding (None: on with CUDA).
        tile_pixels: larger network inputs run in overlapping tiles of at most this many
            pixels, so memory stays bounded (:mod:`.tiling`; the same keypoints up to the
            margin's reach); None: always whole.
        shifts: 1 (official), 2 or 4 network passes of the image moved 0..3 px along the
            diagonal, score maps averaged: keypoints free of the coarse levels' 4-pixel
            lattice, more precise at 1 px, ``shifts`` times the network time
            (:mod:`.shift_average`).
        upscale: run the network on the image enlarged by this factor (1 to 4; 1: as given,
            the official input), keypoints mapped back to the image's pixels: finer detector
            windows and lattices, so more precise keypoints at 1 px, about ``upscale ** 2``
            times the network time (:func:`.images.upscale_image`). Applied after
            ``max_dim``; with ``multi_scale`` the pyramid starts at the enlarged image.
        pool_scales: also run the network on the image (after ``max_dim``) resized by each of
            these factors (0.25 up to ``max(1, upscale)``, not ``upscale`` itself) and pool
            their descriptors with the detection pass's (sum, L2-normalised): fewer wrong
            matches under scale change (higher MMA at every threshold on zoomed pairs) but
            a higher SfM reprojection error (README); keypoints and scores unchanged; one
            more network pass per factor (:mod:`.scale_pooling`). Not with ``multi_scale``.
            Empty (default): the official descriptors.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        num_keypoints: int = 5000,
        score_threshold: float = 0.5,
        edge_threshold: float = 10.0,
        nms_size: int = 3,
        multi_scale: bool = False,
        max_dim: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        fp16: bool = False,
        io_binding: bool | None = None,
        backend: str = "auto",
        precision: str = "auto",
        tile_pixels: int | None = TILE_PIXELS,
        shifts: int = 1,
        upscale: float = 1.0,
        pool_scales: Sequence[float] = (),
    ) -> None:
        if max_dim is not None and max_dim < 16:
            raise ValueError("max_dim must be at least 16")
        if tile_pixels is not None and tile_pixels < 500_000:
            raise ValueError("tile_pixels must be at least 500000 (the margins need room)")
        self.tile_pixels = tile_pixels
        diagonal_shifts(shifts)  # refuses counts other than SHIFT_COUNTS before the model loads
        self.shifts = shifts
        self.upscale = check_upscale(upscale)
        self.pool_scales = check_pool_scales(pool_scales, self.upscale, multi_scale)
        self.config = DetectionConfig(
            num_keypoints=num_keypoints,
            score_threshold=score_threshold,
            edge_threshold=edge_threshold,
            nms_size=nms_size,
        )
        self.multi_scale = multi_scale
        self.max_dim = max_dim
        if fp16:
            if precision not in ("auto", "fp16"):
                raise ValueError(f"fp16=True contradicts precision={precision!r}")
            precision = "fp16"
        # Named `session` since the onnxruntime-only days; any Backend (see .backends).
        self.session: Backend = open_backend(
            model, backend, precision, device, threads, io_binding=io_binding
        )

    def lanes(self, count: int) -> list[Extractor]:
        """Up to ``count`` Extractors with this one's settings that may each run ``extract``
        in its own thread at the same time, each on its share of the threads (OpenVINO: one
        stream each, compiled on demand; ``[self]`` on onnxruntime). For pipelines of small
        images: each stream keeps buffers for the largest image it has run."""
        views = []
        for lane in self.session.lanes(count):
            view = copy.copy(self)
            view.session = lane
            views.append(view)
        return views

    @property
    def model_metadata(self) -> dict[str, str]:
        """The ONNX file's metadata (variant, descriptor size, detection defaults, hashes)."""
        return dict(self.session.metadata)

    @property
    def device(self) -> str:
        return self.session.device

    @property
    def backend(self) -> str:
        """'onnxruntime' or 'openvino'."""
        return self.session.name

    @property
    def precision(self) -> str:
        """'float32', 'bfloat16' or 'float16'."""
        return self.session.precision

    @property
    def effective_tile_pixels(self) -> int | None:
        """The tile size inputs really run in: ``tile_pixels``, or None where the backend's
        model keeps its standardisation inside (it then runs every image whole)."""
        return self.tile_pixels if self.session.standardized_input else None

    def dense(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's score map and descriptor map of one (H, W) float32 image (0..255),
        in tiles when it has more than :attr:`effective_tile_pixels` pixels."""
        h, w = gray.shape
        tile_pixels = self.effective_tile_pixels
        if tile_pixels is None or h * w <= tile_pixels:
            return self.session.run(gray)
        tiles = plan_tiles(h, w, tile_pixels)
        return run_tiled(self.session.run_network, standardize(gray), self.session.stride, tiles)

    def _single_scale(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        score_map, descriptor_map = shift_averaged(
            self.dense, gray, self.shifts, self.session.stride
        )
        return select_keypoints(score_map, descriptor_map, self.config)

    def _scales(self, gray: np.ndarray):  # noqa: ANN202 (generator of arrays)
        """The official pyramid: yields images at scales 1, 1/sqrt(2), ... (blurred first)."""
        h, w = gray.shape
        n = 1
        if self.multi_scale:
            min_scale = max(0.3, 128 / max(h, w))
            n = math.floor(max(math.log(min_scale) / math.log(SCALE_FACTOR), 1))
        level = gray
        for i in range(n):
            if i > 0:
                level = cv2.GaussianBlur(level, (0, 0), SCALE_SIGMA / SCALE_FACTOR)
                level = cv2.resize(level, None, fx=SCALE_FACTOR, fy=SCALE_FACTOR)
            if min(level.shape) < self.session.min_size:
                break
            yield level

    def _network_input(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The gray image after ``max_dim`` and the enlarged one the detection pass sees."""
        gray = to_gray(image)
        h, w = gray.shape
        if min(h, w) < self.session.min_size:
            raise ValueError(
                f"image is {w}x{h}: too small for the network (at least "
                f"{self.session.min_size} px per side)"
            )
        fitted = downscale_to_fit(gray, self.max_dim)
        return fitted, upscale_image(fitted, self.upscale)

    def descriptor_map(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The detection pass's dense descriptor map of ``image`` (h, w, 128; stride 4, not
        normalised) and the (W, H) of the network input it belongs to: what ``extract``
        samples the descriptors from (without ``pool_scales``; single scale only)."""
        _, base = self._network_input(image)
        return self.dense(base)[1], (base.shape[1], base.shape[0])

    def extract(self, image: np.ndarray) -> Features:
        """Keypoints, scores and descriptors of one image (see the class docstring)."""
        h, w = image.shape[:2]
        fitted, base = self._network_input(image)
        kpts, scores, descs = [], [], []
        for level in self._scales(base):
            k, s, d = self._single_scale(level)
            if self.pool_scales:  # never with multi_scale: level is base
                on_fitted = scale_keypoints(k, level.shape[::-1], fitted.shape[::-1])
                d = pooled_descriptors(
                    self.dense, fitted, on_fitted, d, self.pool_scales, self.session.min_size
                )
            kpts.append(scale_keypoints(k, level.shape[::-1], (w, h)))
            scores.append(s)
            descs.append(d)
        k, s, d = np.concatenate(kpts), np.concatenate(scores), np.concatenate(descs)
        if len(kpts) > 1:
            order = np.argsort(-s, kind="stable")
            if self.config.num_keypoints > 0:
                order = order[: self.config.num_keypoints]
            k, s, d = k[order], s[order], d[order]
        return Features(k.astype(np.float32), s.astype(np.float32), d, (w, h))
