"""Accuracy of a reconstruction against ground-truth camera centres (similarity-aligned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |dst - (s R src + t)|^2 (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    cov = (dst - mu_d).T @ (src - mu_s) / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (src - mu_s).var(0).sum()
    return scale, rot, mu_d - scale * rot @ mu_s


def camera_centre_errors(sparse: Path, centres: dict[str, list[float]]) -> tuple[np.ndarray, float]:
    """Per-image centre errors (metres, in ``centres``' order of sorted names) of the COLMAP
    model in ``sparse`` after the best similarity to the ground truth, and the extent (the
    diagonal of the true centres' bounding box). Needs pycolmap; every image must be
    registered."""
    import pycolmap

    model = pycolmap.Reconstruction(sparse)
    names = sorted(centres)
    est = np.array([model.find_image_with_name(n).projection_center() for n in names])
    ref = np.array([centres[n] for n in names], dtype=np.float64)
    scale, rot, t = umeyama(est, ref)
    errors = np.linalg.norm((scale * (rot @ est.T)).T + t - ref, axis=1)
    return errors, float(np.linalg.norm(ref.max(0) - ref.min(0)))
