"""The distillation teacher computes the inference's ``--upscale``/``--shifts`` score map.

The teacher's map must be the one the runtime detects on with those options (the
distillation term asks a single pass for it), so it is checked against the runtime's own
code: :func:`aslfeat_cli.shift_average.shift_averaged` and ``--upscale``'s resize convention.
The loss itself is checked with the other localization terms (``test_localization.py``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from aslfeat_cli.shift_average import shift_averaged  # noqa: E402
from aslfeat_export.convert import load_weights  # noqa: E402
from aslfeat_training.distillation import Teacher  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "aslfeat.pt"


@pytest.fixture(scope="module")
def model():
    return load_weights(WEIGHTS).eval()


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return cv2.resize(skdata.camera(), (96, 80), interpolation=cv2.INTER_AREA).astype(np.float32)


def _dense(model):
    def dense(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            score, desc = model(torch.from_numpy(np.ascontiguousarray(image))[None, None])
        return score.numpy(), desc.numpy()

    return dense


def test_teacher_map_is_the_runtime_shift_average(model, gray):
    ours = Teacher(model, upscale=1, shifts=4).score_maps(torch.from_numpy(gray)[None, None])
    expected, _ = shift_averaged(_dense(model), gray, 4)
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=0, atol=1e-5)


def test_teacher_upscale_enlarges_bilinearly_and_area_averages_back(model, gray):
    ours = Teacher(model, upscale=2, shifts=1).score_maps(torch.from_numpy(gray)[None, None])
    h, w = gray.shape
    big = cv2.resize(gray, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    score, _ = _dense(model)(big)
    expected = cv2.resize(score, (w, h), interpolation=cv2.INTER_AREA)
    assert ours.shape == (1, h, w)
    np.testing.assert_allclose(ours[0].numpy(), expected, rtol=0, atol=2e-3 * expected.max())


def test_teacher_is_frozen_and_independent_of_the_student(model, gray):
    student = load_weights(WEIGHTS)
    teacher = Teacher(student, upscale=1, shifts=2)
    before = teacher.score_maps(torch.from_numpy(gray)[None, None])
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    after = teacher.score_maps(torch.from_numpy(gray)[None, None])
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert not after.requires_grad


@pytest.mark.parametrize("upscale, shifts", [(1.5, 4), (0, 1), (2, 3)])
def test_teacher_refuses_settings_it_cannot_average(model, upscale, shifts):
    with pytest.raises(ValueError):
        Teacher(model, upscale=upscale, shifts=shifts)


def test_teacher_keypoints_are_detected_on_the_enlarged_map_and_scaled_back(model, gray):
    """The runtime's --upscale: peaks and Newton step on the enlarged image's map, keypoints
    mapped back with the pixel-centre convention (aslfeat_cli.images.scale_keypoints)."""
    from aslfeat_cli.images import scale_keypoints
    from aslfeat_training.localization import newton_keypoints, nms_peaks

    teacher = Teacher(model, upscale=2, shifts=1)
    ours = teacher.keypoints(torch.from_numpy(gray)[None, None], num_peaks=64, radius=2)[0]
    h, w = gray.shape
    big = cv2.resize(gray, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    score = torch.from_numpy(_dense(model)(big)[0])
    expected = newton_keypoints(score, nms_peaks(score, 64, 2)).numpy()
    expected = scale_keypoints(expected, (2 * w, 2 * h), (w, h))
    assert ours.shape == (64, 2)
    # Nearest expected keypoint of each of ours: the same points, up to the bilinear
    # enlargement's rounding (torch vs OpenCV) reordering a few near-equal peaks.
    distance = np.linalg.norm(ours.numpy()[:, None] - expected[None], axis=2).min(axis=1)
    assert np.mean(distance < 0.02) >= 0.9
