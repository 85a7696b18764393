"""Keypoint selection on the network's dense outputs (numpy/OpenCV, no torch).

Follows the official ASLFeat graph step by step (checked against its recorded outputs): on the
fused score map, candidates are the pixels above the score threshold that are local maxima
(NMS), away from the border (end-of-frame mask) and not on an edge (Hessian ratio test with
dilation 3); the top-K scores among them are kept, refined by one Newton step (clipped to half
a pixel), and descriptors are bilinearly sampled from conv6 at keypoint / 4 and L2-normalised.
The PyTorch model and the onnxruntime path both use this module, so they cannot drift apart.

Coordinates are (x, y) pixels of the network input with integers at pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DESCRIPTOR_STRIDE = 4
# Newton steps are clipped to half a pixel, as in the official graph.
REFINEMENT_CLIP = 0.5
# Keypoint localisation noise in pixels of the image the network saw, stored (scaled to the
# original resolution) as hloc's ``uncertainty`` attribute of ``keypoints``; 1 px like hloc's
# DoG extractor: refined peaks sit within REFINEMENT_CLIP of a pixel centre.
DETECTION_NOISE = 1.0
# The edge test looks at the score map's curvature over 3-pixel steps (official: dilation=3).
EDGE_DILATION = 3


@dataclass(frozen=True)
class DetectionConfig:
    """Keypoint-selection settings; defaults are the official evaluation config."""

    num_keypoints: int = 5000  # top-K; 0 keeps every keypoint above the threshold
    score_threshold: float = 0.5
    edge_threshold: float = 10.0  # Hessian ratio r of the edge test; 0 = off
    nms_size: int = 3  # odd window; 0 or 1 = no NMS
    border: int = 5  # end-of-frame mask width in pixels
    # Sub-pixel refinement (REFINEMENTS); True/False mean "newton"/"none".
    refinement: str | bool = "newton"

    def __post_init__(self) -> None:
        if self.refinement is True or self.refinement is False:
            object.__setattr__(self, "refinement", "newton" if self.refinement else "none")
        if self.refinement not in REFINEMENTS:
            raise ValueError(f"refinement must be one of {', '.join(REFINEMENTS)}")
        if self.num_keypoints < 0:
            raise ValueError("num_keypoints must be >= 0")
        if self.nms_size < 0 or (self.nms_size > 1 and self.nms_size % 2 == 0):
            raise ValueError("nms_size must be 0, 1 or an odd number")
        if self.edge_threshold < 0 or self.border < 0:
            raise ValueError("edge_threshold and border must be >= 0")
        if not (np.isfinite(self.score_threshold) and np.isfinite(self.edge_threshold)):
            # nan compares False with everything: it would silently keep no keypoint at all
            raise ValueError("score_threshold and edge_threshold must be finite")


def _hessian(s: np.ndarray, i: np.ndarray, j: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    """Finite-difference Hessian (dii, dij, djj) of ``s`` at (i, j) with step ``d``."""
    c = s[i, j]
    dii = s[i - d, j] - 2 * c + s[i + d, j]
    djj = s[i, j - d] - 2 * c + s[i, j + d]
    dij = 0.25 * (s[i - d, j - d] - s[i - d, j + d] - s[i + d, j - d] + s[i + d, j + d])
    return dii, dij, djj


def not_edge(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray, ratio: float) -> np.ndarray:
    """Edge test of SIFT / D2-Net: keep points where tr(H)^2 / det(H) <= (r + 1)^2 / r.

    The Hessian of the score map is taken with zero padding and dilation EDGE_DILATION.
    """
    d = EDGE_DILATION
    s = np.pad(np.asarray(score_map, dtype=np.float32), d)
    dii, dij, djj = _hessian(s, rows + d, cols + d, d)
    det = dii * djj - dij * dij
    tr = dii + djj
    with np.errstate(divide="ignore", invalid="ignore"):
        return (tr * tr / det <= (ratio + 1) ** 2 / ratio) & (det > 0)


def select_peaks(score_map: np.ndarray, config: DetectionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Integer keypoint positions (N, 2) as (row, col) and their scores, best first."""
    h, w = score_map.shape
    s = np.asarray(score_map, dtype=np.float32)
    candidates = s > config.score_threshold
    if config.nms_size > 1:
        # cv2.dilate pads with -inf: the same as TF's 'SAME' max-pool.
        kernel = np.ones((config.nms_size, config.nms_size), np.uint8)
        candidates &= s == cv2.dilate(s, kernel)
    r = config.border
    if r > 0:
        candidates[:r] = candidates[h - r :] = False
        candidates[:, :r] = candidates[:, w - r :] = False
    rows, cols = np.nonzero(candidates)
    if config.edge_threshold > 0:
        keep = not_edge(s, rows, cols, config.edge_threshold)
        rows, cols = rows[keep], cols[keep]
    scores = s[rows, cols]
    # Highest first; ties keep raster order like the official argsort.
    order = np.argsort(-scores, kind="stable")
    if config.num_keypoints > 0:
        order = order[: config.num_keypoints]
    return np.stack([rows[order], cols[order]], axis=1), scores[order]


