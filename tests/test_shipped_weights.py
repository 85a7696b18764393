"""The shipped model is trained: it matches a photo with a known warp of itself.

Runs in CI without ../shared/data (the photo is scikit-image's astronaut), so a broken, missing
or random weight file fails here (figures at MIN_CORRECT).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aslfeat_cli import Extractor
from aslfeat_cli.backends import default_model_path
from aslfeat_cli.matching import mutual_nn_match
from aslfeat_cli.synthetic import warp_points

# Correct matches (< 3 px) of 1000 keypoints per image, measured: random weights (the TF
# reference checkpoint) 4, the run's step-200 weights 252, the weights shipped until 2026-12-06
# (step 16,705) 459, the shipped localization fine-tune 561.
MIN_CORRECT = 300


def astronaut_and_warp() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    skdata = pytest.importorskip("skimage.data")
    rgb = skdata.astronaut()
    gray = cv2.resize(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (512, 384), interpolation=cv2.INTER_AREA
    )
    angle, scale = np.deg2rad(12), 0.85
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([256.0, 192.0])
    h = np.eye(3)
    h[:2, :2] = rot
    h[:2, 2] = centre - rot @ centre + [10.0, -6.0]
    h[2, :2] = [2e-4, -1e-4]
    return gray, cv2.warpPerspective(gray, h, (512, 384)), h


def test_shipped_model_matches_a_known_homography():
    assert default_model_path().is_file(), "weights/aslfeat.onnx is missing: run `make export`"
    image, warped, h = astronaut_and_warp()
    extractor = Extractor(num_keypoints=1000, device="cpu")
    meta = extractor.model_metadata
    assert meta["variant"] in ("u", "a", "h", "plain")
    fa, fb = extractor.extract(image), extractor.extract(warped)
    # The warp shows less of the photo: fewer keypoints pass the score threshold (measured:
    # 877 with the shipped weights; the previous ones kept 900 or more).
    assert len(fa) == 1000 and 800 <= len(fb) <= 1000
    matches0, _ = mutual_nn_match(fa.descriptors, fb.descriptors)
    idx = np.flatnonzero(matches0 >= 0)
    err = np.linalg.norm(warp_points(fa.keypoints[idx], h) - fb.keypoints[matches0[idx]], axis=1)
    correct = int((err < 3).sum())
    assert correct >= MIN_CORRECT, f"only {correct} correct matches: untrained or broken weights"


def test_max_dim_returns_keypoints_in_original_pixels():
    image, _, _ = astronaut_and_warp()  # 512 x 384
    full = Extractor(num_keypoints=500, device="cpu", max_dim=256)
    small = cv2.resize(image.astype(np.float32), (256, 192), interpolation=cv2.INTER_AREA)
    direct = Extractor(num_keypoints=500, device="cpu").extract(small)
    f = full.extract(image)
    assert f.image_size == (512, 384)
    # Same detections, coordinates mapped with the pixel-centre rule (x + 0.5) * 2 - 0.5.
    np.testing.assert_allclose(f.keypoints, (direct.keypoints + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(f.descriptors, direct.descriptors, atol=1e-6)


def test_multi_scale_merges_a_global_top_k():
    image, _, _ = astronaut_and_warp()
    single = Extractor(num_keypoints=800, device="cpu").extract(image)
    multi = Extractor(num_keypoints=800, device="cpu", multi_scale=True).extract(image)
    assert len(multi) == 800
    assert np.all(np.diff(multi.scores) <= 0)  # best first across scales
    assert multi.scores[-1] >= single.scores[-1]  # more candidates, a higher cut
    inside = (multi.keypoints >= -0.5) & (multi.keypoints <= np.array([511.5, 383.5]))
    assert inside.all()
