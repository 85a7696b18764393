"""OpenCV SIFT as a baseline with the same interface as :class:`~.extractor.Extractor`.

``SiftExtractor(num_keypoints=5000).extract(image)`` returns keypoints (N, 2) float32 in the
hloc convention (integers at pixel centres: OpenCV's own keypoint convention, so no shift),
scores = the SIFT detector response, and **RootSIFT** descriptors (N, 128) float32: each SIFT
descriptor is L1-normalised, square-rooted (Arandjelović & Zisserman, CVPR 2012), which makes
it unit length in L2, so dot products compare them like the network's descriptors.
``root=False`` gives plain SIFT descriptors, L2-normalised.

The keypoint budget keeps the ``num_keypoints`` strongest responses; OpenCV may return the same
location twice with different orientations, and both count.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class SiftFeatures:
    """Keypoints (N, 2) float32, scores (N,), descriptors (N, 128) unit length, size (W, H)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]


def _to_gray_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(np.asarray(image[..., :3], np.uint8), cv2.COLOR_BGR2GRAY)
    if image.dtype != np.uint8:  # float images are 0..255 (aslfeat_cli.images convention)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


class SiftExtractor:
    """OpenCV SIFT with a keypoint budget; ``extract`` mirrors ``Extractor.extract``."""

    def __init__(
        self,
        num_keypoints: int = 5000,
        root: bool = True,
        contrast_threshold: float = 0.04,
        edge_threshold: float = 10.0,
    ) -> None:
        self.num_keypoints = int(num_keypoints)
        self.root = root
        # OpenCV's defaults (contrast 0.04, edge 10); nfeatures keeps the strongest responses.
        self._sift = cv2.SIFT_create(
            nfeatures=max(self.num_keypoints, 0),
            contrastThreshold=contrast_threshold,
            edgeThreshold=edge_threshold,
        )

    def extract(self, image: np.ndarray) -> SiftFeatures:
        """Detect and describe: image is H×W grey (uint8 or float 0..255) or H×W×3 BGR."""
        gray = _to_gray_uint8(np.asarray(image))
        keypoints, descriptors = self._sift.detectAndCompute(gray, None)
        height, width = gray.shape
        if descriptors is None or len(keypoints) == 0:
            return SiftFeatures(
                np.zeros((0, 2), np.float32),
                np.zeros(0, np.float32),
                np.zeros((0, 128), np.float32),
                (width, height),
            )
        scores = np.array([k.response for k in keypoints], np.float32)
        # OpenCV keeps ties at the cut-off, so it can return a few more than asked.
        order = np.argsort(-scores, kind="stable")
        if self.num_keypoints > 0:
            order = order[: self.num_keypoints]
        points = np.array([k.pt for k in keypoints], np.float32)[order]
        descriptors = descriptors[order].astype(np.float32)
        if self.root:
            descriptors /= np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-12)
            descriptors = np.sqrt(descriptors)
        descriptors /= np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
        return SiftFeatures(points, scores[order], descriptors, (width, height))
