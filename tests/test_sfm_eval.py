"""Ground-truth geometry for the SfM checks: epipolar errors and the known camera."""

from __future__ import annotations

import numpy as np
import pytest

from aslfeat_cli.errors import UserError
from aslfeat_cli.sfm_eval import epipolar_errors, fundamental_matrix, projection_matrix


def _camera(yaw: float, centre: list[float]) -> dict:
    c, s = np.cos(yaw), np.sin(yaw)
    cam_to_world = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    k = [[1000.0, 0, 640], [0, 1010.0, 480], [0, 0, 1]]
    return {"K": k, "R_cam_to_world": cam_to_world.tolist(), "center": centre}


def _project(camera: dict, points: np.ndarray) -> np.ndarray:
    h = projection_matrix(camera) @ np.hstack([points, np.ones((len(points), 1))]).T
    return (h[:2] / h[2]).T


def test_epipolar_errors_known_answer():
    rng = np.random.default_rng(0)
    cam0, cam1 = _camera(0.0, [0, 0, 0]), _camera(0.3, [2.0, 0.1, 0.5])
    points = rng.uniform([-2, -2, 6], [2, 2, 10], (50, 3))
    x0, x1 = _project(cam0, points), _project(cam1, points)
    f = fundamental_matrix(cam0, cam1)
    np.testing.assert_allclose(epipolar_errors(f, x0, x1), 0, atol=1e-6)
    # Move view 1's points 1.5 px across their epipolar lines: the error is 1.5 px (the
    # other view's distance is smaller, as the larger of the two is reported: >= 1.5).
    lines = np.hstack([x0, np.ones((50, 1))]) @ f.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    errors = epipolar_errors(f, x0, x1 + 1.5 * normal)
    assert np.all(errors >= 1.5 - 1e-6) and np.median(errors) < 3
    # Along the line it stays 0.
    along = normal[:, ::-1] * [1, -1]
    np.testing.assert_allclose(epipolar_errors(f, x0, x1 + 3 * along), 0, atol=1e-6)


def test_ground_truth_camera_shifts_to_colmap_and_needs_one_k():
    pytest.importorskip("pycolmap")
    from aslfeat_cli.sfm_eval import ground_truth_camera

    cameras = {"a.jpg": _camera(0.0, [0, 0, 0]), "b.jpg": _camera(0.2, [1, 0, 0])}
    spec = ground_truth_camera(cameras)
    assert spec.model == "PINHOLE" and spec.fixed
    assert spec.params == (1000.0, 1010.0, 640.5, 480.5)  # COLMAP's origin: the corner
    cameras["b.jpg"]["K"] = [[900.0, 0, 640], [0, 900.0, 480], [0, 0, 1]]
    with pytest.raises(UserError, match="one K for all cameras expected, found 2"):
        ground_truth_camera(cameras)
