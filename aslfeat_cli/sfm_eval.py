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


def projection_matrix(camera: Mapping[str, Any]) -> np.ndarray:
    """3x4 ``K R (X - C)`` of a ground-truth camera ({"K", "R_cam_to_world", "center"})."""
    rotation = np.asarray(camera["R_cam_to_world"], np.float64).T  # world -> camera
    centre = np.asarray(camera["center"], np.float64)
    k = np.asarray(camera["K"], np.float64)
    return k @ np.hstack([rotation, -rotation @ centre[:, None]])


def fundamental_matrix(camera0: Mapping[str, Any], camera1: Mapping[str, Any]) -> np.ndarray:
    """F with ``x1^T F x0 = 0`` for pixels of two ground-truth cameras (pixel convention of
    their K)."""
    p0, p1 = projection_matrix(camera0), projection_matrix(camera1)
    epipole = p1 @ np.append(np.asarray(camera0["center"], np.float64), 1.0)
    cross = np.array(
        [[0, -epipole[2], epipole[1]], [epipole[2], 0, -epipole[0]], [-epipole[1], epipole[0], 0]]
    )
    return cross @ p1 @ np.linalg.pinv(p0)


def epipolar_errors(
    fundamental: np.ndarray, points0: np.ndarray, points1: np.ndarray
) -> np.ndarray:
    """Per match (M,), the larger of the two distances in pixels from a point to its
    partner's epipolar line."""
    h0 = np.hstack([points0, np.ones((len(points0), 1))])
    h1 = np.hstack([points1, np.ones((len(points1), 1))])
    lines1, lines0 = h0 @ fundamental.T, h1 @ fundamental
    d1 = np.abs((lines1 * h1).sum(1)) / np.linalg.norm(lines1[:, :2], axis=1)
    d0 = np.abs((lines0 * h0).sum(1)) / np.linalg.norm(lines0[:, :2], axis=1)
    return np.maximum(d0, d1)