def refine(score_map: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """One Newton step towards the sub-pixel maximum at each peak, clipped to REFINEMENT_CLIP.

    Finite differences on the 3x3 neighbourhood of the score map (zero outside it), as the
    official ``kpt_refinement``; returns float (row, col).
    """
    if len(peaks) == 0:
        return peaks.astype(np.float32)
    s = np.pad(np.asarray(score_map, dtype=np.float32), 1)
    i, j = peaks[:, 0] + 1, peaks[:, 1] + 1
    di = 0.5 * (s[i + 1, j] - s[i - 1, j])
    dj = 0.5 * (s[i, j + 1] - s[i, j - 1])
    dii, dij, djj = _hessian(s, i, j, 1)
    det = dii * djj - dij * dij
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
    inv = np.where(det == 0, 0.0, inv).astype(np.float32)  # tf.math.divide_no_nan
    step_i = -(djj * inv * di - dij * inv * dj)
    step_j = -(-dij * inv * di + dii * inv * dj)
    steps = np.clip(np.stack([step_i, step_j], axis=1), -REFINEMENT_CLIP, REFINEMENT_CLIP)
    return peaks.astype(np.float32) + steps.astype(np.float32)


def _windows(score_map: np.ndarray, peaks: np.ndarray, radius: int) -> np.ndarray:
    """(N, 2r+1, 2r+1) neighbourhoods of integer (row, col) peaks, zero outside the map."""
    s = np.pad(np.asarray(score_map, dtype=np.float32), radius)
    r = np.arange(-radius, radius + 1)
    rows = peaks[:, 0, None, None] + radius + r[None, :, None]
    cols = peaks[:, 1, None, None] + radius + r[None, None, :]
    return s[rows, cols]


def _quadratic_fit_matrix() -> np.ndarray:
    """(6, 9) least-squares map from a 3x3 window (raster order) to the coefficients of
    a + b x + c y + d x^2 + e x y + f y^2, with x = column offset, y = row offset."""
    dy, dx = np.mgrid[-1:2, -1:2]
    x, y = dx.ravel().astype(np.float64), dy.ravel().astype(np.float64)
    design = np.stack([np.ones(9), x, y, x * x, x * y, y * y], axis=1)
    return np.linalg.pinv(design)


_QUADRATIC = _quadratic_fit_matrix()


def refine_quadratic(score_map: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Sub-pixel maxima of a 2-D quadratic fitted (least squares) to each 3x3 window.

    Uses all nine values, where the official Newton step uses the five of a cross (plus the
    corners for the mixed term only); steps are clipped to REFINEMENT_CLIP as there, and a fit
    without a maximum (not negative definite) keeps the integer peak. Returns float (row, col).
    """
    if len(peaks) == 0:
        return peaks.astype(np.float32)
    coef = _windows(score_map, peaks, 1).reshape(len(peaks), 9).astype(np.float64) @ _QUADRATIC.T
    b, c, d, e, f = coef[:, 1], coef[:, 2], coef[:, 3], coef[:, 4], coef[:, 5]
    det = 4 * d * f - e * e
    maximum = (d < 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(maximum, (e * c - 2 * f * b) / det, 0.0)
        dy = np.where(maximum, (e * b - 2 * d * c) / det, 0.0)
    steps = np.clip(np.stack([dy, dx], axis=1), -REFINEMENT_CLIP, REFINEMENT_CLIP)
    return (peaks + steps).astype(np.float32)


def refine_softargmax(
    score_map: np.ndarray, peaks: np.ndarray, radius: int = 2, temperature: float = 0.1
) -> np.ndarray:
    """Soft-argmax in a (2r+1)^2 window: the peak plus the softmax-weighted mean offset of
    ``softmax((s - max) / ((max - min) temperature))``, the position the localization loss of
    :mod:`aslfeat_training.localization` trains (same defaults). Returns float (row, col)."""
    if len(peaks) == 0:
        return peaks.astype(np.float32)
    win = _windows(score_map, peaks, radius).reshape(len(peaks), -1).astype(np.float64)
    top = win.max(axis=1, keepdims=True)
    span = np.maximum(top - win.min(axis=1, keepdims=True), 1e-6)
    logits = (win - top) / (span * temperature)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    offsets = np.stack([dy.ravel(), dx.ravel()], axis=1).astype(np.float64)
    return (peaks + weights @ offsets).astype(np.float32)


#: Sub-pixel refinements: the official clipped Newton step (default), a 3x3 quadratic fit,
#: the training-time soft-argmax, or none (integer pixels).
REFINEMENTS = ("newton", "quadratic", "softargmax", "none")
_REFINE = {
    "newton": lambda s, p: refine(s, p),
    "quadratic": refine_quadratic,
    "softargmax": refine_softargmax,
    "none": lambda s, p: p.astype(np.float32),
}


def sample_descriptors(descriptor_map: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bilinear samples of (h, w, D) at (row, col) / 4, L2-normalised (N, D) float32.

    Same arithmetic as the official ``interpolate``: corner indices are clipped to the map and
    weights come from the distance to the clipped top-left corner.
    """
    h, w, _ = descriptor_map.shape
    pos = positions.astype(np.float32) / DESCRIPTOR_STRIDE
    i, j = pos[:, 0], pos[:, 1]
    i0 = np.clip(np.floor(i), 0, h - 1).astype(np.int64)
    j0 = np.clip(np.floor(j), 0, w - 1).astype(np.int64)
    i1 = np.clip(np.ceil(i), 0, h - 1).astype(np.int64)
    j1 = np.clip(np.ceil(j), 0, w - 1).astype(np.int64)
    di = (i - i0)[:, None]
    dj = (j - j0)[:, None]
    d = (
        (1 - di) * (1 - dj) * descriptor_map[i0, j0]
        + (1 - di) * dj * descriptor_map[i0, j1]
        + di * (1 - dj) * descriptor_map[i1, j0]
        + di * dj * descriptor_map[i1, j1]
    )
    norm = np.sqrt(np.maximum((d * d).sum(axis=1, keepdims=True), 1e-12))
    return (d / norm).astype(np.float32)


def select_keypoints(
    score_map: np.ndarray,
    descriptor_map: np.ndarray,
    config: DetectionConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints (N, 2) x, y; scores (N,); descriptors (N, D), from the network's dense outputs."""
    peaks, scores = select_peaks(score_map, config)
    positions = _REFINE[config.refinement](score_map, peaks)
    descriptors = sample_descriptors(descriptor_map, positions)
    return positions[:, ::-1].copy(), scores, descriptors


def nearest_keypoints(
    keypoints: np.ndarray, others: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``keypoints`` (N, 2), the index of the nearest of ``others`` (M, 2, M > 0)
    and its distance in pixels: two (N,) arrays. Used to compare two extractions of one image."""
    index = np.empty(len(keypoints), np.int64)
    distance = np.empty(len(keypoints), np.float64)
    for start in range(0, len(keypoints), chunk):  # chunks keep the distance matrix small
        d = np.linalg.norm(keypoints[start : start + chunk, None] - others[None], axis=2)
        index[start : start + chunk] = d.argmin(1)
        distance[start : start + chunk] = d.min(1)
    return index, distance
