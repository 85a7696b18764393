"""Geometric verification of putative matches with OpenCV's USAC MAGSAC++."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import UserError

MODELS = ("fundamental", "homography")
# Fewest correspondences each estimator accepts (7-point F is unstable: ask for 8).
MIN_MATCHES = {"fundamental": 8, "homography": 4}


@dataclass(frozen=True)
class VerifyOptions:
    """RANSAC settings: ``threshold`` in pixels (epipolar distance for F, transfer error for H)."""

    model: str = "fundamental"
    threshold: float = 1.0
    confidence: float = 0.9999
    max_iters: int = 10000

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise UserError(f"unknown verification model {self.model!r}: use one of {MODELS}")
        if self.threshold <= 0:
            raise UserError(f"the verification threshold must be positive, got {self.threshold}")


def verify_pair(
    kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, options: VerifyOptions
) -> np.ndarray:
    """Inlier mask (M,) bool of ``matches`` (M, 2 indices) under a robust F or H fit.

    Pairs with too few matches for the model, or where no model is found, get all False.
    """
    inliers = np.zeros(len(matches), dtype=bool)
    if len(matches) < MIN_MATCHES[options.model]:
        return inliers
    pts0 = np.ascontiguousarray(kpts0[matches[:, 0]], dtype=np.float64)
    pts1 = np.ascontiguousarray(kpts1[matches[:, 1]], dtype=np.float64)
    try:
        if options.model == "fundamental":
            model, mask = cv2.findFundamentalMat(
                pts0,
                pts1,
                cv2.USAC_MAGSAC,
                options.threshold,
                options.confidence,
                options.max_iters,
            )
        else:
            model, mask = cv2.findHomography(
                pts0,
                pts1,
                cv2.USAC_MAGSAC,
                options.threshold,
                maxIters=options.max_iters,
                confidence=options.confidence,
            )
    except cv2.error:  # degenerate configurations (all points on a line, ...)
        return inliers
    if model is None or mask is None:
        return inliers
    return mask.reshape(-1).astype(bool)
