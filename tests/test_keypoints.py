"""Keypoint selection (numpy) on hand-made score maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from aslfeat_cli.keypoints import (
    DetectionConfig,
    nearest_keypoints,
    refine,
    sample_descriptors,
    select_keypoints,
    select_peaks,
)


def blob(h: int, w: int, centres: list[tuple[float, float, float]]) -> np.ndarray:
    """Sum of isotropic Gaussians (row, col, height), sigma 1.5: round peaks, no edges."""
    i, j = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for r, c, a in centres:
        out += a * np.exp(-((i - r) ** 2 + (j - c) ** 2) / (2 * 1.5**2))
    return out


def test_peaks_sorted_nms_threshold_and_topk():
    s = blob(40, 50, [(10, 10, 0.9), (20, 30, 0.8), (30, 12, 0.6), (30, 40, 0.4)])
    peaks, scores = select_peaks(s, DetectionConfig(score_threshold=0.5))
    assert peaks.tolist() == [[10, 10], [20, 30], [30, 12]]
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.6], rtol=1e-6)
    top1, _ = select_peaks(s, DetectionConfig(score_threshold=0.5, num_keypoints=1))
    assert top1.tolist() == [[10, 10]]


def test_border_mask_drops_peaks_near_the_edge():
    s = blob(40, 50, [(3, 25, 0.9), (20, 47, 0.9), (20, 20, 0.7)])
    peaks, _ = select_peaks(s, DetectionConfig(border=5))
    assert peaks.tolist() == [[20, 20]]
    all_peaks, _ = select_peaks(s, DetectionConfig(border=0))
    assert len(all_peaks) == 3


def test_edge_test_rejects_ridges():
    i, j = np.mgrid[0:40, 0:40].astype(np.float32)
    ridge = 0.9 * np.exp(-((j - 20) ** 2) / 4) * (1 + 0.001 * np.exp(-((i - 20) ** 2) / 400))
    peaks, _ = select_peaks(ridge.astype(np.float32), DetectionConfig(edge_threshold=10))
    assert len(peaks) == 0
    peaks, _ = select_peaks(ridge.astype(np.float32), DetectionConfig(edge_threshold=0))
    assert len(peaks) == 1


def test_newton_step_finds_quadratic_maximum_and_clips():
    i, j = np.mgrid[0:20, 0:20].astype(np.float32)
    quad = 1.0 - 0.01 * ((i - 9.3) ** 2 + (j - 10.2) ** 2)
    pos = refine(quad, np.array([[9, 10]]))
    np.testing.assert_allclose(pos, [[9.3, 10.2]], atol=1e-4)
    far = refine(quad, np.array([[5, 15]]))  # the step would be 4.3 / 4.8 px: clipped to 0.5
    np.testing.assert_allclose(far, [[5.5, 14.5]], atol=1e-6)


def test_descriptors_bilinear_at_quarter_resolution_and_unit_length():
    h, w = 5, 6
    dmap = np.zeros((h, w, 2), np.float32)
    dmap[..., 0] = np.arange(w)[None, :]  # channel 0 = column index
    dmap[..., 1] = 10.0
    pos = np.array([[8.0, 6.0], [4.0, 10.0]])  # (row, col) -> map (2, 1.5) and (1, 2.5)
    d = sample_descriptors(dmap, pos)
    expect = np.array([[1.5, 10.0], [2.5, 10.0]])
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(d, expect, rtol=1e-6)


def test_select_keypoints_returns_xy():
    s = blob(40, 60, [(12, 40, 0.9)])
    dmap = np.ones((10, 15, 128), np.float32)
    k, sc, d = select_keypoints(s, dmap, DetectionConfig())
    np.testing.assert_allclose(k, [[40, 12]], atol=1e-4)
    assert d.shape == (1, 128) and np.isclose(np.linalg.norm(d), 1)


@pytest.mark.parametrize("bad", [{"nms_size": 4}, {"num_keypoints": -1}, {"edge_threshold": -1}])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        DetectionConfig(**bad)


def test_nearest_keypoints_across_chunks() -> None:
    rng = np.random.default_rng(0)
    others = rng.uniform(0, 100, size=(300, 2))
    keypoints = others[::-1][:200] + 0.01  # each one sits next to a known point
    index, distance = nearest_keypoints(keypoints, others, chunk=64)
    np.testing.assert_array_equal(index, np.arange(299, 99, -1))
    np.testing.assert_allclose(distance, np.hypot(0.01, 0.01))
