"""Accuracy of a reconstruction against ground-truth camera centres (similarity-aligned)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .cameras import CameraSpec, camera_spec
from .colmap_db import COLMAP_SHIFT
from .errors import UserError


def ground_truth_camera(cameras: Mapping[str, Mapping[str, Any]]) -> CameraSpec:
    """The one intrinsic matrix ``K`` of a ground-truth file's cameras (name -> {"K": 3x3,
    ...}, as ``cameras_gt.json``) as a fixed PINHOLE camera. ``K`` has its origin at the
    centre of the top-left pixel (the data's convention), COLMAP's at its corner."""
    matrices = {json.dumps(camera["K"]) for camera in cameras.values()}
    if len(matrices) != 1:
        raise UserError(f"one K for all cameras expected, found {len(matrices)}")
    k = json.loads(matrices.pop())
    params = [k[0][0], k[1][1], k[0][2] + COLMAP_SHIFT, k[1][2] + COLMAP_SHIFT]
    return camera_spec("PINHOLE", params, fixed=True)


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
